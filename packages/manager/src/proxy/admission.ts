/**
 * Admission and the owner token. The proxy accepts the token in the header `x-workbay-owner-token`, in the query
 * parameter `workbayOwnerToken` and in its per-workspace cookie. Whatever it accepts, and every other spelling of
 * it (case, nested percent-escapes, `+`, `;` separators, repeated parameters, an escaped `=`), is removed before a
 * request reaches the workspace: a workspace never learns its owner's token (invariant 11).
 *
 * @module
 */
import { timingSafeEqual } from 'node:crypto';
import type { IncomingHttpHeaders, IncomingMessage, OutgoingHttpHeaders } from 'node:http';
import type { WorkspaceRecord } from '../domain/types.js';
import { deepDecode, joinQuery, parseCookies, parseQuery } from './parse.js';
import type { Route } from './routing.js';

export const ownerTokenHeader = 'x-workbay-owner-token';
export const ownerTokenQuery = 'workbayOwnerToken';

const tokenParamLower = ownerTokenQuery.toLowerCase();

/** Cookie name of a workspace's owner token: `<prefix>_<id>`. */
export function cookieNameFor(prefix: string, id: string): string {
  return `${prefix}_${id.replace(/[^A-Za-z0-9_-]/g, '_')}`;
}

export function tokensEqual(given: string, expected: string): boolean {
  const a = Buffer.from(given);
  const b = Buffer.from(expected);
  return a.length === b.length && timingSafeEqual(a, b);
}

/** A query parameter that is the token parameter, whatever its spelling. */
function isTokenParam(name: string): boolean {
  return name.toLowerCase() === tokenParamLower;
}

/** True when `text`, decoded as deep as any server would, carries `token`. */
function carries(text: string, token: string): boolean {
  if (token === '') return false;
  return text.includes(token) || deepDecode(text, true).includes(token);
}

export interface Presented {
  /** Tokens presented in the query (every spelling of the parameter). */
  readonly query: readonly string[];
  /** Tokens presented in the header or the cookie. */
  readonly other: readonly string[];
}

/** Every owner token a request presents for `record` (bounded: the first few of each kind). */
export function presentedTokens(req: IncomingMessage, route: Route, cookieName: string): Presented {
  const query: string[] = [];
  if (route.query !== undefined) {
    for (const part of parseQuery(route.query)) if (isTokenParam(part.name) && query.length < 8) query.push(part.value);
  }
  const other: string[] = [];
  const header = req.headers[ownerTokenHeader];
  for (const h of Array.isArray(header) ? header.slice(0, 4) : header !== undefined ? [header] : []) other.push(h);
  for (const cookie of parseCookies(req.headers.cookie)) {
    if (cookie.name === cookieName && other.length < 8) other.push(deepDecode(cookie.value));
  }
  return { query, other };
}

export function matchesOwner(tokens: readonly string[], record: WorkspaceRecord): boolean {
  let match = false;
  // Compare all of them, so that timing tells nothing about which one matched.
  for (const t of tokens) if (tokensEqual(t, record.ownerToken)) match = true;
  return match;
}

/** Whether a text carries any live owner token (owner-tokens.ts); by default none is known. */
export type OwnerTokenCheck = (text: string) => boolean;

const noOtherTokens: OwnerTokenCheck = () => false;

/**
 * The query for the workspace: no token parameter in any spelling, nothing that carries the token's value or
 * (with `anyToken`) any other owner's token.
 */
export function stripQuery(
  query: string | undefined,
  token: string,
  anyToken: OwnerTokenCheck = noOtherTokens,
): string | undefined {
  if (query === undefined) return undefined;
  const kept = parseQuery(query).filter((p) => !isTokenParam(p.name) && !carries(p.raw, token) && !anyToken(p.raw));
  return kept.length === 0 ? undefined : joinQuery(kept);
}

/** The path and query the workspace receives; undefined when the path itself carries the token. */
export function forwardTarget(
  route: Route,
  token: string,
  anyToken: OwnerTokenCheck = noOtherTokens,
): string | undefined {
  if (carries(route.path, token) || anyToken(route.path)) return undefined;
  const query = stripQuery(route.query, token, anyToken);
  return query === undefined ? route.path : `${route.path}?${query}`;
}

/** The Set-Cookie value for a workspace's token, scoped to the workspace's path and host. */
export function ownerCookie(name: string, token: string, prefix: string, secure: boolean): string {
  const path = prefix ? `${prefix}/` : '/';
  return `${name}=${encodeURIComponent(token)}; Path=${path}; HttpOnly; SameSite=Lax${secure ? '; Secure' : ''}`;
}

/** Trims whitespace and control characters (code points up to U+0020, U+007F) from both ends. */
function trimControls(text: string): string {
  const junk = (c: number): boolean => c <= 0x20 || c === 0x7f || /\s/.test(String.fromCharCode(c));
  let start = 0;
  let end = text.length;
  while (start < end && junk(text.charCodeAt(start))) start += 1;
  while (end > start && junk(text.charCodeAt(end - 1))) end -= 1;
  return text.slice(start, end);
}

/**
 * Whether a Set-Cookie value from a workspace names an owner cookie (`<prefix>_…`, any case): a workspace must not
 * plant or overwrite an owner cookie, its own or (on the shared origin of path routes) another workspace's. A
 * cookie with an empty name (`=<prefix>_x=v`) counts as one too: some browsers store it nameless and send it back
 * as `<prefix>_x=v`. Leading and trailing whitespace and control characters around the name do not matter.
 */
