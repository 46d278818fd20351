/**
 * Bounds on what clients of the proxy can hold: every client is hostile (see `port-proxy.ts`), and the proxy shares
 * its process, and so its file descriptors, with gRPC, the daemon client and storage. A client that opens
 * connections and never closes them must run into a limit or a timeout long before the process runs out of
 * descriptors:
 *
 * - `maxConnections` for the whole server (kept for clients that use their connections: `connection-slots.ts`),
 *   and `maxConnectionsPerAddress` per client address (an IPv6 client is counted by its /64, which one client
 *   usually owns whole);
 * - `maxConnectionsPerWorkspace` busy connections (a request in progress, a tunnel) per workspace and
 *   `maxConnectionsPerOwner` per owner for anonymous traffic, and `maxAuthenticatedConnectionsPerWorkspace` /
 *   `maxAuthenticatedConnectionsPerOwner` for traffic with the owner token, counted apart: one workspace, or one
 *   owner's workspaces, cannot hold every slot of the server-wide cap, and anonymous clients cannot lock an owner
 *   out of her own workspaces (`workspace-slots.ts`);
 * - Node's `headersTimeout` / `requestTimeout` against slowloris (they only work when a `clientError` handler
 *   closes the socket, see {@link clientErrorAnswer});
 * - `handshakeTimeoutMs` for upgrade requests the workspace has not answered yet, `idleTimeoutMs` for established
 *   tunnels and HTTP connections without traffic;
 * - every refusal closes its socket after `refusalGraceMs`, whether or not the client closes its side; and a tunnel
 *   whose client closed its side is closed at both ends after `refusalGraceMs`, whether or not the workspace closes
 *   its side (a workspace that ignores the end of its input must not keep the tunnel's slot for the idle timeout);
 * - a tunnel end the proxy has stopped reading (the other end does not take its bytes) is checked every
 *   `stalledProbeMs` for a reset: unread, it would go unnoticed until the idle timeout.
 *
 * @module
 */
import type { IncomingMessage, Server, ServerOptions, ServerResponse } from 'node:http';
import { isIPv4 } from 'node:net';
import type { Socket } from 'node:net';
import type { Logger } from '../logger.js';
import { lingerClientCloses, resetOrDestroy } from './closing.js';
import { ConnectionSlots } from './connection-slots.js';

export interface ProxyLimits {
  /**
   * Open client connections, all clients together; beyond it a new connection takes the slot of the one waiting
   * longest for a request (a keep-alive or slow one), or gets 503 when all are busy. 0: no limit.
   */
  readonly maxConnections: number;
  /** Open client connections per client address (IPv6: per /64); beyond it 503. 0: no limit. */
  readonly maxConnectionsPerAddress: number;
  /**
   * Anonymous client connections (admitted without the owner token: a public port, a workspace open to everyone)
   * busy for one workspace (carrying a request to it or a tunnel); beyond it 503 for anonymous requests to that
   * workspace only. Busy connections are never evicted for new ones, so without it one workspace (say, a public port
   * that answers a byte at a time) could hold all of `maxConnections`. Connections with the owner token are counted
   * apart (`maxAuthenticatedConnectionsPerWorkspace`): anonymous clients at this cap do not lock the owner out.
   * 0: no limit.
   */
  readonly maxConnectionsPerWorkspace: number;
  /**
   * Busy anonymous client connections of all of one owner's workspaces together; beyond it 503 for anonymous
   * requests to that owner's workspaces (her own requests with the token are counted apart). 0: no limit.
   */
  readonly maxConnectionsPerOwner: number;
  /**
   * Client connections with the workspace's owner token busy for one workspace (her IDE, her own requests);
   * beyond it 503 for her requests to that workspace. 0: no limit.
   */
  readonly maxAuthenticatedConnectionsPerWorkspace: number;
  /** Busy client connections with the owner token, all of one owner's workspaces together. 0: no limit. */
  readonly maxAuthenticatedConnectionsPerOwner: number;
  /**
   * Busy anonymous connections (without the owner token) of all workspaces together; beyond it 503 for anonymous
   * traffic. Below `maxConnections`, so that anonymous clients never hold every connection: the rest serves owners
   * with their tokens (idle and waiting connections give way, `connection-slots.ts`). 0: no limit.
   */
  readonly maxAnonymousConnections: number;
  /** Time a client has to send a complete request head (slowloris). */
  readonly headersTimeoutMs: number;
  /** Time a client has to send a complete request, head and body. At least `headersTimeoutMs`. */
  readonly requestTimeoutMs: number;
  /** Time the workspace has to answer an upgrade (WebSocket handshake), from the request on. */
  readonly handshakeTimeoutMs: number;
  /** An established tunnel, or an HTTP connection, without traffic in either direction for this long is closed. */
  readonly idleTimeoutMs: number;
  /**
   * A refused client gets this long to read the answer and close; then the proxy closes the connection. A tunnel
   * whose client closed its side (sent FIN) gets as long for the workspace's last bytes and close; then the proxy
   * closes both ends.
   */
  readonly refusalGraceMs: number;
  /**
   * How often an established tunnel checks, with a zero-length write, that an end it is not reading from (because
   * the other end does not take its bytes) is still there. The kernel has taken that end's reset, but Node learns of
   * it only by reading or writing: a client that filled a tunnel its workspace never reads and then left kept the
   * tunnel, and its slots, until the idle timeout (red team round 16c, K2: 512 tunnels for ten minutes).
   */
  readonly stalledProbeMs: number;
  /**
   * A client's connection the proxy ends (after its last answer, at its idle timeout, when a workspace ended a
   * tunnel) gets this long to take what is still on its way and close; then it is reset. Closed at once instead, the
   * rest of an answer a client never reads stays queued in an orphan for minutes (red team round 17, L3). At 60 s,
   * the most the kernel queues (4 MB) reaches a client at 0.6 Mbit/s.
   */
  readonly closeLingerMs: number;
}

