import { createServer } from 'node:http';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Registry } from 'prom-client';

export interface ReadinessCheck {
  readonly name: string;
  /** Undefined when healthy, otherwise the reason. */
  check(): string | undefined;
}

export interface StartedHttpServer {
  readonly server: Server;
  readonly address: string;
  close(): Promise<void>;
}

/**
 * The daemon's HTTP side: `/metrics` (Prometheus), `/live` (the process answers and every liveness check passes:
 * a restart is the remedy otherwise) and `/ready` (every readiness check passes). Each answers 503 with the failing
 * checks.
 */
export async function startHttpServer(
  address: string,
  registry: Registry,
  checks: readonly ReadinessCheck[],
  liveChecks: readonly ReadinessCheck[] = [],
): Promise<StartedHttpServer> {
  const failingOf = (list: readonly ReadinessCheck[]): Array<{ name: string; reason: string | undefined }> =>
    list.map((c) => ({ name: c.name, reason: c.check() })).filter((c) => c.reason !== undefined);
  const server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD' }).end();
      return;
    }
    if (path === '/live') {
      const failing = failingOf(liveChecks);
      if (failing.length === 0) res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
      else
        res.writeHead(503, { 'content-type': 'application/json' }).end(`${JSON.stringify({ live: false, failing })}\n`);
      return;
    }
    if (path === '/ready') {
      const failing = failingOf(checks);
      const body = JSON.stringify({ ready: failing.length === 0, failing });
      res.writeHead(failing.length === 0 ? 200 : 503, { 'content-type': 'application/json' }).end(`${body}\n`);
      return;
    }
    if (path === '/metrics') {
      registry.metrics().then(
        (text) => res.writeHead(200, { 'content-type': registry.contentType }).end(text),
        (error: unknown) => res.writeHead(500).end(String(error)),
      );
      return;
    }
    res.writeHead(404).end('not found\n');
  });
  const colon = address.lastIndexOf(':');
  const host = address.slice(0, colon).replace(/^\[|\]$/g, '');
  const port = Number(address.slice(colon + 1));
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  const bound = server.address() as AddressInfo;
  const shownHost = bound.family === 'IPv6' ? `[${bound.address}]` : bound.address;
  return {
    server,
    address: `${shownHost}:${bound.port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
