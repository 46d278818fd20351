/**
 * The built-in port proxy: routes each workspace's URL (its IDE) and each exposed port's URL to the workspace
 * on its runtime host, over HTTP and WebSocket (upgrade), and admits requests:
 *
 * - the owner, by owner token: header `x-workbay-owner-token`, query `?workbayOwnerToken=` (which sets a cookie and
 *   redirects to the URL without the token), or that cookie;
 * - everybody, where the port is public or the workspace's admission is ADMIT_EVERYONE.
 *
 * Routes: path based, `/ws/<id>/…` (IDE) and `/ws/<id>/port/<port>/…`, which need no DNS; and Host based,
 * `<id>.ws.<domain>` and `<port>-<id>.ws.<domain>`, when `domain` is configured.
 *
 * Answers of its own are plain text with a clear reason: 401 (no token), 403 (wrong token), 404 (no such
 * workspace or port not exposed), 502 (the workspace does not answer), 503 (not running).
 *
 * @module
 */
import { timingSafeEqual } from 'node:crypto';
import { createServer, request as httpRequest } from 'node:http';
import type { IncomingHttpHeaders, IncomingMessage, OutgoingHttpHeaders, Server, ServerResponse } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { connect } from 'node:net';
import type { Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import type { WorkspaceRecord } from '../domain/types.js';
import type { Logger } from '../logger.js';

export const ownerTokenHeader = 'x-workbay-owner-token';
export const ownerTokenQuery = 'workbayOwnerToken';

/** What the proxy needs from the manager. */
export interface ProxyRouter {
  getWorkspace(id: string): WorkspaceRecord | undefined;
  routeOf(record: WorkspaceRecord, port?: number): { host: string; port: number };
}

export interface PortProxyOptions {
  readonly router: ProxyRouter;
  /** host:port to listen on; port 0 picks a free one. */
  readonly address: string;
  /** Enables Host-header routing for `<id>.ws.<domain>` and `<port>-<id>.ws.<domain>`. */
  readonly domain?: string;
  readonly cookieName: string;
  readonly logger: Logger;
}

interface Route {
  readonly id: string;
  /** Undefined for the IDE. */
  readonly port?: number;
  /** Path and query to send to the workspace. */
  readonly forwardPath: string;
  /** Path prefix the route consumed (`/ws/<id>` or `/ws/<id>/port/<n>`), '' for Host routes. */
  readonly prefix: string;
  /** Set when the path lacks the trailing slash after the prefix: redirect there. */
  readonly redirectTo?: string;
}

interface Refusal {
  readonly status: number;
  readonly message: string;
  readonly headers?: OutgoingHttpHeaders;
}

type Admission =
  | {
      readonly ok: true;
      readonly record: WorkspaceRecord;
      readonly target: { host: string; port: number };
      readonly https: boolean;
      readonly setCookie?: string;
      readonly redirect?: string;
    }
  | { readonly ok: false; readonly refusal: Refusal };

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

const idPattern = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

function tokensEqual(given: string, expected: string): boolean {
  const a = Buffer.from(given);
  const b = Buffer.from(expected);
  return a.length === b.length && timingSafeEqual(a, b);
}

function parseCookies(header: string | undefined): Map<string, string> {
  const out = new Map<string, string>();
  if (!header) return out;
  for (const part of header.split(';')) {
    const index = part.indexOf('=');
    if (index <= 0) continue;
    const name = part.slice(0, index).trim();
    const value = part.slice(index + 1).trim();
    try {
      out.set(name, decodeURIComponent(value));
    } catch {
      out.set(name, value);
    }
  }
  return out;
}

export class PortProxy {
  private server: Server | undefined;
  private boundAddress = '';
  private readonly sockets = new Set<Socket>();

  constructor(private readonly options: PortProxyOptions) {}

  /** The bound host:port (after start). */
  get address(): string {
    return this.boundAddress;
  }

  async start(): Promise<string> {
    const server = createServer((req, res) => this.handle(req, res));
    server.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) => this.handleUpgrade(req, socket, head));
    server.on('connection', (socket: Socket) => {
      this.sockets.add(socket);
      socket.once('close', () => this.sockets.delete(socket));
    });
    server.on('clientError', (_error, socket) => socket.destroy());
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
    this.server = server;
    this.options.logger.info({ address: this.boundAddress }, 'port proxy listening');
    return this.boundAddress;
  }

  async stop(): Promise<void> {
    const server = this.server;
    if (!server) return;
    this.server = undefined;
    for (const socket of this.sockets) socket.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  cookieNameFor(id: string): string {
    return `${this.options.cookieName}_${id.replace(/[^A-Za-z0-9_-]/g, '_')}`;
  }

  private route(req: IncomingMessage): Route | Refusal {
    const url = req.url ?? '/';
    const domain = this.options.domain;
    const hostHeader = (req.headers.host ?? '').replace(/:\d+$/, '').toLowerCase();
    if (domain) {
      const suffix = `.ws.${domain.toLowerCase()}`;
      if (hostHeader.endsWith(suffix)) {
        const label = hostHeader.slice(0, -suffix.length);
        const portMatch = /^([0-9]{1,5})-(.+)$/.exec(label);
        const id = portMatch ? portMatch[2]! : label;
        const port = portMatch ? Number(portMatch[1]) : undefined;
        if (!idPattern.test(id)) return { status: 404, message: `no workspace route for host ${hostHeader}\n` };
        // Host names are case-insensitive; find the workspace whatever the case of its id.
        return { id, port, forwardPath: url, prefix: '' };
      }
    }
    const match = /^\/ws\/([^/?#]+)(\/port\/([0-9]{1,5}))?(\/[^?#]*)?(\?.*)?$/.exec(url);
    if (!match) {
      return {
        status: 404,
        message: 'not a workspace URL: use /ws/<id>/ or /ws/<id>/port/<port>/\n',
      };
    }
    const id = decodeURIComponent(match[1]!);
    if (!idPattern.test(id)) return { status: 404, message: `no workspace ${id}\n` };
    const port = match[3] !== undefined ? Number(match[3]) : undefined;
    const prefix = `/ws/${match[1]}${match[2] ?? ''}`;
    const rest = match[4];
    const query = match[5] ?? '';
    if (rest === undefined) return { id, port, forwardPath: '/', prefix, redirectTo: `${prefix}/${query}` };
    return { id, port, forwardPath: `${rest}${query}`, prefix };
  }

  private admit(req: IncomingMessage, route: Route): Admission {
    const record = this.options.router.getWorkspace(route.id);
    if (!record) return { ok: false, refusal: { status: 404, message: `workspace ${route.id} not found\n` } };
    let exposedPublic = false;
    let https = false;
    if (route.port !== undefined) {
      const exposed = record.spec.ports.find((p) => p.port === route.port);
      if (!exposed) {
        return {
          ok: false,
          refusal: { status: 404, message: `port ${route.port} of workspace ${route.id} is not exposed\n` },
        };
      }
      exposedPublic = exposed.visibility === 'public';
      https = exposed.protocol === 'https';
    }
    const open = exposedPublic || record.spec.admission === 'everyone';
    const requestUrl = new URL(req.url ?? '/', 'http://proxy');
    const queryToken = requestUrl.searchParams.get(ownerTokenQuery) ?? undefined;
    const headerToken = req.headers[ownerTokenHeader];
    const cookieToken = parseCookies(req.headers.cookie).get(this.cookieNameFor(record.id));
    const given = queryToken ?? (Array.isArray(headerToken) ? headerToken[0] : headerToken) ?? cookieToken;
    const isOwner = given !== undefined && tokensEqual(given, record.ownerToken);
    if (!open) {
      if (given === undefined) {
        return {
          ok: false,
          refusal: {
            status: 401,
            message: `workspace ${record.id} admits its owner only: present the owner token (header ${ownerTokenHeader}, or ?${ownerTokenQuery}=)\n`,
            headers: { 'www-authenticate': `Bearer realm="workbay", header="${ownerTokenHeader}"` },
          },
        };
      }
      if (!isOwner) {
        return {
          ok: false,
          refusal: { status: 403, message: `the owner token does not match workspace ${record.id}\n` },
        };
      }
    }
    if (record.phase !== 'running') {
      return {
        ok: false,
        refusal: {
          status: 503,
          message: `workspace ${record.id} is not running (phase ${record.phase})\n`,
          headers: { 'retry-after': '2' },
        },
      };
    }
    let setCookie: string | undefined;
    let redirect: string | undefined;
    if (queryToken !== undefined && isOwner) {
      const path = route.prefix ? `${route.prefix}/` : '/';
      setCookie = `${this.cookieNameFor(record.id)}=${encodeURIComponent(queryToken)}; Path=${path}; HttpOnly; SameSite=Lax`;
      requestUrl.searchParams.delete(ownerTokenQuery);
      redirect = `${requestUrl.pathname}${requestUrl.search}`;
    }
    return { ok: true, record, target: this.options.router.routeOf(record, route.port), https, setCookie, redirect };
  }

  /** Request headers for the workspace: no hop-by-hop headers, no owner token, no proxy cookie. */
  private forwardHeaders(
    req: IncomingMessage,
    record: WorkspaceRecord,
    route: Route,
    keepUpgrade: boolean,
  ): OutgoingHttpHeaders {
    const headers: OutgoingHttpHeaders = {};
    const connectionTokens = new Set(
      String(req.headers.connection ?? '')
        .split(',')
        .map((t) => t.trim().toLowerCase())
        .filter(Boolean),
    );
    for (const [name, value] of Object.entries(req.headers as IncomingHttpHeaders)) {
      if (value === undefined || name === ownerTokenHeader) continue;
      if (!keepUpgrade && (hopByHop.has(name) || connectionTokens.has(name))) continue;
      if (
        keepUpgrade &&
        name !== 'connection' &&
        name !== 'upgrade' &&
        (hopByHop.has(name) || connectionTokens.has(name))
      )
        continue;
      headers[name] = value;
    }
    const cookieName = this.cookieNameFor(record.id);
    if (typeof headers.cookie === 'string') {
      const rest = headers.cookie
        .split(';')
        .map((c) => c.trim())
        .filter((c) => c && !c.startsWith(`${cookieName}=`));
      if (rest.length > 0) headers.cookie = rest.join('; ');
      else delete headers.cookie;
    }
    const remote = req.socket.remoteAddress ?? '';
    const prior = req.headers['x-forwarded-for'];
    headers['x-forwarded-for'] = prior ? `${String(prior)}, ${remote}` : remote;
    headers['x-forwarded-host'] = req.headers.host ?? '';
    headers['x-forwarded-proto'] = 'http';
    if (route.prefix) headers['x-forwarded-prefix'] = route.prefix;
    return headers;
  }

  private stripToken(path: string): string {
    if (!path.includes(ownerTokenQuery)) return path;
    const url = new URL(path, 'http://proxy');
    url.searchParams.delete(ownerTokenQuery);
    return `${url.pathname}${url.search}`;
  }

  private refuse(res: ServerResponse, refusal: Refusal): void {
    res.writeHead(refusal.status, { 'content-type': 'text/plain; charset=utf-8', ...refusal.headers });
    res.end(refusal.message);
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const route = this.route(req);
    if ('status' in route) return this.refuse(res, route);
    if (route.redirectTo) {
      res.writeHead(308, { location: route.redirectTo, 'content-type': 'text/plain; charset=utf-8' });
      res.end(`see ${route.redirectTo}\n`);
      return;
    }
    const admission = this.admit(req, route);
    if (!admission.ok) return this.refuse(res, admission.refusal);
    const safeMethod = req.method === 'GET' || req.method === 'HEAD';
    if (admission.redirect !== undefined && admission.setCookie && safeMethod) {
      // Drop the token from the address bar; the cookie carries it from now on.
      res.writeHead(303, { location: admission.redirect, 'set-cookie': admission.setCookie });
      res.end();
      return;
    }
    const { record, target } = admission;
    const send = admission.https ? httpsRequest : httpRequest;
    const upstream = send(
      {
        host: target.host,
        port: target.port,
        method: req.method,
        path: this.stripToken(route.forwardPath),
        headers: this.forwardHeaders(req, record, route, false),
        ...(admission.https ? { rejectUnauthorized: false } : {}),
      },
      (upstreamRes) => {
        const headers: OutgoingHttpHeaders = {};
        for (const [name, value] of Object.entries(upstreamRes.headers)) {
          if (value !== undefined && !hopByHop.has(name)) headers[name] = value;
        }
        if (admission.setCookie) {
          const existing = headers['set-cookie'];
          headers['set-cookie'] = [
            ...(Array.isArray(existing) ? existing : existing ? [String(existing)] : []),
            admission.setCookie,
          ];
        }
        res.writeHead(upstreamRes.statusCode ?? 502, upstreamRes.statusMessage, headers);
        upstreamRes.pipe(res);
        upstreamRes.on('error', () => res.destroy());
      },
    );
    upstream.on('error', (error: NodeJS.ErrnoException) => {
      this.options.logger.debug({ err: error, workspace: record.id, target }, 'proxy target error');
      if (res.headersSent) {
        res.destroy();
        return;
      }
      this.refuse(res, {
        status: 502,
        message: `workspace ${record.id} does not answer on port ${route.port ?? 'IDE'} (${error.code ?? error.message})\n`,
      });
    });
    req.on('aborted', () => upstream.destroy());
    req.pipe(upstream);
  }

  private handleUpgrade(req: IncomingMessage, socket: Socket, head: Buffer): void {
    const reject = (refusal: Refusal): void => {
      const headers = Object.entries({ 'content-type': 'text/plain; charset=utf-8', ...refusal.headers })
        .map(([k, v]) => `${k}: ${String(v)}\r\n`)
        .join('');
      socket.end(
        `HTTP/1.1 ${refusal.status} ${refusal.status === 401 ? 'Unauthorized' : refusal.status === 403 ? 'Forbidden' : refusal.status === 404 ? 'Not Found' : 'Error'}\r\n` +
          `${headers}content-length: ${Buffer.byteLength(refusal.message)}\r\nconnection: close\r\n\r\n${refusal.message}`,
      );
    };
    const route = this.route(req);
    if ('status' in route) return reject(route);
    const admission = this.admit(req, route);
    if (!admission.ok) return reject(admission.refusal);
    const { record, target } = admission;
    const path = this.stripToken(route.redirectTo ? '/' : route.forwardPath);
    const headers = this.forwardHeaders(req, record, route, true);
    const upstream = admission.https
      ? tlsConnect({ host: target.host, port: target.port, rejectUnauthorized: false })
      : connect({ host: target.host, port: target.port });
    const onConnect = (): void => {
      let head0 = `${req.method ?? 'GET'} ${path} HTTP/1.1\r\n`;
      for (const [name, value] of Object.entries(headers)) {
        for (const v of Array.isArray(value) ? value : [value]) head0 += `${name}: ${String(v)}\r\n`;
      }
      upstream.write(`${head0}\r\n`);
      if (head.length > 0) upstream.write(head);
      upstream.pipe(socket);
      socket.pipe(upstream);
    };
    upstream.once(admission.https ? 'secureConnect' : 'connect', onConnect);
    upstream.on('error', (error: NodeJS.ErrnoException) => {
      if (upstream.bytesRead === 0 && !socket.destroyed) {
        reject({ status: 502, message: `workspace ${record.id} does not answer (${error.code ?? error.message})\n` });
      } else socket.destroy();
    });
    socket.on('error', () => upstream.destroy());
    socket.on('close', () => upstream.destroy());
    upstream.on('close', () => socket.destroy());
  }
}