/**
 * Defaults: generous for people (a browser holds a handful of connections per site, an IDE a few WebSockets, and
 * many people may share one NAT address), small against the descriptors of one process (each proxied connection
 * costs two: client and workspace).
 */
export const defaultProxyLimits: ProxyLimits = {
  maxConnections: 4096,
  maxConnectionsPerAddress: 256,
  // Anonymous traffic. An eighth of the server's cap: a busy workspace leaves the other workspaces most of it.
  maxConnectionsPerWorkspace: 512,
  // A quarter: one owner's public workspaces leave the others at least three quarters.
  maxConnectionsPerOwner: 1024,
  // Traffic with the owner token: people, not crowds. A browser holds about six requests per site and an IDE a few
  // WebSockets per window, so 128 per workspace is dozens of windows; 256 for all of an owner's workspaces keeps
  // one owner with both budgets full at 1,280: three owners together still cannot hold the server's 4,096 (3,840),
  // and anonymous traffic of any number of owners stops at `maxAnonymousConnections`.
  maxAuthenticatedConnectionsPerWorkspace: 128,
  maxAuthenticatedConnectionsPerOwner: 256,
  // Three quarters of the server's cap: a quarter stays for owners with their tokens (when not given, three quarters
  // of the `maxConnections` given: see resolveProxyLimits).
  maxAnonymousConnections: 3072,
  headersTimeoutMs: 20_000,
  requestTimeoutMs: 300_000,
  handshakeTimeoutMs: 30_000,
  idleTimeoutMs: 10 * 60_000,
  refusalGraceMs: 2_000,
  stalledProbeMs: 5_000,
  closeLingerMs: 60_000,
};

/** The limits with defaults filled in; throws on values Node would refuse or that disable a bound by accident. */
export function resolveProxyLimits(given: Partial<ProxyLimits> = {}): ProxyLimits {
  const limits = {
    ...defaultProxyLimits,
    ...(given.maxConnections !== undefined
      ? { maxAnonymousConnections: Math.floor((given.maxConnections * 3) / 4) }
      : {}),
    ...given,
  };
  for (const [name, value] of Object.entries(limits)) {
    if (!Number.isInteger(value) || value < 0) throw new Error(`proxy limit ${name} must be an integer >= 0`);
  }
  for (const name of [
    'headersTimeoutMs',
    'handshakeTimeoutMs',
    'idleTimeoutMs',
    'refusalGraceMs',
    'stalledProbeMs',
    'closeLingerMs',
  ] as const) {
    // 0 would mean "no timeout" to Node: exactly the hole these bounds close.
    if (limits[name] === 0) throw new Error(`proxy limit ${name} must be > 0`);
  }
  if (limits.requestTimeoutMs !== 0 && limits.requestTimeoutMs < limits.headersTimeoutMs) {
    throw new Error('proxy limit requestTimeoutMs must be at least headersTimeoutMs');
  }
  return limits;
}

/** How often Node checks request timeouts: often enough that a timeout fires within 1.5 times its length. */
export function timeoutCheckInterval(limits: ProxyLimits): number {
  return Math.max(50, Math.min(30_000, Math.floor(limits.headersTimeoutMs / 2)));
}

/**
 * The key a client address is counted under: IPv4 as is (also when mapped into IPv6), IPv6 by its /64 (a single
 * client usually holds a whole /64 and could otherwise spread over 2^64 addresses).
 */
