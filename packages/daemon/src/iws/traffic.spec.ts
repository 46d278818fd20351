import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Client, credentials, status } from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DaemonMetrics } from '../health/metrics.js';
import { connects, startFloodHost, until } from '../test-support/iws-flood.js';
import type { IwsHost } from './host.js';

// Floods grpc-js answers itself (unknown methods, oversized messages) never reach the service's gate: the listener's
// traffic meter must catch them. Real host, unix sockets and grpc-js clients; behaviour only, never timings.

const WORKSPACE_INFO = '/iws.WorkspaceInfoService/WorkspaceInfo';
const UNKNOWN = '/iws.NoSuchService/Nothing';

/** A channel with connections of its own (grpc-js otherwise shares one per target among clients). */
function channel(socket: string): Client {
  return new Client(`unix:${socket}`, credentials.createInsecure(), { 'grpc.use_local_subchannel_pool': 1 });
}

/** One call: its status code, 0 for OK. */
function call(client: Client, method: string, body: Buffer = Buffer.alloc(0)): Promise<number> {
  return new Promise<number>((resolve) =>
    client.makeUnaryRequest(
      method,
      (b: Buffer) => b,
      (b: Buffer) => b,
      body,
      { deadline: Date.now() + 5000 },
      (error) => resolve(error ? error.code : status.OK),
    ),
  );
}

/** 4 connections x 16 streams of `method` calls until one is UNAVAILABLE (the socket was taken) or 15 s pass. */
async function flood(socket: string, method: string, body?: Buffer): Promise<number[]> {
  const codes: number[] = [];
  const end = Date.now() + 15_000;
  const clients = Array.from({ length: 4 }, () => channel(socket));
  try {
    await Promise.all(
      clients.flatMap((client) =>
        Array.from({ length: 16 }, async () => {
          while (!codes.includes(status.UNAVAILABLE) && Date.now() < end) codes.push(await call(client, method, body));
        }),
      ),
    );
  } finally {
    for (const client of clients) client.close();
  }
  return codes;
}

describe('the traffic meter of a workspace socket', () => {
  let scratch: string;
  let host: IwsHost;
  const metrics = new DaemonMetrics({ defaultMetrics: false });
  const penalties = async (reason: string): Promise<number> =>
    (await metrics.iwsPenalties.get()).values.find((v) => v.labels.reason === reason)?.value ?? 0;
  const ids = ['unknown', 'oversized', 'calm', 'polite'];

  beforeAll(async () => {
    scratch = await mkdtemp(join(tmpdir(), 'iws-traffic-'));
    host = await startFloodHost(scratch, ids, {
      // 16 KiB a second: a slow machine's flood of unknown methods (~80 bytes each) still exceeds it many times.
      config: { penaltyBytesPerSecond: 16 * 1024 },
      metrics,
    });
  });

  afterAll(async () => {
    await host?.stop();
    if (scratch) await rm(scratch, { recursive: true, force: true });
  });

  /** Floods `id`'s socket; checks the penalty, the cooldown and a neighbour meanwhile; waits for the end. */
  async function expectPenalised(id: string, method: string, refusal: status, body?: Buffer): Promise<void> {
    const socket = host.socketPath(id);
    const neighbour = channel(host.socketPath('calm'));
    try {
      const [codes, calm] = await Promise.all([
        flood(socket, method, body),
        (async () => {
          await sleep(500);
          return [await call(neighbour, WORKSPACE_INFO), await call(neighbour, WORKSPACE_INFO)];
        })(),
      ]);
      // Answered by grpc-js alone (the service never saw these calls), until the socket was taken away.
      expect(codes).toContain(refusal);
      expect(codes).toContain(status.UNAVAILABLE);
      expect(codes.filter((c) => c !== refusal && c !== status.UNAVAILABLE)).toEqual([]);
      expect(calm).toEqual([status.OK, status.OK]);
      expect(await penalties('traffic')).toBeGreaterThanOrEqual(1);
      expect(await penalties('calls')).toBe(0);

      expect(await connects(socket)).toBe('ECONNREFUSED');
      expect(await call(neighbour, WORKSPACE_INFO)).toBe(status.OK);
      expect(await until(async () => (await connects(socket)) === true, 10_000)).toBe(true);
    } finally {
      neighbour.close();
    }
  }

  it('takes the socket of a workspace flooding it with calls to an unknown method', async () => {
    await expectPenalised('unknown', UNKNOWN, status.UNIMPLEMENTED);
  });

  it('takes the socket of a workspace flooding it with oversized messages', async () => {
    const before = await penalties('traffic');
    await expectPenalised('oversized', WORKSPACE_INFO, status.RESOURCE_EXHAUSTED, Buffer.alloc(70 * 1024, 1));
    expect(await penalties('traffic')).toBe(before + 1);
  });

  it('never penalises a client calling at a legitimate pace', async () => {
    const socket = host.socketPath('polite');
    const client = channel(socket);
    const before = (await penalties('traffic')) + (await penalties('calls'));
    try {
      // Four small calls a second for four seconds (some refused by the rate limit, some by grpc-js), on a
      // connection of its own and on a fresh one each second: four samples of the meter at least.
      const codes: number[] = [];
      for (let i = 0; i < 16; i++) {
        codes.push(await call(client, i % 2 === 0 ? WORKSPACE_INFO : UNKNOWN));
        if (i % 4 === 0) {
          const fresh = channel(socket);
          codes.push(await call(fresh, WORKSPACE_INFO));
          fresh.close();
        }
        await sleep(250);
      }
      expect(codes).toContain(status.OK);
      expect(codes).toContain(status.UNIMPLEMENTED);
      expect(codes).not.toContain(status.UNAVAILABLE);
      expect(await connects(socket)).toBe(true);
      expect((await penalties('traffic')) + (await penalties('calls'))).toBe(before);
    } finally {
      client.close();
    }
  });
});
