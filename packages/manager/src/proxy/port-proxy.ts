/**
 * The built-in port proxy: routes each workspace's URL (its IDE) and each exposed port's URL to the workspace
 * on its runtime host, over HTTP and WebSocket (upgrade), and admits requests:
 *
 * - the owner, by owner token: header `x-workbay-owner-token`, query `?workbayOwnerToken=` (which sets a cookie and
 *   redirects to the URL without the token), or that cookie;
 * - everybody, where the port is public or the workspace's admission is ADMIT_EVERYONE.
 *
 * Routes: see `routing.ts`. Tokens: `admission.ts` (never forwarded). Targets: `exposure.ts` (only the
 * workspace's own host and ports). Open connections: `tunnels.ts` (closed when their admission is revoked).
 * Connection caps and timeouts (server-wide, per client address, slowloris, handshake, idle, refusals):
 * `connection-limits.ts`; busy connections per workspace and owner, with and without the owner token:
 * `workspace-slots.ts`.
 *
 * Every client of the proxy is hostile: any input gets an answer (400 when malformed), and a throw inside a
 * handler answers 500 and is logged, never an uncaught exception (invariant 12). Answers of its own are plain text:
 * 400, 401 (no token), 403 (wrong token, or a port that is not the workspace's own), 404 (no such workspace or
 * port not exposed), 408 (request too slow), 500, 502 (the workspace does not answer, or answers an upgrade with
 * anything but one 101 head or a final answer framed by Content-Length: see `upgrade.ts`), 503 (not running, or
 * too many connections from one address or to one workspace), 504 (the workspace did not answer an upgrade in time).
 *
 * @module
 */
import { createServer, request as httpRequest } from 'node:http';
import type { IncomingMessage, OutgoingHttpHeaders, Server, ServerResponse } from 'node:http';
import { request as httpsRequest } from 'node:https';
import type { Socket } from 'node:net';
import type { Observable } from 'rxjs';
import type { WorkspaceRecord } from '../domain/types.js';
import type { Logger } from '../logger.js';
import {
  cookieNameFor,
  forwardHeaders,
  forwardTarget,
  isHopByHop,
  matchesOwner,
  ownerCookie,
  ownerTokenHeader,
  ownerTokenQuery,
  presentedTokens,
  stripQuery,
} from './admission.js';
import { PipelinedRequests } from './pipelining.js';
import { resetOrDestroy } from './closing.js';
import type { ShedRefusal } from './shed-admission.js';
import { TransferShedder } from './shedding.js';
import type { TcpPressure } from './shedding.js';
import { boundConnections, resolveProxyLimits, serverTimeouts } from './connection-limits.js';
import type { ProxyLimits } from './connection-limits.js';
import { ReservedEndpoints, checkTarget } from './exposure.js';
import { sameSiteLocation } from './parse.js';
import { routeRequest } from './routing.js';
import type { Refusal, Route } from './routing.js';
import { scopeAnswerHeader } from './answer-headers.js';
import { LiveOwnerTokens } from './owner-tokens.js';
import { TunnelRegistry } from './tunnels.js';
import type { Grant } from './tunnels.js';
import { openTunnel, rejectUpgrade } from './upgrade.js';
import { WorkspaceSlots, busyRefusal } from './workspace-slots.js';
import type { Budget } from './workspace-slots.js';

export { ownerTokenHeader, ownerTokenQuery } from './admission.js';

/** What the proxy needs from the manager. */
export interface ProxyRouter {
  getWorkspace(id: string): WorkspaceRecord | undefined;
  /** Every record (to tell whether a port on a shared host belongs to another workspace). */
  allWorkspaces(): Iterable<WorkspaceRecord>;
}

export interface PortProxyOptions {
  readonly router: ProxyRouter;
  /** host:port to listen on; port 0 picks a free one. */
  readonly address: string;
  /** Enables Host-header routing for `<id>.ws.<domain>` and `<port>-<id>.ws.<domain>`. */
  readonly domain?: string;
  readonly cookieName: string;
  /** The manager's own endpoints, never a target (the proxy adds its own address). */
  readonly reserved?: ReservedEndpoints;
  /** The IDE port range (for the shared-host rules of `exposure.ts`). */
  readonly idePorts?: { readonly from: number; readonly to: number };
  /** Mark the owner cookie Secure (the public workspace URLs are https). */
  readonly secureCookies?: boolean;
  /** Connection caps and timeouts; each one not given takes its default (see `connection-limits.ts`). */
  readonly limits?: Partial<ProxyLimits>;
  readonly logger: Logger;
}

