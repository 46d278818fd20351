/**
 * The readiness probe: its schedule (short pauses first, so a workspace up a few ms after its launch is seen then,
 * not at the next intervalMs), and a real HTTP server on loopback that is unhealthy, then healthy.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { describe, expect, it } from 'vitest';
import { probePauses, waitReady } from './readiness.js';

const first = (n: number, pauses: Iterator<number>): number[] => Array.from({ length: n }, () => pauses.next().value);

describe('readiness', () => {
  it('pauses 5 ms, doubling up to intervalMs, then intervalMs for good', () => {
    expect(first(9, probePauses(100))).toEqual([5, 10, 20, 40, 80, 100, 100, 100, 100]);
    expect(first(3, probePauses(3))).toEqual([3, 3, 3]);
    expect(first(4, probePauses(1_000))).toEqual([5, 10, 20, 40]);
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
});
