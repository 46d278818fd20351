import { access, chown, lstat, mkdir, mkdtemp, rm } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Client, credentials, status } from '@grpc/grpc-js';
import type { PluginLogger } from '@workbay/api';
import type { NamespaceOps } from '@workbay/nsinsider';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DaemonMetrics } from '../health/metrics.js';
import { FloodGuard } from './flood-guard.js';
import { connects, startFloodHost, until } from '../test-support/iws-flood.js';
import type { IwsHost } from './host.js';
import { listenIws } from './server.js';
import { createInWorkspaceService } from './service.js';

// A workspace flooding its socket, against the real host: unix sockets, grpc-js clients, real listeners taken away
// and bound again. Small thresholds and cooldowns; behaviour only, never timings. Runs as root (socket owners).

const OWNER = { uid: 4242, gid: 4343 };
const WORKSPACE_INFO = '/iws.WorkspaceInfoService/WorkspaceInfo';

/** One grpc-js call on its own channel (or the given one): its status code, 0 for OK. */
function callInfo(target: string | Client): Promise<number> {
  const client = typeof target === 'string' ? new Client(target, credentials.createInsecure()) : target;
  return new Promise<number>((resolve) =>
    client.makeUnaryRequest(
      WORKSPACE_INFO,
      (b: Buffer) => b,
      (b: Buffer) => b,
      Buffer.alloc(0),
      { deadline: Date.now() + 5000 },
      (error) => resolve(error ? error.code : status.OK),
    ),
  ).finally(() => {
    if (typeof target === 'string') client.close();
  });
}