export function setsOwnerCookie(setCookie: string, cookiePrefix: string): boolean {
  const pair = setCookie.split(';', 1)[0] ?? '';
  const eq = pair.indexOf('=');
  const name = trimControls(eq < 0 ? pair : pair.slice(0, eq));
  if (eq >= 0 && name === '') return true;
  return name.toLowerCase().startsWith(`${cookiePrefix.toLowerCase()}_`);
}

/**
 * Whether an Authorization-style value carries the token inside base64 credentials (`Basic base64(user:token)`,
 * or any other scheme's base64 word): browsers, git and curl build those from `https://user:token@host/`.
 */
function carriesEncoded(value: string, token: string, anyToken: OwnerTokenCheck): boolean {
  for (const word of value.split(/[\s,]+/)) {
    if (word.length < 4 || !/^[A-Za-z0-9+/_-]+=*$/.test(word)) continue;
    const bytes = Buffer.from(word, 'base64');
    for (const text of [bytes.toString('latin1'), bytes.toString('utf8')]) {
      if (carries(text, token) || anyToken(text)) return true;
    }
  }
  return false;
}

/**
 * A Referer whose query names the token parameter, whatever the value: the address of a page that was given a token
 * (a workspace created since the proxy last listed the tokens, or one already gone) is no workspace's business.
 */
function carriesTokenParam(referer: string): boolean {
  const query = referer.indexOf('?');
  if (query < 0) return false;
  return parseQuery(referer.slice(query + 1).split('#', 1)[0] ?? '').some((p) => isTokenParam(p.name));
}

/** Client-supplied claims about the client's address that the proxy does not vouch for: dropped, never passed on. */
const clientAddressClaims = new Set(['forwarded', 'x-real-ip']);

const hopByHop = new Set([
  'connection',
  'keep-alive',
  'proxy-authenticate',
  'proxy-authorization',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  'proxy-connection',
]);

export function isHopByHop(name: string): boolean {
  return hopByHop.has(name);
}

export interface ForwardHeaderOptions {
  readonly token: string;
  /** Prefix of the owner cookies: every workspace's owner cookie is dropped, not only this one's. */
  readonly cookiePrefix: string;
  readonly prefix: string;
  /** Keep `connection` and `upgrade` (a WebSocket handshake). */
  readonly keepUpgrade: boolean;
  /** Any other live owner token (owner-tokens.ts): a workspace receives no owner's token, not only its own's. */
  readonly anyToken?: OwnerTokenCheck;
}

/**
 * Request headers for the workspace: no hop-by-hop headers, no token header, no owner cookie, no header whose
 * value carries the token (a Referer or Authorization the client built from it, also base64-encoded in
 * credentials), and no `Forwarded` or `X-Real-IP` from the client (the proxy sets `x-forwarded-*` itself).
 */
export function forwardHeaders(req: IncomingMessage, options: ForwardHeaderOptions): OutgoingHttpHeaders {
  const headers: OutgoingHttpHeaders = {};
  const connectionTokens = new Set(
    String(req.headers.connection ?? '')
      .split(',')
      .map((t) => t.trim().toLowerCase())
      .filter(Boolean),
  );
  const cookiePrefix = `${options.cookiePrefix.toLowerCase()}_`;
  const anyToken = options.anyToken ?? noOtherTokens;
  for (const [name, value] of Object.entries(req.headers as IncomingHttpHeaders)) {
    if (value === undefined || name === ownerTokenHeader || name.startsWith('x-forwarded-')) continue;
    if (clientAddressClaims.has(name)) continue;
    const upgradeHeader = name === 'connection' || name === 'upgrade';
    if ((hopByHop.has(name) || connectionTokens.has(name)) && !(options.keepUpgrade && upgradeHeader)) continue;
    if (name === 'cookie') {
      const kept = parseCookies(value)
        .filter(
          (c) => !c.name.toLowerCase().startsWith(cookiePrefix) && !carries(c.text, options.token) && !anyToken(c.text),
        )
        .map((c) => c.text);
      if (kept.length > 0) headers.cookie = kept.join('; ');
      continue;
    }
    const credentials = name === 'authorization' || name === 'proxy-authorization';
    const values = (Array.isArray(value) ? value : [value]).filter(
      (v) =>
        !carries(v, options.token) &&
        !anyToken(v) &&
        !(name === 'referer' && carriesTokenParam(v)) &&
        !(credentials && carriesEncoded(v, options.token, anyToken)),
    );
    if (values.length > 0) headers[name] = Array.isArray(value) ? values : values[0];
  }
  const remote = req.socket.remoteAddress ?? '';
  const prior = req.headers['x-forwarded-for'];
  const priorText = String(prior ?? '');
  headers['x-forwarded-for'] =
    prior && !carries(priorText, options.token) && !anyToken(priorText) ? `${priorText}, ${remote}` : remote;
  const host = typeof req.headers.host === 'string' ? req.headers.host : '';
  headers['x-forwarded-host'] = carries(host, options.token) || anyToken(host) ? '' : host;
  headers['x-forwarded-proto'] = 'http';
  if (options.prefix) headers['x-forwarded-prefix'] = options.prefix;
  return headers;
}