interface Admitted {
  readonly record: WorkspaceRecord;
  readonly target: { readonly host: string; readonly port: number };
  readonly https: boolean;
  readonly grant: Grant;
  /** Path and query for the workspace (token stripped). */
  readonly forwardPath: string;
  /** Set when the query carried the right token: the cookie to set and, for GET/HEAD, a redirect without it. */
  readonly setCookie?: string;
  readonly redirect?: string;
}

/**
 * The budget a connection counts in (`workspace-slots.ts`): with the owner token it is the owner's own, which
 * anonymous clients of her public ports cannot fill.
 */
function budgetOf(grant: Grant): Budget {
  return grant.byOwner ? 'authenticated' : 'anonymous';
}

/**
 * The answer to a request the shedder refuses (`shed-admission.ts`): its client cools down, or its class (the
 * workspace's anonymous clients, the owner) holds too much.
 */
function shedRefusal(refusal: ShedRefusal, upgrade: boolean, byOwner: boolean): Refusal {
  const retryAfter = String(refusal.retryAfterSeconds);
  const holders = byOwner ? 'your transfers hold' : "this workspace's anonymous clients hold";
  return {
    status: 503,
    message:
      refusal.reason === 'cooling'
        ? 'the proxy is short of memory and this client held too much of it; retry later\n'
        : `the proxy is short of memory and ${holders} too much of it; retry later${byOwner ? '' : ', or send the owner token'}\n`,
    headers: upgrade ? { 'retry-after': retryAfter } : { 'retry-after': retryAfter, connection: 'close' },
  };
}

export class PortProxy {
  private server: Server | undefined;
  private boundAddress = '';
  private readonly sockets = new Set<Socket>();
  private readonly reserved: ReservedEndpoints;
  /** Open connections by workspace, with the grants they were admitted under. */
  private readonly tunnels: TunnelRegistry;
  /** Grants already tracked per client connection (keep-alive connections carry many requests). */
  private readonly socketGrants = new WeakMap<Socket, Set<string>>();
  /**
   * Whose a client connection's requests were: the owner whose token they carried, the workspace they went to (the
   * shedder weighs its closing as that class's, shedding.ts).
   */
  private readonly socketClasses = new WeakMap<Socket, { readonly owner?: string; readonly workspace: string }>();
  /** Pipelined requests wait for the one before them (pipelining.ts). */
  private readonly pipelined = new PipelinedRequests();
  private readonly limits: ProxyLimits;
  /** Resets the transfers that hold the most while the manager's TCP budget is nearly used up ({@link shedTransfers}). */
  private shedder: TransferShedder | undefined;
  /** Connections busy for each workspace (requests in progress, tunnels), capped per workspace and per owner. */
  private readonly workspaceSlots: WorkspaceSlots;
  private readonly ownerTokens: LiveOwnerTokens;
  /** Whether a text carries any owner's token (stripped from what a workspace receives, not only its own's). */
  private readonly anyToken = (text: string): boolean => this.ownerTokens.carriedBy(text);

  constructor(private readonly options: PortProxyOptions) {
    this.ownerTokens = new LiveOwnerTokens(() => options.router.allWorkspaces());
    // Resolved here so that a bad value fails at construction, not at the first connection.
    this.limits = resolveProxyLimits(options.limits);
    this.reserved = options.reserved ?? new ReservedEndpoints();
    this.tunnels = new TunnelRegistry((id) => options.router.getWorkspace(id), options.logger);
    this.workspaceSlots = new WorkspaceSlots(
      {
        anonymous: {
          maxPerWorkspace: this.limits.maxConnectionsPerWorkspace,
          maxPerOwner: this.limits.maxConnectionsPerOwner,
          maxTotal: this.limits.maxAnonymousConnections,
        },
        authenticated: {
          maxPerWorkspace: this.limits.maxAuthenticatedConnectionsPerWorkspace,
          maxPerOwner: this.limits.maxAuthenticatedConnectionsPerOwner,
        },
      },
      options.logger,
    );
  }

