/**
 * WebSocket (and any other Upgrade) tunnels: after admission the proxy replays the handshake to the workspace,
 * parses the workspace's answer (`answer-head.ts`), and only for a single `101` passes a filtered, re-serialised head
 * on and then pipes raw bytes both ways. Any other answer is relayed as a closed HTTP answer or refused with 502; it
 * never becomes a raw pipe. Refusals are written as plain HTTP/1.1 answers on the raw socket.
 *
 * @module
 */
import { STATUS_CODES } from 'node:http';
import type { OutgoingHttpHeaders } from 'node:http';
import { connect } from 'node:net';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { TLSSocket, connect as tlsConnect } from 'node:tls';
import { parseAnswerHead } from './answer-head.js';
import { scopeAnswerHeader } from './answer-headers.js';
import type { AnswerScope } from './answer-headers.js';
import { closeClient, resetOrDestroy } from './closing.js';
import { answerAndClose, defaultProxyLimits, rawAnswer } from './connection-limits.js';
import type { ProxyLimits } from './connection-limits.js';
import type { Refusal } from './routing.js';
import type { TransferShedder } from './shedding.js';

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
  /** What the workspace's handshake answer may set (see `answer-headers.ts`). */
  readonly scope: AnswerScope;
  /** Tracks the established tunnel's pace, to reset it when slow under TCP pressure (`shedding.ts`). */
  readonly shedder?: Pick<TransferShedder, 'track'>;
  /** The owner whose token the client presented (the shedder weighs and cools its transfers apart). */
  readonly owner?: string;
  /** The handshake, idle and refusal bounds (see `connection-limits.ts`). */
  readonly limits: Pick<
    ProxyLimits,
    'handshakeTimeoutMs' | 'idleTimeoutMs' | 'refusalGraceMs' | 'stalledProbeMs' | 'closeLingerMs'
  >;
}

/** The workspace's handshake answer head may not be larger than this. */
const maxAnswerHead = 64 * 1024;
/** A non-101 answer is relayed only with a Content-Length body of at most this size (502 otherwise). */
const maxRelayedBody = 64 * 1024;

/** Headers of the workspace's answer that are the connection's, not the answer's (never relayed as they came). */
const connectionHeaders = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'transfer-encoding',
  'te',
  'trailer',
  'upgrade',
  'content-length',
  'proxy-authenticate',
]);

/** What the workspace's answer to an upgrade turns into (see {@link judgeAnswer}). */
export type AnswerVerdict =
  /** Not complete yet; `needed`: the bytes the whole answer takes, once its head says (a Content-Length body). */
  | { readonly kind: 'wait'; readonly needed?: number }
  /** A 101: pass `head` on to the client, then `rest`, then pipe both ways. */
  | { readonly kind: 'tunnel'; readonly head: Buffer; readonly rest: Buffer }
  /** Anything else the proxy can frame: write `answer` and close both ends. */
  | { readonly kind: 'relay'; readonly answer: Buffer }
  /** The proxy answers 502 with `reason` and closes both ends. */
  | { readonly kind: 'refuse'; readonly reason: string };

function serialise(status: number, reason: string, headers: ReadonlyArray<readonly [string, string]>): string {
  return `HTTP/1.1 ${status} ${reason}\r\n${headers.map(([n, v]) => `${n}: ${v}\r\n`).join('')}\r\n`;
}

/**
 * Judges what the workspace sent so far in answer to an upgrade. Exactly one head is accepted: a `101`, relayed
 * (re-serialised) without Set-Cookie lines for owner cookies; or a final (2xx-5xx) answer whose body is framed by
 * Content-Length (or has none), relayed filtered with `connection: close`. Informational answers (100, 103, …),
 * other framings and anything malformed are refused: a second head behind the first would reach the client
 * unfiltered, and a raw pipe after a non-101 answer would let either side talk past the proxy's rewriting.
 */
export function judgeAnswer(buffered: Buffer, scope: AnswerScope): AnswerVerdict {
  const parsed = parseAnswerHead(buffered, maxAnswerHead);
  if (parsed.kind === 'incomplete') return { kind: 'wait' };
  if (parsed.kind === 'invalid') return { kind: 'refuse', reason: parsed.reason };
  const { status } = parsed;
  const kept = parsed.headers.flatMap(([name, value]): Array<[string, string]> => {
    const scoped = scopeAnswerHeader(name, value, scope);
    return scoped === undefined ? [] : [[name, scoped]];
  });
  if (status === 101) {
    return {
      kind: 'tunnel',
      head: Buffer.from(serialise(101, parsed.reason || 'Switching Protocols', kept), 'latin1'),
      rest: buffered.subarray(parsed.length),
    };
  }
  if (status < 200) return { kind: 'refuse', reason: `the workspace answered the upgrade with ${status}, not 101` };
  const lengths = parsed.headers.filter(([n]) => n.toLowerCase() === 'content-length').map(([, v]) => v);
  const chunked = parsed.headers.some(([n]) => n.toLowerCase() === 'transfer-encoding');
  const bodiless = status === 204 || status === 304;
  let length = 0;
  if (!bodiless) {
    if (chunked || lengths.length !== 1 || !/^[0-9]{1,9}$/.test(lengths[0]!) || Number(lengths[0]) > maxRelayedBody) {
      return { kind: 'refuse', reason: `the workspace answered the upgrade with ${status}, without a body to relay` };
    }
    length = Number(lengths[0]);
  }
  if (buffered.length < parsed.length + length) return { kind: 'wait', needed: parsed.length + length };
  const headers = kept.filter(([n]) => !connectionHeaders.has(n.toLowerCase()));
  if (!bodiless) headers.push(['content-length', String(length)]);
  headers.push(['connection', 'close']);
  const head = Buffer.from(serialise(status, parsed.reason, headers), 'latin1');
  return { kind: 'relay', answer: Buffer.concat([head, buffered.subarray(parsed.length, parsed.length + length)]) };
}

