/**
 * The readiness probe: its schedule (pauses a twentieth of the time waited, so a workspace up a few ms after its
 * launch is seen then, not at the next intervalMs), and a real HTTP server on loopback that is unhealthy, then healthy.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { describe, expect, it } from 'vitest';
import { probePause, waitReady } from './readiness.js';

describe('readiness', () => {
  it('pauses a twentieth of the time waited, at least 5 ms and at most intervalMs', () => {
    expect([0, 50, 100, 200, 1_000, 5_000].map((waited) => probePause(waited, 100))).toEqual([5, 5, 5, 10, 50, 100]);
    expect(probePause(0, 3)).toBe(3);
    expect(probePause(60_000, 1_000)).toBe(1_000);
  });

  it('reports ready at the first answer below 500, and not ready when aborted', async () => {
    let requests = 0;
    const server = http.createServer((_req, res) => {
      requests += 1;
      res.statusCode = requests < 4 ? 503 : 204;
      res.end();
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const { port } = server.address() as AddressInfo;
    try {
      const readiness = { kind: 'http', path: '/', intervalMs: 1_000, probeTimeoutMs: 5_000 } as const;
      expect(await waitReady(readiness, '127.0.0.1', port, new AbortController().signal)).toBe(true);
      expect(requests).toBe(4);
      const aborted = new AbortController();
      aborted.abort();
      expect(await waitReady(readiness, '127.0.0.1', port, aborted.signal)).toBe(false);
    } finally {
      server.close();
    }
  });

  it('closes each probed connection once the status is in, whatever the body (red team round 12, H1)', async () => {
    // A workspace answering with a body that never ends: 503 first (probed again), then 200.
    let requests = 0;
    const open = new Set<http.ServerResponse>();
    const chunk = Buffer.alloc(64 * 1024, 0x61);
    const server = http.createServer((_req, res) => {
      requests += 1;
      res.writeHead(requests < 3 ? 503 : 200, { 'content-type': 'text/plain' });
      open.add(res);
      res.on('close', () => open.delete(res));
      const pump = (): void => {
        while (!res.destroyed && res.write(chunk));
      };
      res.on('drain', pump);
      pump();
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const { port } = server.address() as AddressInfo;
    try {
      const readiness = { kind: 'http', path: '/', intervalMs: 1_000, probeTimeoutMs: 5_000 } as const;
      expect(await waitReady(readiness, '127.0.0.1', port, new AbortController().signal)).toBe(true);
      expect(requests).toBe(3);
      // Every endless answer was cut: the server sees each of its responses closed.
      for (let i = 0; i < 200 && open.size > 0; i++) await new Promise((resolve) => setTimeout(resolve, 10));
      expect(open.size).toBe(0);
    } finally {
      server.closeAllConnections();
      server.close();
    }
  });
});
