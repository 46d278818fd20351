/**
 * The daemon's egress proxy for network git: every connection a git command makes to a remote (https and http
 * through `http.proxy`, ssh and git:// through the connect helper of egress-connect.ts) goes through it, and it
 * connects only to addresses the daemon's {@link AddressPolicy} allows (config `git.allowPrivateAddresses`,
 * `git.allowedNetworks`). Git cannot be trusted to check: the remote is the requester's, redirects are the
 * server's, and `.gitmodules` (submodule URLs, recursively) is the content's.
 *
 * - One proxy per git command, on 127.0.0.1:0, gone when the command exits: nothing listens in between,
 *   and what it refused belongs to that command (the error names it).
 * - A random token per proxy (Proxy-Authorization Basic): another local process cannot use it to reach what the
 *   policy allows, nor learn anything from it.
 * - The proxy resolves a name once and connects to a checked address, never to the name (no DNS rebinding between
 *   check and connect); git itself resolves nothing. Each connection (each redirect hop, each submodule) is checked.
 * - A refused target is answered 403 before any connection is attempted: open and closed ports of a refused
 *   address look the same. Refusals are recorded (bounded) for the command's error; no body is ever echoed.
 * - Plain http:// is forwarded request by request (absolute-form), bodies streamed both ways, never buffered.
 * - With an upstream proxy (upstream-proxy.ts), the checked address is reached through a tunnel it opens.
 */
