// /live and /ready on a real loopback server: each answers 503 with the checks that fail, 200 once they pass.
import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { StartedHttpServer } from './http-server.js';
import { startHttpServer } from './http-server.js';

describe('the daemon HTTP server', () => {
  let stuck: string | undefined;
  let server: StartedHttpServer;
  beforeAll(async () => {
    server = await startHttpServer(
      '127.0.0.1:0',
      new Registry(),
      [{ name: 'disk-space', check: () => undefined }],
      [{ name: 'backup-workers', check: () => stuck }],
    );
  });
  afterAll(async () => {
    await server.close();
  });

  it('answers /live 503 naming a failing liveness check, and 200 once it passes', async () => {
    stuck = '2 backup worker threads are stuck in calls that never returned (pool of 2)';
    const failing = await fetch(`http://${server.address}/live`);
    expect(failing.status).toBe(503);
    expect(await failing.json()).toEqual({ live: false, failing: [{ name: 'backup-workers', reason: stuck }] });
    // Readiness is about taking new work; it does not include liveness.
    expect((await fetch(`http://${server.address}/ready`)).status).toBe(200);
    stuck = undefined;
    const live = await fetch(`http://${server.address}/live`);
    expect(live.status).toBe(200);
    expect(await live.text()).toBe('ok\n');
  });
});
