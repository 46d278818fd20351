/**
 * The operations HTTP server (default 127.0.0.1:9501):
 * - `GET /metrics`: Prometheus metrics;
 * - `GET /live`: 200 while the process runs;
 * - `GET /ready`: 200 once the manager serves, 503 while starting or stopping;
 * - `GET /admin/maintenance`, `PUT /admin/maintenance` with `{"enabled": true|false, "until"?: "<RFC3339>"}`:
 *   the maintenance switch (when `metrics.admin` is on).
 * With `auth.tokens` configured `/admin/*` requires `authorization: Bearer <token>`; bound to anything but
 * loopback, every endpoint but `/live` and `/ready` does, and the manager refuses to start without tokens
 * (grpc/auth.ts).
 *
 * @module
 */
import { createServer } from 'node:http';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { MaintenanceMode } from '../core/maintenance.js';
import { isLoopbackAddress } from '../grpc/auth.js';
import type { TokenSet } from '../grpc/auth.js';
import type { Logger } from '../logger.js';
import type { ManagerMetrics } from '../metrics.js';

export interface OpsServerOptions {
  readonly address: string;
  readonly metrics: ManagerMetrics;
  readonly maintenance?: MaintenanceMode;
  readonly isReady: () => boolean;
  readonly logger: Logger;
  /**
   * Bearer tokens (`authorization: Bearer <token>`): when any are configured they guard `/admin/*`; on an
   * address other than loopback they guard everything but `/live` and `/ready`.
   */
  readonly tokens?: TokenSet;
}

function send(res: ServerResponse, status: number, body: string, type = 'text/plain; charset=utf-8'): void {
  res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store' });
  res.end(body);
}

async function readBody(req: IncomingMessage, limit = 64 * 1024): Promise<string> {
  let size = 0;
  const chunks: Buffer[] = [];
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > limit) throw new Error('body too large');
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks).toString('utf8');
}

export class OpsServer {
  private server: Server | undefined;
  private boundAddress = '';

  constructor(private readonly options: OpsServerOptions) {}

  get address(): string {
    return this.boundAddress;
  }

  async start(): Promise<string> {
    const server = createServer((req, res) => {
      this.handle(req, res).catch((error: unknown) => {
        // The request fails (500, or a cut connection once headers went out) and the error is logged.
        this.options.logger.error({ err: error }, 'ops server error');
        if (!res.headersSent) send(res, 500, 'internal error\n');
        else res.destroy();
      });
    });
    const index = this.options.address.lastIndexOf(':');
    const host = this.options.address.slice(0, index);
    const port = Number(this.options.address.slice(index + 1));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => {
        server.off('error', reject);
        resolve();
      });
    });
    const bound = server.address();
    this.boundAddress = `${host}:${typeof bound === 'object' && bound ? bound.port : port}`;
    this.server = server;
    this.options.logger.info({ address: this.boundAddress }, 'metrics server listening');
    return this.boundAddress;
  }

  async stop(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    if (!server) return;
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = (req.url ?? '/').split('?')[0];
    const method = req.method ?? 'GET';
    const tokens = this.options.tokens;
    const open = path === '/live' || path === '/ready';
    const guarded = !open && (path.startsWith('/admin') || !isLoopbackAddress(this.options.address));
    if (guarded && (tokens?.size ?? 0) > 0 && !tokens!.accepts(req.headers.authorization)) {
      res.setHeader('www-authenticate', 'Bearer');
      return send(res, 401, 'unauthorized: send "authorization: Bearer <token>"\n');
    }
    if (guarded && (tokens?.size ?? 0) === 0 && !isLoopbackAddress(this.options.address)) {
      // The config check refuses this setup; never serve it openly should it be reached another way.
      return send(res, 401, 'unauthorized: no tokens configured\n');
    }
    if (path === '/metrics' && method === 'GET') {
      const registry = this.options.metrics.registry;
      send(res, 200, await registry.metrics(), registry.contentType);
      return;
    }
    if (path === '/live') return send(res, 200, 'ok\n');
    if (path === '/ready') return this.options.isReady() ? send(res, 200, 'ready\n') : send(res, 503, 'not ready\n');
    if (path === '/admin/maintenance' && this.options.maintenance) {
      const maintenance = this.options.maintenance;
      if (method === 'GET') return send(res, 200, `${JSON.stringify(maintenance.state)}\n`, 'application/json');
      if (method === 'PUT' || method === 'POST') {
        let body: { enabled?: unknown; until?: unknown };
        try {
          body = JSON.parse((await readBody(req)) || '{}') as typeof body;
        } catch {
          // Deliberate: a malformed body is the client's error, answered with 400.
          return send(res, 400, 'expected JSON: {"enabled": true|false, "until"?: "<RFC3339>"}\n');
        }
        if (typeof body.enabled !== 'boolean') return send(res, 400, 'enabled: expected true or false\n');
        let until: Date | undefined;
        if (body.until !== undefined) {
          until = new Date(String(body.until));
          if (Number.isNaN(until.getTime())) return send(res, 400, 'until: expected an RFC 3339 time\n');
        }
        const state = await maintenance.set(body.enabled, until);
        this.options.logger.info({ maintenance: state }, 'maintenance switched through the admin endpoint');
        return send(res, 200, `${JSON.stringify(state)}\n`, 'application/json');
      }
      return send(res, 405, 'use GET or PUT\n');
    }
    send(res, 404, 'not found: try /metrics, /live, /ready\n');
  }
}