/**
 * Reads the workspace's answer to the handshake and acts on {@link judgeAnswer}: `tunnel` passes the filtered head
 * on and pipes raw bytes; `relay` and `refuse` end the exchange (through `finish`).
 */
export function relayAnswer(
  upstream: Duplex,
  socket: Socket,
  scope: AnswerScope,
  finish: (answer: Buffer | string) => void,
  answered: () => void,
  /** Replaced in tests only, to count the judgements. */
  judge: typeof judgeAnswer = judgeAnswer,
): void {
  // The answer is judged only when it can have changed the verdict: once its head has ended, then once its body is
  // all there. Judging every chunk (a copy of all bytes so far, and a parse of the whole head) let a workspace that
  // sent a 64 KB head and then a byte every 20 ms on 400 handshakes keep the manager's core busy, and every owner's
  // proxied requests waited 16-20 s (red team round 16, H2).
  // The bytes are copied into one buffer that grows by doubling (bounded below): a chunk kept as it came is a view of
  // the socket's 64 KiB read buffer, and 400 handshakes trickling single bytes held hundreds of MB that way (16b).
  let store = Buffer.allocUnsafe(4096);
  let received = 0;
  let headEnded = false;
  let needed = 0;
  const onData = (chunk: Buffer): void => {
    if (received + chunk.length > store.length) {
      const grown = Buffer.allocUnsafe(Math.max(store.length * 2, received + chunk.length));
      store.copy(grown, 0, 0, received);
      store = grown;
    }
    chunk.copy(store, received);
    const before = received;
    received += chunk.length;
    if (received > maxAnswerHead + maxRelayedBody) {
      // A Content-Length body is bounded by judgeAnswer; this bounds everything else.
      finish('the workspace answered with too much');
      return;
    }
    if (!headEnded) {
      // An empty line (LF LF or LF CR LF: the head parser takes LF line ends too) ends the head; it may have begun
      // in the bytes before this chunk.
      const fresh = store.subarray(Math.max(0, before - 2), received);
      headEnded = fresh.includes('\n\n') || fresh.includes('\n\r\n');
      if (!headEnded && received <= maxAnswerHead) return;
    }
    if (received < needed) return;
    const buffered = store.subarray(0, received);
    const verdict = judge(buffered, scope);
    if (verdict.kind === 'wait') {
      needed = verdict.needed ?? received + 1;
      return;
    }
    upstream.off('data', onData);
    if (verdict.kind === 'refuse') return finish(verdict.reason);
    if (verdict.kind === 'relay') return finish(verdict.answer);
    socket.write(verdict.head);
    if (verdict.rest.length > 0) socket.write(verdict.rest);
    answered();
    upstream.pipe(socket);
  };
  upstream.on('data', onData);
}

const nothing = Buffer.alloc(0);

/**
 * Watches an established tunnel until the returned function is called: calls `onIdle` once no byte has gone either way
 * for `idleMs`, and every `probeMs` writes zero bytes to each plain-TCP end that is not being read (the pipe paused it
 * because the other end is full) and has nothing queued. That write is a syscall that fails on a connection the peer
 * has reset, which reading would have shown (red team round 16c, K2: such tunnels held their slots until the idle
 * timeout). An end with bytes queued is watched by the event loop for writability, which shows a reset anyway; TLS
 * ends are left out (their writes are records, not syscalls). The idle time is kept here, from the bytes read at
 * either end, not with `socket.setTimeout`: Node counts a zero-length write as traffic, so the probes kept a stalled
 * tunnel open for good (round 17, L2).
 */