describe('a workspace flooding its in-workspace service socket', () => {
  let scratch: string;
  let host: IwsHost;
  const metrics = new DaemonMetrics({ defaultMetrics: false });
  const warnings: string[] = [];
  const logger: PluginLogger = {
    child: () => logger,
    trace: () => undefined,
    debug: () => undefined,
    info: () => undefined,
    warn: (_fields: unknown, message: string) => void warnings.push(message),
    error: () => undefined,
    fatal: () => undefined,
  } as unknown as PluginLogger;
  const penalties = async (reason: string): Promise<number> =>
    (await metrics.iwsPenalties.get()).values.find((v) => v.labels.reason === reason)?.value ?? 0;

  beforeAll(async () => {
    scratch = await mkdtemp(join(tmpdir(), 'iws-flood-'));
    for (const id of ['flood', 'calm', 'conns', 'polite'])
      await mkdir(join(scratch, 'content', id), { recursive: true });
    await chown(join(scratch, 'content', 'flood'), OWNER.uid, OWNER.gid);
    host = await startFloodHost(scratch, ['flood', 'calm', 'conns', 'polite'], {
      config: { maxConnections: 8 },
      logger,
      metrics,
    });
  });

  afterAll(async () => {
    await host?.stop();
    if (scratch) await rm(scratch, { recursive: true, force: true });
  });

  it('loses its socket for the cooldown while a neighbour keeps answering; it comes back alike', async () => {
    const socket = host.socketPath('flood');
    const before = await lstat(socket);
    expect([before.mode & 0o7777, before.uid, before.gid]).toEqual([0o600, OWNER.uid, OWNER.gid]);
    const flooder = new Client(`unix:${socket}`, credentials.createInsecure());
    const neighbour = new Client(`unix:${host.socketPath('calm')}`, credentials.createInsecure());
    try {
      // A flood on one channel, the neighbour calling meanwhile: refusals first, then the connection is gone.
      const [flood, calm] = await Promise.all([
        Promise.all(Array.from({ length: 300 }, () => callInfo(flooder))),
        (async () => [await callInfo(neighbour), await callInfo(neighbour)])(),
      ]);
      expect(flood).toContain(status.RESOURCE_EXHAUSTED);
      expect(flood).toContain(status.UNAVAILABLE);
      // Cut off at the threshold; what the channel had in flight then (16 streams at most) may still be answered.
      expect(flood.filter((c) => c === status.RESOURCE_EXHAUSTED).length).toBeLessThanOrEqual(40 + 16);
      expect(calm).toEqual([status.OK, status.OK]);

      // The cooldown: the socket file stays where it was, but nobody listens; the neighbour is not affected.
      expect(await connects(socket)).toBe('ECONNREFUSED');
      expect(await callInfo(`unix:${socket}`)).toBe(status.UNAVAILABLE);
      expect(await callInfo(neighbour)).toBe(status.OK);
      expect(await penalties('calls')).toBe(1);
      expect(warnings).toContain('workspace flooded its in-workspace service socket: not served for a cooldown');

      // Back after the cooldown: the same path, mode and owner, and it answers.
      expect(await until(async () => (await connects(socket)) === true, 10_000)).toBe(true);
      const after = await lstat(socket);
      expect(after.isSocket()).toBe(true);
      expect([after.mode & 0o7777, after.uid, after.gid]).toEqual([0o600, OWNER.uid, OWNER.gid]);
      expect(await callInfo(`unix:${socket}`)).toBe(status.OK);
    } finally {
      flooder.close();
      neighbour.close();
    }
  });

  it('loses its socket when it keeps opening connections beyond the cap', async () => {
    const socket = host.socketPath('conns');
    const opened = await Promise.all(
      Array.from(
        { length: 120 },
        () =>
          new Promise<void>((resolve) => {
            const s = connect(socket);
            s.on('error', () => resolve());
            s.on('close', () => resolve());
            s.on('connect', () => resolve());
            setTimeout(() => s.destroy(), 3000).unref();
          }),
      ),
    );
    expect(opened).toHaveLength(120);
    expect(await until(async () => (await connects(socket)) === 'ECONNREFUSED', 5000)).toBe(true);
    expect(await penalties('connections')).toBe(1);
    expect(await callInfo(`unix:${host.socketPath('calm')}`)).toBe(status.OK);
    expect(await until(async () => (await connects(socket)) === true, 10_000)).toBe(true);
  });

  it('never penalises a client calling at a legitimate pace, refused or not', async () => {
    const socket = host.socketPath('polite');
    const client = new Client(`unix:${socket}`, credentials.createInsecure());
    const before = (await penalties('calls')) + (await penalties('connections'));
    try {
      // Four calls a second for three seconds: beyond the WorkspaceInfo rate limit, so most are refused.
      const codes: number[] = [];
      for (let i = 0; i < 12; i++) {
        codes.push(await callInfo(client));
        await sleep(250);
      }
      expect(codes).toContain(status.RESOURCE_EXHAUSTED);
      expect(codes).not.toContain(status.UNAVAILABLE);
      expect(await connects(socket)).toBe(true);
      expect((await penalties('calls')) + (await penalties('connections'))).toBe(before);
    } finally {
      client.close();
    }
  });

  it('a listener closed during its cooldown stays closed: the pending restore is cancelled', async () => {
    const socketPath = join(scratch, 'closing', 'daemon.sock');
    const guard = new FloodGuard({
      penaltyThreshold: 1,
      penaltyWindowMs: 10_000,
      penaltyCooldownMs: 300,
      penaltyMaxCooldownMs: 300,
    });
    const handle = await listenIws(
      createInWorkspaceService({ ops: {} as NamespaceOps, workspace: { workspaceId: 'w', initPid: 1 } }),
      {
        socketPath,
        flood: guard,
      },
    );
    guard.offence('calls');
    guard.offence('calls');
    expect(guard.suspended).toBe(true);
    expect(await until(async () => (await connects(socketPath)) === 'ECONNREFUSED', 5000)).toBe(true);
    await handle.close(0);
    await sleep(600);
    await expect(access(socketPath)).rejects.toMatchObject({ code: 'ENOENT' });
  });
});