import { randomBytes, timingSafeEqual } from 'node:crypto';
import { createServer, request as httpRequest } from 'node:http';
import type { IncomingMessage, OutgoingHttpHeaders, Server, ServerResponse } from 'node:http';
import { connect } from 'node:net';
import type { AddressInfo, Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { pipeline } from 'node:stream';
import { AddressPolicy, resolveChecked } from '../initializer/address-policy.js';
import { directMatcher, tunnelThrough } from '../initializer/upstream-proxy.js';
import type { EgressRules } from '../initializer/upstream-proxy.js';

/** A connection the proxy refused: `host:port` as git asked (bounded) and why. */
export interface EgressRefusal {
  readonly target: string;
  readonly kind: string;
}

/** Bounds of one proxy (one git command). */
export interface EgressLimits {
  /** Per upstream connection attempt. */
  readonly connectTimeoutMs: number;
  /** Tunnels and forwarded requests open at once (git opens a few; a submodule update one per fetch). */
  readonly maxConnections: number;
  /** Request line and headers of a proxy request. */
  readonly maxHeaderBytes: number;
}

export const egressLimits: EgressLimits = { connectTimeoutMs: 15_000, maxConnections: 32, maxHeaderBytes: 16 * 1024 };

/** Refusals and unresolvable names kept per command: enough to name them, bounded whatever git tries. */
const maxRecorded = 16;

// Hop-by-hop headers (RFC 9110 7.6.1) and the proxy's own: never forwarded.
const hopByHop = new Set([
  'connection',
  'keep-alive',
  'proxy-authorization',
  'proxy-authenticate',
  'proxy-connection',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
]);

const answer = (status: string, extra = ''): string =>
  `HTTP/1.1 ${status}\r\n${extra}Content-Length: 0\r\nConnection: close\r\n\r\n`;

/** `host:port` of a CONNECT (`[v6]:port` for IPv6); undefined for anything else. */
function parseAuthority(text: string): { host: string; port: number } | undefined {
  const match = /^(?:\[([0-9A-Fa-f:.]+)\]|([A-Za-z0-9._-]+)):(\d{1,5})$/.exec(text);
  const port = Number(match?.[3]);
  if (!match || port < 1 || port > 65535) return undefined;
  return { host: (match[1] ?? match[2]) as string, port };
}

type Dialed = { socket: Socket } | { refused: string } | { failed: string };

export class EgressProxy {
  /** What this command was refused, in order (at most 16). */
  readonly refusals: EgressRefusal[] = [];
  /** Names that did not resolve (git then reports them as such). */
  readonly unresolved: string[] = [];
  /**
   * Targets nothing listened on (every allowed address refused the connection): git then reports them as refused, as
   * it does for a direct connection, and the clone is not retried (red team round 15, G7: a closed port held a start
   * slot for 272 s of retries, which the proxy's 502 made look transient).
   */
  readonly connectionRefused: string[] = [];
  /** What the upstream proxy failed or refused (at most 16), for the command's error. */
  readonly upstreamFailures: string[] = [];
  private readonly policy: AddressPolicy;
  private readonly direct: (address: string) => boolean;
  private readonly token = randomBytes(24).toString('hex');
  private readonly expected: Buffer;
  private readonly sockets = new Set<Duplex>();
  private open = 0;

  private constructor(
    private readonly rules: EgressRules,
    private readonly limits: EgressLimits,
    private readonly server: Server,
  ) {
    this.policy = new AddressPolicy(rules);
    this.direct = rules.upstreamProxy ? directMatcher(rules.upstreamProxy) : () => true;
    this.expected = Buffer.from(`Basic ${this.authorization}`);
  }

  /** Starts a proxy on 127.0.0.1:0 for one git command. */
  static async start(rules: EgressRules = {}, limits: Partial<EgressLimits> = {}): Promise<EgressProxy> {
    const bounds = { ...egressLimits, ...limits };
    const server = createServer({ maxHeaderSize: bounds.maxHeaderBytes, requestTimeout: 0 });
    const proxy = new EgressProxy(rules, bounds, server);
    server.on('connection', (socket: Socket) => proxy.track(socket));
    server.on('connect', (req: IncomingMessage, socket: Duplex, head: Buffer) => void proxy.tunnel(req, socket, head));
    server.on('request', (req: IncomingMessage, res: ServerResponse) => void proxy.forward(req, res));
    server.on('clientError', (_error, socket: Duplex) => {
      if (socket.writable) socket.end(answer('400 Bad Request'));
      else socket.destroy();
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => resolve());
    });
    return proxy;
  }

  /** `127.0.0.1:<port>` */
  get address(): string {
    return `127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  /** The secret part of the proxy's credentials (redacted from git's messages). */
  get secret(): string {
    return this.token;
  }

  /** base64 of `user:token`, the Proxy-Authorization Basic credentials. */
  get authorization(): string {
    return Buffer.from(`workbay:${this.token}`).toString('base64');
  }

  /** The proxy URL for git's `http.proxy`, credentials included. */
  get url(): string {
    return `http://workbay:${this.token}@${this.address}`;
  }

  /** Stops listening and ends every connection (the command has exited). */
  async close(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private track(socket: Duplex): void {
    this.sockets.add(socket);
    socket.once('close', () => this.sockets.delete(socket));
    // A peer resetting mid-stream is no error of ours; the other side is ended with it (pipeline).
    socket.on('error', () => socket.destroy());
  }

  private authorized(req: IncomingMessage): boolean {
    const given = Buffer.from(String(req.headers['proxy-authorization'] ?? ''));
    return given.length === this.expected.length && timingSafeEqual(given, this.expected);
  }

  /**
   * Resolves `host` once and connects to the first allowed address that answers. A name with no allowed address is
   * refused before any connection; so is an IP literal the policy refuses.
   */
  private async dial(host: string, port: number): Promise<Dialed> {
    // Messages stay short whatever git asks for (hosts are printable here: parsed by the patterns above or URL).
    const shown = host.length > 64 ? `${host.slice(0, 64)}...` : host;
    let resolved;
    try {
      resolved = await resolveChecked(host, this.policy, this.rules.resolve);
    } catch {
      resolved = undefined;
    }
    if (!resolved || (resolved.allowed.length === 0 && resolved.refused.length === 0)) {
      if (this.unresolved.length < maxRecorded) this.unresolved.push(shown);
      return { failed: 'cannot resolve' };
    }
    if (resolved.allowed.length === 0) {
      const kind = (resolved.refused[0] as { kind: string }).kind;
      if (this.refusals.length < maxRecorded) this.refusals.push({ target: `${shown}:${port}`, kind });
      return { refused: kind };
    }
    const upstream = this.rules.upstreamProxy;
    let refusedEverywhere = true;
    for (const { address } of resolved.allowed) {
      if (upstream && !this.direct(address)) {
        // The proxy is asked for this checked address, not the name: it has nothing left to resolve.
        const tunnelled = await tunnelThrough(upstream, address, port, this.limits.connectTimeoutMs);
        if ('socket' in tunnelled) return tunnelled;
        if (this.upstreamFailures.length < maxRecorded) this.upstreamFailures.push(tunnelled.failed);
        refusedEverywhere = false;
        continue;
      }
      const connected = await this.connectOnce(address, port);
      const socket = 'socket' in connected ? connected.socket : undefined;
      // The resolver's answer was checked; this is the second look, at the peer of the connection itself.
      if (socket && this.policy.allows(socket.remoteAddress ?? '')) return { socket };
      socket?.destroy();
      if (!('code' in connected) || connected.code !== 'ECONNREFUSED') refusedEverywhere = false;
    }
    if (refusedEverywhere && this.connectionRefused.length < maxRecorded)
      this.connectionRefused.push(`${shown} port ${port}`);
    return { failed: 'unreachable' };
  }

  /** A connection to `address`, or why there is none (the socket error's code; none for a timeout). */
  private connectOnce(address: string, port: number): Promise<{ socket: Socket } | { code?: string }> {
    return new Promise((resolve) => {
      const socket = connect({ host: address, port });
      const timer = setTimeout(() => socket.destroy(), this.limits.connectTimeoutMs);
      socket.once('connect', () => {
        clearTimeout(timer);
        socket.removeAllListeners('error');
        resolve({ socket });
      });
      socket.once('error', (error: NodeJS.ErrnoException) => resolve(error.code ? { code: error.code } : {}));
      socket.once('close', () => {
        clearTimeout(timer);
        resolve({});
      });
    });
  }

  /** Admits one more tunnel or forwarded request; false at the bound. */
  private admit(): boolean {
    if (this.open >= this.limits.maxConnections) return false;
    this.open++;
    return true;
  }

  /** CONNECT host:port: https, and ssh and git:// through the connect helper. */
  private async tunnel(req: IncomingMessage, client: Duplex, head: Buffer): Promise<void> {
    if (!this.authorized(req)) {
      client.end(answer('407 Proxy Authentication Required', 'Proxy-Authenticate: Basic realm="workbay"\r\n'));
      return;
    }
    const target = parseAuthority(req.url ?? '');
    if (!target) {
      client.end(answer('400 Bad Request'));
      return;
    }
    if (!this.admit()) {
      client.end(answer('503 Service Unavailable'));
      return;
    }
    let released = false;
    const release = (): void => {
      if (!released) this.open--;
      released = true;
    };
    client.once('close', release);
    const dialed = await this.dial(target.host, target.port);
    if (!('socket' in dialed)) {
      client.end(answer('refused' in dialed ? '403 Forbidden' : '502 Bad Gateway'));
      return;
    }
    const upstream = dialed.socket;
    this.track(upstream);
    if (client.destroyed) {
      upstream.destroy();
      return;
    }
    client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
    if (head.length > 0) upstream.write(head);
    pipeline(client, upstream, () => client.destroy());
    pipeline(upstream, client, () => upstream.destroy());
  }

  /** An absolute-form plain-http request (an http:// remote): forwarded on a fresh, checked connection. */
  private async forward(req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (!this.authorized(req)) {
      res.writeHead(407, { 'proxy-authenticate': 'Basic realm="workbay"', 'content-length': '0' }).end();
      return;
    }
    let url: URL | undefined;
    try {
      url = new URL(req.url ?? '');
    } catch {
      url = undefined;
    }
    const port = url?.port === '' ? 80 : Number(url?.port);
    if (!url || url.protocol !== 'http:' || url.username || url.password) {
      res.writeHead(400, { 'content-length': '0', connection: 'close' }).end();
      return;
    }
    if (!this.admit()) {
      res.writeHead(503, { 'content-length': '0', connection: 'close' }).end();
      return;
    }
    res.once('close', () => this.open--);
    const dialed = await this.dial(url.hostname.replace(/^\[(.*)\]$/, '$1'), port);
    if (!('socket' in dialed)) {
      req.resume();
      res.writeHead('refused' in dialed ? 403 : 502, { 'content-length': '0', connection: 'close' }).end();
      return;
    }
    const socket = dialed.socket;
    this.track(socket);
    const dropped = new Set(
      String(req.headers.connection ?? '')
        .toLowerCase()
        .split(',')
        .map((name) => name.trim()),
    );
    const headers: OutgoingHttpHeaders = {};
    for (const [name, value] of Object.entries(req.headers))
      if (value !== undefined && !hopByHop.has(name) && !dropped.has(name)) headers[name] = value;
    const upstream = httpRequest({
      method: req.method ?? 'GET',
      path: `${url.pathname}${url.search}`,
      headers,
      setHost: false,
      // No agent: this one checked socket, never a pooled one (each request is checked on its own connection).
      createConnection: () => socket,
    });
    upstream.once('response', (response) => {
      const out: OutgoingHttpHeaders = {};
      for (const [name, value] of Object.entries(response.headers))
        if (value !== undefined && !hopByHop.has(name)) out[name] = value;
      res.writeHead(response.statusCode ?? 502, response.statusMessage, out);
      pipeline(response, res, () => socket.destroy());
    });
    upstream.once('error', () => {
      if (!res.headersSent) res.writeHead(502, { 'content-length': '0', connection: 'close' }).end();
      else res.destroy();
      socket.destroy();
    });
    pipeline(req, upstream, () => undefined);
  }
}