export function watchTunnel(
  ends: readonly Socket[],
  limits: { readonly idleMs: number; readonly probeMs: number },
  onIdle: () => void,
): () => void {
  let lastTraffic = performance.now();
  let lastProbe = lastTraffic;
  const touch = (): void => {
    lastTraffic = performance.now();
  };
  for (const end of ends) end.on('data', touch);
  const stop = (): void => {
    clearInterval(timer);
    for (const end of ends) end.off('data', touch);
  };
  // Often enough that an idle tunnel closes within a quarter of `idleMs` past it.
  const tick = Math.max(1, Math.min(limits.probeMs, Math.ceil(limits.idleMs / 4)));
  const timer = setInterval(() => {
    const now = performance.now();
    if (now - lastTraffic >= limits.idleMs) {
      stop();
      onIdle();
      return;
    }
    if (now - lastProbe < limits.probeMs) return;
    lastProbe = now;
    for (const end of ends) {
      if (end.destroyed || !end.isPaused() || end.writableLength > 0 || end instanceof TLSSocket) continue;
      end.write(nothing);
    }
  }, tick);
  timer.unref();
  return stop;
}

/** Opens the tunnel; returns the function that closes both ends. */
export function openTunnel(options: TunnelOptions): () => void {
  const { socket, target } = options;
  const upstream = options.https
    ? tlsConnect({ host: target.host, port: target.port, rejectUnauthorized: false })
    : connect({ host: target.host, port: target.port });
  // Every way the proxy ends a tunnel resets the workspace's end (see closing.ts): a revoked tunnel whose workspace
  // had stopped reading left what the client had sent in an orphan socket (red team round 16c, K1). Revoked or
  // idle, the client's end is reset too (round 17, L3: 50 revoked tunnels whose clients did not read left 50
  // orphans with what the workspace had sent).
  const close = (): void => {
    resetOrDestroy(upstream);
    resetOrDestroy(socket);
  };
  let connected = false;
  /** Set once a 101 was passed on: from then on the tunnel is a raw pipe. */
  let answered = false;
  /** Set once the proxy wrote the client's final answer itself (refusal, timeout, relayed non-101). */
  let finished = false;
  const finish = (answer: Buffer | string, status = 502): void => {
    if (finished || answered) return;
    finished = true;
    clearTimeout(handshakeTimer);
    resetOrDestroy(upstream);
    if (typeof answer === 'string') {
      rejectUpgrade(
        socket,
        { status, message: `workspace ${options.workspaceId}: ${answer}\n` },
        options.limits.refusalGraceMs,
      );
      return;
    }
    if (!socket.destroyed && socket.writable) socket.write(answer);
    answerAndClose(socket, '', options.limits.refusalGraceMs);
  };
  // Absolute, not reset by traffic: a client trickling bytes must not keep an unanswered handshake open, and the
  // timer also bounds a connect to a workspace host that never answers the SYN.
  const handshakeTimer = setTimeout(
    () => finish('did not answer the upgrade in time', 504),
    options.limits.handshakeTimeoutMs,
  );
  handshakeTimer.unref();
  let stopWatching = (): void => undefined;
  const onAnswered = (): void => {
    answered = true;
    clearTimeout(handshakeTimer);
    const stopIdle = watchTunnel(
      [socket, upstream],
      { idleMs: options.limits.idleTimeoutMs, probeMs: options.limits.stalledProbeMs },
      close,
    );
    const untrack = options.shedder?.track([socket, upstream], options.owner, options.workspaceId);
    stopWatching = () => {
      stopIdle();
      untrack?.();
    };
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
    relayAnswer(upstream, socket, options.scope, finish, onAnswered);
    socket.pipe(upstream);
  };
  upstream.once(options.https ? 'secureConnect' : 'connect', onConnect);
  upstream.on('error', (error: NodeJS.ErrnoException) => {
    if (answered) closeClient(socket, options.limits.closeLingerMs);
    else finish(connected ? 'the upgrade failed' : `does not answer (${error.code ?? 'error'})`);
  });
  socket.on('error', () => resetOrDestroy(upstream));
  // The client closed its side (FIN; the proxy's server keeps client sockets half-open): the pipe passes the end
  // on, and the workspace gets the grace to send what is left and close. Then both ends close whatever the
  // workspace does: a workspace that ignores the end of its input would otherwise hold the tunnel, and its slot in
  // `workspace-slots.ts`, until the idle timeout, long after the client left (red team round 7: ten minutes). The
  // workspace's end is reset, not just ended: it has ignored one end already, and its socket would stay open in
  // the workspace for as long as the app runs.
  let leaving: NodeJS.Timeout | undefined;
  socket.once('end', () => {
    leaving = setTimeout(() => {
      resetOrDestroy(upstream);
      resetOrDestroy(socket);
    }, options.limits.refusalGraceMs);
    leaving.unref();
  });
  socket.on('close', () => {
    clearTimeout(handshakeTimer);
    clearTimeout(leaving);
    stopWatching();
    resetOrDestroy(upstream);
  });
  // Before a 101 the client gets an answer from the proxy (which then closes its connection itself: an immediate
  // destroy here could cut that answer off); after it, the tunnel closes with its workspace end.
  upstream.on('close', () => {
    // The workspace ended the tunnel: the client still gets what it sent before (closeClient).
    if (answered) closeClient(socket, options.limits.closeLingerMs);
    else finish('closed the connection without answering the upgrade');
  });
  return close;
}