export function addressKey(address: string): string {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (mapped) return mapped[1]!;
  if (isIPv4(address) || !address.includes(':')) return address;
  const [head = '', tail = ''] = address.toLowerCase().split('::');
  const headGroups = head === '' ? [] : head.split(':');
  const tailGroups = tail === '' ? [] : tail.split(':');
  const groups = address.includes('::')
    ? [...headGroups, ...Array<string>(Math.max(0, 8 - headGroups.length - tailGroups.length)).fill('0'), ...tailGroups]
    : headGroups;
  return `${groups
    .slice(0, 4)
    .map((g) => g.replace(/^0+(?=.)/, ''))
    .join(':')}::/64`;
}

/** Counts open connections per client address. */
export class AddressCounter {
  private readonly open = new Map<string, number>();
  /** Counted sockets, with their address's key. */
  private readonly counted = new Map<Socket, string>();
  /** Per address, its connections the proxy is closing (`closing.ts`): the first to go when it is at the cap. */
  private readonly closingByKey = new Map<string, Set<Socket>>();

  constructor(private readonly max: number) {}

  /**
   * Counts `socket` until it closes; false (and nothing counted) when its address is at the cap and none of its
   * connections is being closed. One that is gives way: it is reset, so that a client whose answers are still in
   * their linger (or the others behind its NAT) is not locked out for it (red team round 17b, M3).
   */
  admit(socket: Socket): boolean {
    // Undefined once the peer is gone already: nothing to serve, and nothing to count it under.
    if (socket.remoteAddress === undefined) return false;
    const key = addressKey(socket.remoteAddress);
    if (this.max > 0 && (this.open.get(key) ?? 0) >= this.max) {
      const lingering = this.closingByKey.get(key)?.values().next().value;
      if (lingering === undefined) return false;
      this.release(lingering);
      resetOrDestroy(lingering);
    }
    this.open.set(key, (this.open.get(key) ?? 0) + 1);
    this.counted.set(socket, key);
    socket.once('close', () => this.release(socket));
    return true;
  }

  /** The proxy is closing `socket`: it gives way to its address's next connection at the cap. */
  closing(socket: Socket): void {
    const key = this.counted.get(socket);
    if (key === undefined) return;
    let set = this.closingByKey.get(key);
    if (!set) this.closingByKey.set(key, (set = new Set()));
    set.add(socket);
  }

  private release(socket: Socket): void {
    const key = this.counted.get(socket);
    if (key === undefined) return;
    this.counted.delete(socket);
    const left = (this.open.get(key) ?? 1) - 1;
    if (left <= 0) this.open.delete(key);
    else this.open.set(key, left);
    const set = this.closingByKey.get(key);
    set?.delete(socket);
    if (set?.size === 0) this.closingByKey.delete(key);
  }

  /** Open connections of the address (for tests and metrics). */
  count(address: string): number {
    return this.open.get(addressKey(address)) ?? 0;
  }
}

/**
 * Writes `answer` (when the socket still takes it) and ends the connection, then destroys it after `graceMs` even
 * when the client never closes its side. The grace lets a well-behaved client read the answer before the close
 * (an immediate destroy with unread input makes the kernel send a reset, which can discard the answer).
 */
export function answerAndClose(socket: Socket, answer: string | undefined, graceMs: number): void {
  if (socket.destroyed) return;
  // Reset, not closed: an answer the client has not taken by then would stay queued in an orphan (closing.ts).
  const timer = setTimeout(() => resetOrDestroy(socket), graceMs);
  // The timer only guards this socket: it must not keep the process alive on its own.
  timer.unref();
  socket.once('close', () => clearTimeout(timer));
  try {
    if (answer !== undefined && socket.writable) socket.end(answer);
    else socket.destroy();
  } catch {
    // Deliberate: the socket broke while the answer was written; closing it is all that is left to do, and no
    // state depends on a refused connection.
    socket.destroy();
  }
}

/** A plain HTTP/1.1 answer that ends the connection. */
export function rawAnswer(status: string, headers = '', body = ''): string {
  return `HTTP/1.1 ${status}\r\n${headers}content-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`;
}

/**
 * The answer to a `clientError` (malformed request, or Node's own headers/request timeout), or undefined when none
 * may be written: the client reset the connection, or a response is already under way on it (an answer now would
 * corrupt that response). Either way the caller closes the socket, as Node's default handler does.
 */