  /** The bound host:port (after start). */
  get address(): string {
    return this.boundAddress;
  }

  /**
   * What the TCP shedder did so far (`shedTransfers`): transfers reset, and connections refused while their address
   * cooled down; undefined while it is off.
   */
  get shedding():
    { readonly shed: number; readonly refused: number; readonly refusedUnderPressure: number } | undefined {
    if (!this.shedder) return undefined;
    const refused = this.shedder.refused;
    return { shed: this.shedder.shed, refused: refused.cooling, refusedUnderPressure: refused.pressure };
  }

  /** Open client connections, HTTP and upgraded (for tests and metrics). */
  get connectionCount(): number {
    return this.sockets.size;
  }

  /**
   * Re-checks open connections on every status change of their workspace, and knows a new workspace's owner token
   * from its first status (call once the manager's bus is live; replaced by a later call, torn down by {@link stop}).
   */
  follow(status$: Observable<WorkspaceRecord>): void {
    this.tunnels.follow(status$);
    this.ownerTokens.follow(status$);
  }

  async start(): Promise<string> {
    const server = createServer(serverTimeouts(this.limits), (req, res) =>
      this.pipelined.run(req.socket, res, () => this.guard(res, () => this.handle(req, res))),
    );
    // A closing connection still holds the rest of its answer in the kernel for its linger: weighed by the shedder
    // like a transfer (red team round 17c: 360 answers that finished into the linger filled the TCP budget for 6 s).
    boundConnections(server, this.limits, this.options.logger, (socket) => {
      // Weighed as the owner's whose token its requests carried, not as anonymous (red team round 19b: an owner's
      // upload flood, closing at its idle timeout, had every anonymous visitor refused).
      const requests = this.socketClasses.get(socket);
      const untrack = this.shedder?.track([socket], requests?.owner, requests?.workspace);
      if (untrack) socket.once('close', untrack);
    });
    server.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) => {
      try {
        this.handleUpgrade(req, socket, head);
      } catch (error) {
        this.options.logger.error({ err: error, url: String(req.url).slice(0, 64) }, 'proxy upgrade handler threw');
        rejectUpgrade(socket, { status: 500, message: 'internal proxy error\n' }, this.limits.refusalGraceMs);
      }
    });
    server.on('connection', (socket: Socket) => {
      this.sockets.add(socket);
      socket.on('error', () => socket.destroy());
      socket.once('close', () => this.sockets.delete(socket));
    });
    const index = this.options.address.lastIndexOf(':');
    const host = this.options.address.slice(0, index).replace(/^\[|\]$/g, '');
    const port = Number(this.options.address.slice(index + 1));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => {
        server.off('error', reject);
        resolve();
      });
    });
    const bound = server.address();
    const boundPort = typeof bound === 'object' && bound ? bound.port : port;
    this.boundAddress = `${host.includes(':') ? `[${host}]` : host}:${boundPort}`;
    this.reserved.add(this.boundAddress);
    this.server = server;
    this.options.logger.info({ address: this.boundAddress }, 'port proxy listening');
    return this.boundAddress;
  }

  /**
   * From now on, resets the transfers that hold the most of the kernel's buffers, stalled ones first, while the
   * manager's TCP budget of `budgetBytes` is nearly used up (`shedding.ts`): as `pressure` says where the kernel caps
   * the manager's socket buffers (`workbay up` on cgroup v1), else as what the proxy's own connections hold of it.
   * While anonymous transfers (or one owner's) hold more than half of it, their requests are refused, and for
   * `pressureHoldMs` (default 10 s) after.
   */
  shedTransfers(
    budget: { readonly budgetBytes: number; readonly pressure?: TcpPressure },
    options: { readonly pressureHoldMs?: number } = {},
  ): void {
    this.shedder?.stop();
    this.shedder = new TransferShedder({
      budgetBytes: budget.budgetBytes,
      ...(budget.pressure ? { pressure: budget.pressure } : {}),
      ...options,
      logger: this.options.logger,
      // Without a per-address cap (behind a load balancer), an address is not a client for the shedder either.
      addressIsClient: this.limits.maxConnectionsPerAddress > 0,
    });
  }

  async stop(): Promise<void> {
    this.shedder?.stop();
    this.tunnels.unfollow();
    this.ownerTokens.unfollow();
    const server = this.server;
    if (!server) return;
    this.server = undefined;
    this.tunnels.closeAll();
    for (const socket of this.sockets) resetOrDestroy(socket);
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  cookieNameFor(id: string): string {
    return cookieNameFor(this.options.cookieName, id);
  }

  /** Runs a handler step; a throw answers 500 (or ends the connection) and is logged, never escapes. */
  private guard(res: ServerResponse, step: () => void): void {
    try {
      step();
    } catch (error) {
      this.options.logger.error({ err: error, url: String(res.req?.url).slice(0, 64) }, 'proxy handler threw');
      if (!res.headersSent) {
        try {
          this.refuse(res, { status: 500, message: 'internal proxy error\n' });
          return;
        } catch {
          // fall through: the response is unusable
        }
      }
      res.destroy();
    }
  }

  /** Decides on a routed request: refusal, or where it goes and with what. */
  private admit(req: IncomingMessage, route: Route): Admitted | Refusal {
    const record = this.options.router.getWorkspace(route.id);
    if (!record) return { status: 404, message: `workspace ${route.id} not found\n` };
    let exposedPublic = false;
    let https = false;
    if (route.port !== undefined) {
      const exposed = record.spec.ports.find((p) => p.port === route.port);
      if (!exposed) return { status: 404, message: `port ${route.port} of workspace ${route.id} is not exposed\n` };
      exposedPublic = exposed.visibility === 'public';
      https = exposed.protocol === 'https';
    }
    const open = exposedPublic || record.spec.admission === 'everyone';
    const cookieName = this.cookieNameFor(record.id);
    const presented = presentedTokens(req, route, cookieName);
    const queryOwner = matchesOwner(presented.query, record);
    const isOwner = matchesOwner(presented.other, record) || queryOwner;
    if (!open && !isOwner) {
      if (presented.query.length === 0 && presented.other.length === 0) {
        return {
          status: 401,
          message: `workspace ${record.id} admits its owner only: present the owner token (header ${ownerTokenHeader}, or ?${ownerTokenQuery}=)\n`,
          headers: { 'www-authenticate': `Bearer realm="workbay", header="${ownerTokenHeader}"` },
        };
      }
      return { status: 403, message: `the owner token does not match workspace ${record.id}\n` };
    }
    if (record.phase !== 'running') {
      return {
        status: 503,
        message: `workspace ${record.id} is not running (phase ${record.phase})\n`,
        headers: { 'retry-after': '2' },
      };
    }
    const target = checkTarget(record, route.port, {
      reserved: this.reserved,
      workspaces: this.options.router.allWorkspaces(),
      idePorts: this.options.idePorts,
    });
    if ('refused' in target) {
      this.options.logger.warn(
        { workspace: record.id, port: route.port, reason: target.refused },
        'proxy target refused',
      );
      return { status: 403, message: `${target.refused}\n` };
    }
    const forwardPath = forwardTarget(route, record.ownerToken, this.anyToken);
    if (forwardPath === undefined) return { status: 400, message: 'the owner token does not belong in the path\n' };
    const grant: Grant = { workspaceId: record.id, port: route.port, byOwner: isOwner, host: target.host };
    if (!queryOwner) return { record, target, https, grant, forwardPath };
    return {
      record,
      target,
      https,
      grant,
      forwardPath,
      setCookie: ownerCookie(cookieName, record.ownerToken, route.prefix, this.secureCookie(req)),
      // Relative and rebuilt from validated parts (see routing.ts): never another site.
      redirect: sameSiteLocation(`${route.prefix}${forwardPath}`),
    };
  }

  /** Secure when the public URLs are https, or a TLS terminator in front says so. */
  private secureCookie(req: IncomingMessage): boolean {
    return this.options.secureCookies === true || req.headers['x-forwarded-proto'] === 'https';
  }

  /**
   * Why a request is refused by the shedder (`shed-admission.ts`), if it is: a reset costs a flood nothing to retry,
   * and each new connection would take its share of the budget again before the next tick (red team round 18). The
   * client is the address, with the owner whose token the request carries: an owner behind an address an anonymous
   * flood came from is not locked out (18b, N3), and an owner's own token-carrying flood is (18c, N6); under pressure a
   * new anonymous address waits (18b, N2b).
   */
  private shedRefusalOf(socket: Socket, grant: Grant, owner: string): ShedRefusal | undefined {
    return this.shedder?.refuses(socket.remoteAddress ?? '', grant.byOwner ? owner : undefined, grant.workspaceId);
  }

  private refuse(res: ServerResponse, refusal: Refusal): void {
    res.writeHead(refusal.status, { 'content-type': 'text/plain; charset=utf-8', ...refusal.headers });
    res.end(refusal.message);
  }

  /** Ties a client connection to a grant, once per connection and grant; the registry closes it on revocation. */
  private trackSocket(socket: Socket, grant: Grant): void {
    const key = `${grant.workspaceId}\n${grant.port ?? ''}\n${grant.byOwner}\n${grant.host}`;
    let keys = this.socketGrants.get(socket);
    if (!keys) this.socketGrants.set(socket, (keys = new Set()));
    if (keys.has(key)) return;
    keys.add(key);
    const untrack = this.tunnels.track(grant, () => resetOrDestroy(socket));
    socket.once('close', untrack);
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    req.on('error', () => res.destroy());
    res.on('error', () => req.destroy());
    const route = routeRequest(req, this.options.domain);
    if ('status' in route) return this.refuse(res, route);
    if (route.missingSlash) return this.redirectToSlash(req, res, route);
    const admission = this.admit(req, route);
    if ('status' in admission) return this.refuse(res, admission);
    const safeMethod = req.method === 'GET' || req.method === 'HEAD';
    if (admission.redirect !== undefined && admission.setCookie && safeMethod) {
      // Drop the token from the address bar; the cookie carries it from now on.
      res.writeHead(303, { location: admission.redirect, 'set-cookie': admission.setCookie });
      res.end();
      return;
    }
    // Counted from here until the response is done or its connection closes ('close' covers both: a client that
    // ends its side is answered by Node with the end of the connection, which closes the response at once).
    const budget = budgetOf(admission.grant);
    const shed = this.shedRefusalOf(req.socket, admission.grant, admission.record.owner);
    if (shed) return this.refuse(res, shedRefusal(shed, false, admission.grant.byOwner));
    const release = this.workspaceSlots.take(admission.record, budget);
    if ('over' in release) return this.refuse(res, busyRefusal(admission.record.id, false, release.over, budget));
    res.once('close', release);
    this.trackSocket(req.socket, admission.grant);
    this.forward(req, res, route, admission);
  }

  /**
   * `/ws/<id>` → `/ws/<id>/`, on this site, without the token: a query token of the owner becomes the cookie here
   * (as on any other path), so that the token is never echoed into a Location (and so into history and logs).
   */
  private redirectToSlash(req: IncomingMessage, res: ServerResponse, route: Route): void {
    const record = this.options.router.getWorkspace(route.id);
    const query = stripQuery(route.query, record?.ownerToken ?? '');
    const location = sameSiteLocation(`${route.prefix}/${query === undefined ? '' : `?${query}`}`);
    const headers: OutgoingHttpHeaders = { location, 'content-type': 'text/plain; charset=utf-8' };
    const cookieName = record ? this.cookieNameFor(record.id) : '';
    if (record && matchesOwner(presentedTokens(req, route, cookieName).query, record)) {
      headers['set-cookie'] = ownerCookie(cookieName, record.ownerToken, route.prefix, this.secureCookie(req));
    }
    res.writeHead(308, headers);
    res.end(`see ${location}\n`);
  }

  private forward(req: IncomingMessage, res: ServerResponse, route: Route, admission: Admitted): void {
    const { record, target } = admission;
    const send = admission.https ? httpsRequest : httpRequest;
    const upstream = send(
      {
        host: target.host,
        port: target.port,
        method: req.method,
        path: admission.forwardPath,
        headers: forwardHeaders(req, {
          token: record.ownerToken,
          cookiePrefix: this.options.cookieName,
          prefix: route.prefix,
          keepUpgrade: false,
          anyToken: this.anyToken,
        }),
        // A connection per request: none is pooled past a revocation or reused for another workspace.
        agent: false,
        ...(admission.https ? { rejectUnauthorized: false } : {}),
      },
      (upstreamRes) =>
        this.guard(res, () => {
          const headers: OutgoingHttpHeaders = {};
          const scope = { cookiePrefix: this.options.cookieName, prefix: route.prefix };
          for (const [name, value] of Object.entries(upstreamRes.headers)) {
            if (value === undefined || isHopByHop(name)) continue;
            if (Array.isArray(value)) {
              const kept = value.flatMap((v) => scopeAnswerHeader(name, v, scope) ?? []);
              if (kept.length > 0) headers[name] = kept;
            } else {
              const kept = scopeAnswerHeader(name, value, scope);
              if (kept !== undefined) headers[name] = kept;
            }
          }
          if (admission.setCookie) {
            const existing = headers['set-cookie'];
            headers['set-cookie'] = [
              ...(Array.isArray(existing) ? existing : existing ? [String(existing)] : []),
              admission.setCookie,
            ];
          }
          upstreamRes.on('error', () => res.destroy());
          res.writeHead(upstreamRes.statusCode ?? 502, headers);
          upstreamRes.pipe(res);
        }),
    );
    upstream.on('error', (error: NodeJS.ErrnoException) => {
      this.options.logger.debug({ err: error, workspace: record.id, target }, 'proxy target error');
      if (res.headersSent) {
        res.destroy();
        return;
      }
      this.guard(res, () =>
        this.refuse(res, {
          status: 502,
          message: `workspace ${record.id} does not answer on port ${route.port ?? 'IDE'} (${error.code ?? 'error'})\n`,
        }),
      );
    });
    // The connection ends with the exchange, by a reset (see resetOrDestroy): Node's client closes it gracefully once
    // the answer is in (`destroySoon`), and a workspace that answered early and stopped reading the request's body
    // left the rest of it queued in an orphan socket for minutes (red team round 16b, J1).
    upstream.once('socket', (connection: Socket) => {
      connection.destroySoon = () => resetOrDestroy(connection);
      const owner = admission.grant.byOwner ? record.owner : undefined;
      const workspace = admission.grant.workspaceId;
      this.socketClasses.set(req.socket, { ...(owner !== undefined ? { owner } : {}), workspace });
      const untrack = this.shedder?.track([req.socket, connection], owner, workspace);
      if (untrack) res.once('close', untrack);
    });
    res.on('close', () => {
      if (upstream.socket) resetOrDestroy(upstream.socket);
      upstream.destroy();
    });
    req.pipe(upstream);
  }

  private handleUpgrade(req: IncomingMessage, socket: Socket, head: Buffer): void {
    const route = routeRequest(req, this.options.domain);
    if ('status' in route) return rejectUpgrade(socket, route, this.limits.refusalGraceMs);
    const admission = this.admit(req, route);
    if ('status' in admission) return rejectUpgrade(socket, admission, this.limits.refusalGraceMs);
    // Counted from here until the client connection closes: during the handshake and for the tunnel's life. Once
    // the client has closed its side, the tunnel closes within the grace whatever the workspace does (`upgrade.ts`).
    const budget = budgetOf(admission.grant);
    const shed = this.shedRefusalOf(socket, admission.grant, admission.record.owner);
    if (shed)
      return rejectUpgrade(socket, shedRefusal(shed, true, admission.grant.byOwner), this.limits.refusalGraceMs);
    const release = this.workspaceSlots.take(admission.record, budget);
    if ('over' in release) {
      const refusal = busyRefusal(admission.record.id, true, release.over, budget);
      return rejectUpgrade(socket, refusal, this.limits.refusalGraceMs);
    }
    socket.once('close', release);
    const headers = forwardHeaders(req, {
      token: admission.record.ownerToken,
      cookiePrefix: this.options.cookieName,
      prefix: route.prefix,
      keepUpgrade: true,
      anyToken: this.anyToken,
    });
    const close = openTunnel({
      socket,
      head,
      method: req.method ?? 'GET',
      path: admission.forwardPath,
      headers,
      target: admission.target,
      https: admission.https,
      workspaceId: admission.record.id,
      scope: { cookiePrefix: this.options.cookieName, prefix: route.prefix },
      limits: this.limits,
      ...(this.shedder ? { shedder: this.shedder } : {}),
      ...(admission.grant.byOwner ? { owner: admission.record.owner } : {}),
    });
    const untrack = this.tunnels.track(admission.grant, close);
    socket.once('close', untrack);
  }
}
