/**
 * Total parsers for what an HTTP client of the port proxy sends: request targets, percent-encoding, Host headers,
 * cookies and query strings. None of them throws: malformed input yields `undefined` (the caller answers 400) or
 * is kept as it came, so that no byte sequence a stranger sends can take the manager down (invariant 12).
 *
 * @module
 */

/** A request target in origin form (`/path?query`), split without any normalisation (no `.`/`..` resolution). */
export interface Target {
  /** Starts with `/`; raw (still percent-encoded). */
  readonly path: string;
  /** Without the `?`; raw. Undefined when there was no `?`. */
  readonly query?: string;
}

/**
 * Splits an origin-form request target. Absolute form (`http://host/…`), authority form and `*` are refused: the
 * proxy is not a forward proxy, and only origin form cannot name another host.
 */
export function parseTarget(url: string | undefined): Target | undefined {
  if (url === undefined || !url.startsWith('/')) return undefined;
  const hash = url.indexOf('#');
  const noFragment = hash < 0 ? url : url.slice(0, hash);
  const index = noFragment.indexOf('?');
  if (index < 0) return { path: noFragment };
  return { path: noFragment.slice(0, index), query: noFragment.slice(index + 1) };
}

const hexPair = /%([0-9A-Fa-f]{2})/g;

/**
 * Percent-decodes what is validly encoded and keeps everything else as it is (a lone `%` stays `%`); invalid
 * UTF-8 becomes U+FFFD. Never throws, unlike `decodeURIComponent`.
 */
export function lenientDecode(value: string, plusIsSpace = false): string {
  const input = plusIsSpace ? value.replace(/\+/g, ' ') : value;
  if (!input.includes('%')) return input;
  const bytes: number[] = [];
  let last = 0;
  for (const match of input.matchAll(hexPair)) {
    const at = match.index ?? 0;
    for (const b of Buffer.from(input.slice(last, at), 'utf8')) bytes.push(b);
    bytes.push(parseInt(match[1]!, 16));
    last = at + 3;
  }
  for (const b of Buffer.from(input.slice(last), 'utf8')) bytes.push(b);
  return Buffer.from(bytes).toString('utf8');
}

/**
 * Decodes until nothing changes (at most a few rounds), so that `%2577` and `%77` both end as `w`: a name spelled
 * with nested escapes must not slip past a comparison that a later decoder (the workspace's) would make.
 */
export function deepDecode(value: string, plusIsSpace = false): string {
  let current = value;
  for (let round = 0; round < 4; round++) {
    const next = lenientDecode(current, plusIsSpace);
    if (next === current) return next;
    current = next;
  }
  return current;
}

/** `decodeURIComponent` that answers undefined instead of throwing. */
export function safeDecode(value: string): string | undefined {
  try {
    return decodeURIComponent(value);
  } catch {
    // Malformed escapes are the caller's to refuse: undefined is the failure, not a default.
    return undefined;
  }
}

/** Host names, IPv4 and bracketed IPv6, with an optional port. */
const hostPattern = /^(\[[0-9A-Fa-f:.]{2,45}\]|[A-Za-z0-9._-]{1,253})(?::([0-9]{1,5}))?$/;

/**
 * The host name of a Host header, lower-cased and without the port; '' when absent (HTTP/1.0); undefined when
 * malformed (several values, spaces, user info, an out-of-range port, odd characters).
 */
export function parseHost(header: string | string[] | undefined): string | undefined {
  if (header === undefined) return '';
  if (Array.isArray(header)) return undefined;
  const value = header.trim();
  if (value === '') return '';
  const match = hostPattern.exec(value);
  if (!match) return undefined;
  if (match[2] !== undefined && Number(match[2]) > 65535) return undefined;
  return match[1]!.toLowerCase();
}

/**
 * How many times `name` (lower case) is among a request's raw headers. Node keeps the first of repeated Host headers
 * and drops the rest, where a proxy in front may take the last: both must see the same workspace (RFC 9112 §3.2:
 * more than one Host is a 400).
 */
export function headerCount(rawHeaders: readonly string[] | undefined, name: string): number {
  let count = 0;
  for (let i = 0; i < (rawHeaders?.length ?? 0); i += 2) if (rawHeaders![i]!.toLowerCase() === name) count++;
  return count;
}

export interface Cookie {
  readonly name: string;
  /** Raw value as sent. */
  readonly value: string;
  /** The `name=value` text as sent (trimmed). */
  readonly text: string;
}

/** Splits a Cookie header (several headers already joined with `; `). Pieces without a name are kept by text. */
export function parseCookies(header: string | string[] | undefined): Cookie[] {
  if (header === undefined) return [];
  const joined = Array.isArray(header) ? header.join('; ') : header;
  const out: Cookie[] = [];
  for (const part of joined.split(';')) {
    const text = part.trim();
    if (text === '') continue;
    const index = text.indexOf('=');
    const name = index < 0 ? '' : text.slice(0, index).trim();
    const value = index < 0 ? text : text.slice(index + 1).trim();
    out.push({ name, value: value.replace(/^"(.*)"$/, '$1'), text });
  }
  return out;
}

export interface QueryPart {
  /** The component as sent, e.g. `a=b` or `a%3Db`. */
  readonly raw: string;
  /** The separator before it (`&` or `;`), '' for the first. */
  readonly separator: string;
  /** Name and value after deep decoding (`+` as space); the name is split at the first decoded `=`. */
  readonly name: string;
  readonly value: string;
}

/** Splits a query at `&` and `;` (both are separators to some servers), keeping every component's raw text. */
export function parseQuery(query: string): QueryPart[] {
  const out: QueryPart[] = [];
  let separator = '';
  let start = 0;
  for (let i = 0; i <= query.length; i++) {
    const c = query[i];
    if (i === query.length || c === '&' || c === ';') {
      const raw = query.slice(start, i);
      if (raw !== '') {
        const decoded = deepDecode(raw, true);
        const eq = decoded.indexOf('=');
        out.push({
          raw,
          separator,
          name: (eq < 0 ? decoded : decoded.slice(0, eq)).trim(),
          value: eq < 0 ? '' : decoded.slice(eq + 1),
        });
      }
      separator = c ?? '';
      start = i + 1;
    }
  }
  return out;
}

/** Joins query parts back (their original separators; the first loses its own). */
export function joinQuery(parts: readonly QueryPart[]): string {
  return parts.map((p, i) => (i === 0 ? p.raw : `${p.separator || '&'}${p.raw}`)).join('');
}

/**
 * A relative redirect target that stays on this site: one leading `/`, never `//` or `/\` (which browsers read as
 * another host), and every byte outside printable ASCII percent-encoded (so the header is always valid).
 */
export function sameSiteLocation(pathAndQuery: string): string {
  const encoded = pathAndQuery.replace(/[^\x21-\x7e]/gu, (c) =>
    [...Buffer.from(c, 'utf8')].map((b) => `%${b.toString(16).toUpperCase().padStart(2, '0')}`).join(''),
  );
  const collapsed = encoded.replace(/^[/\\]+/, '');
  return `/${collapsed.replace(/^[/\\]+/, '')}`;
}