export function clientErrorAnswer(error: NodeJS.ErrnoException, socket: Socket): string | undefined {
  if (!socket.writable || error.code === 'ECONNRESET') return undefined;
  // Node's own handler checks the same undocumented field: the response in flight on this connection, if any.
  const inFlight = (socket as Socket & { _httpMessage?: ServerResponse | null })._httpMessage;
  if (inFlight?.headersSent) return undefined;
  switch (error.code) {
    case 'HPE_HEADER_OVERFLOW':
      return rawAnswer('431 Request Header Fields Too Large');
    case 'HPE_CHUNK_EXTENSIONS_OVERFLOW':
      return rawAnswer('413 Payload Too Large');
    case 'ERR_HTTP_REQUEST_TIMEOUT':
      return rawAnswer('408 Request Timeout');
    default:
      return rawAnswer('400 Bad Request');
  }
}

/** Node's HTTP server options for the limits (pass to `createServer`). */
export function serverTimeouts(limits: ProxyLimits): ServerOptions {
  return {
    headersTimeout: limits.headersTimeoutMs,
    requestTimeout: limits.requestTimeoutMs,
    connectionsCheckingInterval: timeoutCheckInterval(limits),
  };
}

/**
 * Answers 503 and closes at once. No grace here (unlike other refusals): a connection over a cap gets no
 * descriptor held for it. The answer still arrives in nearly every case: it is small and goes to the kernel at
 * once, as in Node's own handler.
 */
function refuseAtOnce(socket: Socket): void {
  // A connection the proxy was closing already (its answer's rest may be queued) is reset: see closing.ts.
  if (socket.writableEnded) return resetOrDestroy(socket);
  if (socket.writable) socket.write(rawAnswer('503 Service Unavailable', 'retry-after: 10\r\n'));
  socket.destroy();
}

/** Refusals are logged at most this often (an attack would otherwise flood the log). */
const refusalLogInterval = 60_000;

/**
 * Applies the connection bounds to `server`: the server-wide cap (a connection being closed, else the
 * longest-waiting one, gives up its slot to a new one, see `connection-slots.ts`; 503 when every connection is busy),
 * the per-address cap (503 beyond it), the idle timeout of HTTP connections, closes that leave no orphans
 * (`closing.ts`), and a `clientError` handler that answers and then closes. Call before `listen`. `onClosing` hears of
 * each connection the server is closing (its client's grace to take the rest).
 */
export function boundConnections(
  server: Server,
  limits: ProxyLimits,
  logger: Logger,
  onClosing?: (socket: Socket) => void,
): AddressCounter {
  const perAddress = new AddressCounter(limits.maxConnectionsPerAddress);
  const slots = new ConnectionSlots(limits.maxConnections);
  // HTTP sockets without traffic for this long are destroyed (Node's behaviour without a 'timeout' listener);
  // upgraded sockets get their own timers (see `upgrade.ts`).
  server.setTimeout(limits.idleTimeoutMs);
  const refused = { total: 0, perAddress: 0, evicted: 0, lastLog: 0 };
  const noteRefusal = (kind: 'total' | 'perAddress' | 'evicted'): void => {
    refused[kind] += 1;
    const now = Date.now();
    if (now - refused.lastLog < refusalLogInterval) return;
    logger.warn(
      { overTotal: refused.total, overPerAddress: refused.perAddress, evictedWaiting: refused.evicted, limits },
      'proxy refused connections over its limits',
    );
    refused.total = 0;
    refused.perAddress = 0;
    refused.evicted = 0;
    refused.lastLog = now;
  };
  server.on('connection', (socket: Socket) => {
    if (!perAddress.admit(socket)) {
      noteRefusal('perAddress');
      refuseAtOnce(socket);
      return;
    }
    const admission = slots.admit(socket);
    if (admission.evicted) {
      noteRefusal('evicted');
      refuseAtOnce(admission.evicted);
    }
    if (!admission.admitted) {
      noteRefusal('total');
      refuseAtOnce(socket);
    }
  });
  lingerClientCloses(server, limits.closeLingerMs, (socket) => {
    slots.closing(socket);
    perAddress.closing(socket);
    onClosing?.(socket);
  });
  server.on('request', (req: IncomingMessage, res: ServerResponse) => {
    slots.busy(req.socket);
    res.once('close', () => slots.waitingAgain(req.socket));
  });
  // A tunnel, or an upgrade waiting for the workspace's answer, never waits for a request again: it keeps its slot.
  server.on('upgrade', (req: IncomingMessage) => slots.busy(req.socket));
  server.on('clientError', (error: NodeJS.ErrnoException, socket: Socket) => {
    // Node reports its own headers and request timeouts here too: closing the socket is what makes them work.
    answerAndClose(socket, clientErrorAnswer(error, socket), limits.refusalGraceMs);
  });
  return perAddress;
}
