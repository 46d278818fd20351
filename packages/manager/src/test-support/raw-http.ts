/**
 * TEST ONLY: raw HTTP over plain TCP, for attacking the port proxy with bytes no HTTP client library would send,
 * and a parser for the answers (the first response of a connection; pipelined answers follow in `rest`).
 */
import { connect } from 'node:net';
import type { Socket } from 'node:net';

export interface RawResponse {
  readonly status: number;
  /** Lower-cased names; repeated headers joined with `\n`. */
  readonly headers: Record<string, string>;
  /** Everything after the head (body and any pipelined answers), as latin1 text. */
  readonly rest: string;
  /** The whole answer, as latin1 text. */
  readonly raw: string;
}

export function parseRawResponse(raw: string): RawResponse | undefined {
  const end = raw.indexOf('\r\n\r\n');
  if (end < 0) return undefined;
  const [statusLine, ...lines] = raw.slice(0, end).split('\r\n');
  const match = /^HTTP\/1\.[01] ([0-9]{3})/.exec(statusLine ?? '');
  if (!match) return undefined;
  const headers: Record<string, string> = {};
  for (const line of lines) {
    const index = line.indexOf(':');
    if (index <= 0) continue;
    const name = line.slice(0, index).trim().toLowerCase();
    const value = line.slice(index + 1).trim();
    headers[name] = headers[name] === undefined ? value : `${headers[name]}\n${value}`;
  }
  return { status: Number(match[1]), headers, rest: raw.slice(end + 4), raw };
}

/** Splits `host:port` (the harness's addresses). */
export function hostPort(address: string): { host: string; port: number } {
  const index = address.lastIndexOf(':');
  return { host: address.slice(0, index).replace(/^\[|\]$/g, ''), port: Number(address.slice(index + 1)) };
}

/**
 * Whether `raw` holds a complete first response: its head plus the body that its framing announces (none for 1xx,
 * 204, 304 and answers to HEAD; Content-Length; chunked up to the last chunk). Without framing, only a close ends it.
 */
export function firstResponseComplete(raw: string, head = false): boolean {
  const r = parseRawResponse(raw);
  if (!r) return false;
  if (head || r.status < 200 || r.status === 204 || r.status === 304) return true;
  if (/chunked/i.test(r.headers['transfer-encoding'] ?? '')) return /(^|\r\n)0\r\n(.*\r\n)*\r\n/.test(r.rest);
  const length = r.headers['content-length'];
  if (length !== undefined) return Buffer.byteLength(r.rest, 'latin1') >= Number(length);
  return false;
}

/**
 * Sends `bytes` and collects the answer until the first response is complete or the proxy closes the connection
 * (or `capMs` passed: then `timedOut` is set; not an assertion, a bound on a hostile exchange). The client never
 * half-closes: a Node HTTP server drops requests whose client did.
 */
export function sendRaw(
  address: string,
  bytes: Buffer | string,
  options: { readonly capMs?: number; readonly head?: boolean } = {},
): Promise<{ readonly raw: string; readonly timedOut: boolean; readonly closed: boolean; readonly error?: string }> {
  return new Promise((resolve) => {
    const { host, port } = hostPort(address);
    const chunks: Buffer[] = [];
    let timedOut = false;
    let closed = true;
    let error: string | undefined;
    const socket = connect({ host, port }, () => socket.write(bytes));
    const timer = setTimeout(() => {
      timedOut = true;
      socket.destroy();
    }, options.capMs ?? 5_000);
    socket.on('data', (c: Buffer) => {
      chunks.push(c);
      if (firstResponseComplete(Buffer.concat(chunks).toString('latin1'), options.head)) {
        closed = false;
        socket.destroy();
      }
    });
    socket.on('error', (e: NodeJS.ErrnoException) => (error = e.code ?? e.message));
    socket.on('close', () => {
      clearTimeout(timer);
      resolve({ raw: Buffer.concat(chunks).toString('latin1'), timedOut, closed: closed && !timedOut, error });
    });
  });
}

/** An open connection whose answers are read as they come. */
export interface OpenConnection {
  readonly socket: Socket;
  /** Everything received so far. */
  received(): string;
  /** Resolves once the received text satisfies `predicate`. */
  until(predicate: (text: string) => boolean): Promise<string>;
  /** Resolves when the proxy closes the connection. */
  readonly closed: Promise<void>;
  write(text: string): void;
}

export function openConnection(address: string): Promise<OpenConnection> {
  return new Promise((resolve, reject) => {
    const { host, port } = hostPort(address);
    let text = '';
    const waiters: Array<{ predicate: (t: string) => boolean; resolve: (t: string) => void }> = [];
    const socket = connect({ host, port });
    const closed = new Promise<void>((r) => socket.once('close', () => r()));
    socket.on('data', (c: Buffer) => {
      text += c.toString('latin1');
      for (const w of [...waiters]) {
        if (w.predicate(text)) {
          waiters.splice(waiters.indexOf(w), 1);
          w.resolve(text);
        }
      }
    });
    socket.on('error', () => undefined);
    socket.once('connect', () =>
      resolve({
        socket,
        received: () => text,
        until: (predicate) =>
          predicate(text) ? Promise.resolve(text) : new Promise((r) => waiters.push({ predicate, resolve: r })),
        closed,
        write: (t) => socket.write(t),
      }),
    );
    socket.once('error', reject);
  });
}
