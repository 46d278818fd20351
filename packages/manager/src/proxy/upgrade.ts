/**
 * WebSocket (and any other Upgrade) tunnels: after admission the proxy replays the handshake to the workspace and
 * then pipes raw bytes both ways. Refusals are written as plain HTTP/1.1 answers on the raw socket.
 *
 * @module
 */
import { STATUS_CODES } from 'node:http';
import type { OutgoingHttpHeaders } from 'node:http';
import { connect } from 'node:net';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { connect as tlsConnect } from 'node:tls';
import { setsOwnerCookie } from './admission.js';
import { answerAndClose, defaultProxyLimits, rawAnswer } from './connection-limits.js';
import type { ProxyLimits } from './connection-limits.js';
import type { Refusal } from './routing.js';

/**
 * Answers a refused upgrade and closes the connection, within `graceMs` even when the client never closes its side:
 * after an upgrade no Node timeout covers the socket, so a refusal that only ended it would hold its descriptor for
 * as long as the client likes. Never throws.
 */
export function rejectUpgrade(
  socket: Socket,
  refusal: Refusal,
  graceMs: number = defaultProxyLimits.refusalGraceMs,
): void {
  const headers = Object.entries({ 'content-type': 'text/plain; charset=utf-8', ...refusal.headers })
    .map(([k, v]) => `${k}: ${String(v)}\r\n`)
    .join('');
  const status = `${refusal.status} ${STATUS_CODES[refusal.status] ?? 'Error'}`;
  answerAndClose(socket, rawAnswer(status, headers, refusal.message), graceMs);
}

export interface TunnelOptions {
  readonly socket: Socket;
  readonly head: Buffer;
  readonly method: string;
  /** Path and query for the workspace (token already stripped). */
  readonly path: string;
  readonly headers: OutgoingHttpHeaders;
  readonly target: { readonly host: string; readonly port: number };
  readonly https: boolean;
  readonly workspaceId: string;
  /** Owner cookies the workspace's handshake answer may not set (see `setsOwnerCookie`). */
  readonly cookiePrefix: string;
  /** The handshake, idle and refusal bounds (see `connection-limits.ts`). */
  readonly limits: Pick<ProxyLimits, 'handshakeTimeoutMs' | 'idleTimeoutMs' | 'refusalGraceMs'>;
}

/** The workspace's handshake answer may not be larger than this. */
const maxAnswerHead = 64 * 1024;

/**
 * Passes the workspace's handshake answer on without Set-Cookie lines for owner cookies, then pipes raw bytes.
 * Calls `fail` when the answer head is oversized, `answered` once the head is passed on.
 */
function relayAnswer(
  upstream: Duplex,
  socket: Socket,
  cookiePrefix: string,
  fail: () => void,
  answered: () => void,
): void {
  let buffered = Buffer.alloc(0);
  const onData = (chunk: Buffer): void => {
    buffered = Buffer.concat([buffered, chunk]);
    const end = buffered.indexOf('\r\n\r\n');
    if (end < 0) {
      if (buffered.length > maxAnswerHead) fail();
      return;
    }
    upstream.off('data', onData);
    const lines = buffered.subarray(0, end).toString('latin1').split('\r\n');
    const kept = lines.filter((line) => {
      const match = /^set-cookie\s*:(.*)$/i.exec(line);
      return !match || !setsOwnerCookie(match[1]!, cookiePrefix);
    });
    socket.write(Buffer.from(`${kept.join('\r\n')}\r\n\r\n`, 'latin1'));
    const rest = buffered.subarray(end + 4);
    if (rest.length > 0) socket.write(rest);
    answered();
    upstream.pipe(socket);
  };
  upstream.on('data', onData);
}

/** Opens the tunnel; returns the function that closes both ends. */
export function openTunnel(options: TunnelOptions): () => void {
  const { socket, target } = options;
  const upstream = options.https
    ? tlsConnect({ host: target.host, port: target.port, rejectUnauthorized: false })
    : connect({ host: target.host, port: target.port });
  const close = (): void => {
    upstream.destroy();
    socket.destroy();
  };
  let connected = false;
  let answered = false;
  let timedOut = false;
  // Absolute, not reset by traffic: a client trickling bytes must not keep an unanswered handshake open, and the
  // timer also bounds a connect to a workspace host that never answers the SYN.
  const handshakeTimer = setTimeout(() => {
    if (answered) return;
    timedOut = true;
    rejectUpgrade(
      socket,
      { status: 504, message: `workspace ${options.workspaceId} did not answer the upgrade in time\n` },
      options.limits.refusalGraceMs,
    );
    upstream.destroy();
  }, options.limits.handshakeTimeoutMs);
  handshakeTimer.unref();
  const onAnswered = (): void => {
    answered = true;
    clearTimeout(handshakeTimer);
    // Socket timeouts are reset by reads and writes, so this counts traffic in both directions of the tunnel.
    socket.setTimeout(options.limits.idleTimeoutMs, close);
  };
  const onConnect = (): void => {
    connected = true;
    let head = `${options.method} ${options.path} HTTP/1.1\r\n`;
    for (const [name, value] of Object.entries(options.headers)) {
      if (value === undefined) continue;
      for (const v of Array.isArray(value) ? value : [value]) head += `${name}: ${String(v)}\r\n`;
    }
    upstream.write(`${head}\r\n`);
    if (options.head.length > 0) upstream.write(options.head);
    relayAnswer(upstream, socket, options.cookiePrefix, close, onAnswered);
    socket.pipe(upstream);
  };
  upstream.once(options.https ? 'secureConnect' : 'connect', onConnect);
  upstream.on('error', (error: NodeJS.ErrnoException) => {
    if (!connected && !socket.destroyed) {
      rejectUpgrade(
        socket,
        { status: 502, message: `workspace ${options.workspaceId} does not answer (${error.code ?? 'error'})\n` },
        options.limits.refusalGraceMs,
      );
    } else socket.destroy();
  });
  socket.on('error', () => upstream.destroy());
  socket.on('close', () => {
    clearTimeout(handshakeTimer);
    upstream.destroy();
  });
  // Before it connected, the error handler answers 502 and ends the client connection itself; after a handshake
  // timeout, the 504 does (an immediate destroy here could cut that answer off).
  upstream.on('close', () => {
    if (connected && !timedOut) socket.destroy();
  });
  return close;
}
