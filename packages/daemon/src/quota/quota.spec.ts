import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { firstValueFrom } from 'rxjs';
import { filter } from 'rxjs/operators';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { credentials, loadPackageDefinition } from '@grpc/grpc-js';
import type { GrpcObject, ServiceClientConstructor } from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';
import { protoPath as healthProtoPath } from 'grpc-health-check';
import { isWorkbayError } from '@workbay/api';
import type { InvalidArgumentError } from '@workbay/api';
import type { ContentEvent } from '../content-service.js';
import type { HostOps } from '../host-ops/host-ops.js';
import { createHostOps } from '../host-ops/host-ops.js';
import { startTestDaemon } from '../test-support/daemon-harness.js';
import type { TestDaemon } from '../test-support/daemon-harness.js';
import { tempDir } from '../test-support/tree.js';
import { BlkioThrottle, blkioRoot, ioLimitDefaults } from './io-throttle.js';
import { probeQuotaSupport } from './quotas.js';
import { exists, errorOf } from '../test-support/outcomes.js';

const empty = { spec: { $case: 'empty' as const, value: {} } };
const MiB = 1024 * 1024;

async function healthOf(address: string): Promise<string> {
  const definition = loadSync(healthProtoPath, { keepCase: true, enums: String });
  const pkg = loadPackageDefinition(definition) as unknown as { grpc: { health: { v1: GrpcObject } } };
  const Health = pkg.grpc.health.v1['Health'] as ServiceClientConstructor;
  const client = new Health(address, credentials.createInsecure());
  try {
    return await new Promise<string>((resolve, reject) =>
      client['Check']!({ service: '' }, (error: Error | null, response: { status: string }) =>
        error ? reject(error) : resolve(response.status),
      ),
    );
  } finally {
    client.close();
  }
}

/** What a node reboot does to a device's IO rules (left by a daemon stopped with its workspace running). */
async function liftRules(device: string): Promise<void> {
  await new BlkioThrottle(ioLimitDefaults).lift(device);
}

describe('disk quotas and the disk guard', () => {
  let work: Awaited<ReturnType<typeof tempDir>>;
  let t: TestDaemon | undefined;
  const ops = createHostOps();
  beforeEach(async () => {
    work = await tempDir('workbay-quota-');
  });
  afterEach(async () => {
    await t?.stop();
    t = undefined;
    await work.cleanup();
  });

  it('detects which quota modes this host supports (XFS project quotas are unavailable here, loop images work)', async () => {
    const support = await probeQuotaSupport(ops, work.path);
    const byMode = Object.fromEntries(support.map((s) => [s.mode, s]));
    expect(byMode['watch']?.available).toBe(true);
    expect(byMode['loop']?.available, 'loop images need root, mkfs.ext4 and /dev/loop-control').toBe(true);
    // The working area here is not an XFS filesystem mounted with prjquota (and the kernel has no quota support).
    expect(byMode['xfs']?.available).toBe(false);
    expect(byMode['xfs']?.reason).toMatch(/not XFS|prjquota|xfs_quota/);
  });

  it('loop mode: the workspace gets its own ext4 image; writing past it fails with ENOSPC, backups still work, dispose releases it', async () => {
    t = await startTestDaemon({ root: work.path, config: { quota: { mode: 'loop' } } });
    const { contentLocation } = await t.client.initWorkspace({
      id: 'q1',
      metadata: { owner: 'o', metaId: 'm-q1' },
      initializer: empty,
      storageQuotaBytes: 32 * MiB,
    });
    expect(await ops.isMountPoint(contentLocation)).toBe(true);
    const image = join(t.workingArea, '.images', 'q1.img');
    expect(await exists(image)).toBe(true);
    expect((await ops.mountOf(contentLocation))?.fsType).toBe('ext4');
    // Direct IO to the image: its blocks are not cached a second time, outside the workspace's memory limit.
    const loopDevice = (await ops.mountOf(contentLocation))!.source;
    expect(execFileSync('losetup', ['-n', '-O', 'DIO', loopDevice], { encoding: 'utf8' }).trim()).toBe('1');
    expect(await exists(join(contentLocation, 'lost+found'))).toBe(false); // clean slate
    await writeFile(join(contentLocation, 'fits.bin'), randomBytes(4 * MiB));
    const error = (await writeFile(join(contentLocation, 'too-big.bin'), Buffer.alloc(40 * MiB, 1)).catch(
      (e: unknown) => e,
    )) as NodeJS.ErrnoException;
    expect(error?.code).toBe('ENOSPC');
    // The backup reads the full disk fine.
    const { url } = await t.client.backupWorkspace({ id: 'q1' });
    expect(url).toMatch(/m-q1/);
    // A restart where the image is no longer mounted (e.g. a node reboot) mounts it again.
    await t.stop();
    await liftRules((await ops.mountOf(contentLocation))!.device);
    await ops.unmount(contentLocation);
    expect(await ops.isMountPoint(contentLocation)).toBe(false);
    t = await startTestDaemon({ root: work.path, config: { quota: { mode: 'loop' } } });
    expect(await ops.isMountPoint(contentLocation)).toBe(true);
    expect((await readFile(join(contentLocation, 'fits.bin'))).length).toBe(4 * MiB);
    await t.client.disposeWorkspace({ id: 'q1', backup: true });
    expect(await ops.isMountPoint(contentLocation)).toBe(false);
    expect(await exists(image)).toBe(false);
    expect(await exists(contentLocation)).toBe(false);
    // The restored workspace gets its data back (within a new image).
    const again = await t.client.initWorkspace({
      id: 'q2',
      metadata: { owner: 'o', metaId: 'm-q1' },
      initializer: empty,
      storageQuotaBytes: 32 * MiB,
    });
    expect(again.contentSource).toBe('from-backup');
    expect((await readFile(join(again.contentLocation, 'fits.bin'))).length).toBe(4 * MiB);
    await t.client.disposeWorkspace({ id: 'q2', backup: false });
    expect(await ops.isMountPoint(again.contentLocation)).toBe(false);
  });

  it('loop mode: a ready workspace writes to its image at quota.io.writeBandwidth, also through the page cache; a restart sets the rule again, disposal lifts it', async () => {
    const io = { writeBandwidth: '16Mi', readBandwidth: 0, readIops: 0, writeIops: 0 };
    t = await startTestDaemon({ root: work.path, config: { quota: { mode: 'loop', io } } });
    const { contentLocation } = await t.client.initWorkspace({
      id: 'qio',
      metadata: { owner: 'o', metaId: 'm-qio' },
      initializer: empty,
      storageQuotaBytes: 128 * MiB,
    });
    const rules = (): Promise<string> => readFile(join(blkioRoot, 'blkio.throttle.write_bps_device'), 'utf8');
    const device = (await ops.mountOf(contentLocation))!.device;
    expect(device).toMatch(/^7:\d+$/);
    expect((await rules()).split('\n')).toContain(`${device} ${16 * MiB}`);
    // Buffered writes and an fsync: the flusher's writeback of the image is throttled too, not only direct IO. A
    // lower bound (48 MiB at 16 MiB/s is 3 s; unthrottled it took 0.2 s here), so a slow machine cannot fail it.
    const started = performance.now();
    execFileSync('dd', ['if=/dev/zero', `of=${join(contentLocation, 'flood')}`, 'bs=1M', 'count=48', 'conv=fsync'], {
      stdio: 'ignore',
    });
    expect(performance.now() - started).toBeGreaterThan(2_000);

    // A node reboot loses the rule and the mount; the restarted daemon mounts the image and sets the rule again.
    await t.stop();
    await liftRules(device);
    await ops.unmount(contentLocation);
    t = await startTestDaemon({ root: work.path, config: { quota: { mode: 'loop', io } } });
    const remounted = (await ops.mountOf(contentLocation))!.device;
    expect((await rules()).split('\n')).toContain(`${remounted} ${16 * MiB}`);

    await t.client.disposeWorkspace({ id: 'qio', backup: true });
    expect(await rules()).not.toContain(`${remounted} `);
  });

  it('loop mode: an image that is not mounted is never backed up (it would replace the last good backup with nothing)', async () => {
    t = await startTestDaemon({ root: work.path, config: { quota: { mode: 'loop' } } });
    const { contentLocation } = await t.client.initWorkspace({
      id: 'um',
      metadata: { owner: 'o', metaId: 'm-um' },
      initializer: empty,
      storageQuotaBytes: 32 * MiB,
    });
    await writeFile(join(contentLocation, 'data.bin'), randomBytes(MiB));
    await t.client.backupWorkspace({ id: 'um' });
    const before = await t.daemon.storage?.stat('workbay-user-o', 'workspaces/m-um/full.manifest');
    await liftRules((await ops.mountOf(contentLocation))!.device);
    await ops.unmount(contentLocation);
    const error = await errorOf(t.client.backupWorkspace({ id: 'um' }));
    expect(isWorkbayError(error, 'failed-precondition')).toBe(true);
    expect(error.message).toMatch(/not mounted/);
    expect(
      isWorkbayError(await errorOf(t.client.disposeWorkspace({ id: 'um', backup: true })), 'failed-precondition'),
    ).toBe(true);
    expect((await t.daemon.storage?.stat('workbay-user-o', 'workspaces/m-um/full.manifest'))?.digest).toBe(
      before?.digest,
    );
    await t.client.disposeWorkspace({ id: 'um', backup: false });
    expect(await exists(join(t.workingArea, '.images', 'um.img'))).toBe(false);
  });

  it('loop mode: a quota too small for an ext4 image is INVALID_ARGUMENT naming storage_quota_bytes', async () => {
    t = await startTestDaemon({ root: work.path, config: { quota: { mode: 'loop' } } });
    const error = await errorOf(
      t.client.initWorkspace({
        id: 'tiny',
        metadata: { owner: 'o', metaId: 'm-tiny' },
        initializer: empty,
        storageQuotaBytes: 1024,
      }),
    );
    expect((error as InvalidArgumentError).field).toBe('storage_quota_bytes');
  });

  it('watch mode: a size watcher reports workspaces over their limit', async () => {
    t = await startTestDaemon({ root: work.path, config: { quota: { mode: 'watch', watchInterval: '100ms' } } });
    const exceeded = firstValueFrom(
      t.daemon.service.events$.pipe(filter((e: ContentEvent) => e.type === 'quota-exceeded')),
    );
    const { contentLocation } = await t.client.initWorkspace({
      id: 'w1',
      metadata: { owner: 'o', metaId: 'm-w1' },
      initializer: empty,
      storageQuotaBytes: MiB,
    });
    await writeFile(join(contentLocation, 'big.bin'), randomBytes(2 * MiB));
    const event = await exceeded;
    expect(event).toMatchObject({ type: 'quota-exceeded', instanceId: 'w1', limitBytes: MiB });
    expect((event as { usedBytes: number }).usedBytes).toBeGreaterThan(MiB);
    expect(await t.daemon.metrics.registry.getSingleMetricAsString('workbay_daemon_quota_exceeded_total')).toMatch(
      / 1$/m,
    );
  });

  it('disk guard: below the free-space threshold the daemon is not ready and refuses new workspaces', async () => {
    const real = createHostOps();
    let fakeFree: number | undefined;
    const hostOps: HostOps = {
      ...real,
      statfs: async (path) => {
        const stats = await real.statfs(path);
        return fakeFree === undefined ? stats : { ...stats, freeBytes: fakeFree };
      },
    };
    t = await startTestDaemon({
      root: work.path,
      config: { diskGuard: { minFree: '1GiB', interval: '100ms' } },
      overrides: { hostOps },
    });
    expect(await healthOf(t.daemon.address)).toBe('SERVING');
    fakeFree = 200 * MiB;
    const error = await errorOf(
      t.client.initWorkspace({ id: 'g1', metadata: { owner: 'o', metaId: 'm-g1' }, initializer: empty }),
    );
    expect(isWorkbayError(error, 'resource-exhausted')).toBe(true);
    expect(error.message).toMatch(new RegExp(`${200 * MiB} bytes free in .*, threshold ${1024 * MiB} bytes`));
    expect((await t.client.isWorkspaceExists({ id: 'g1' })).exists).toBe(false);
    const ready = await fetch(`http://${t.daemon.httpAddress}/ready`);
    expect(ready.status).toBe(503);
    expect(await ready.text()).toMatch(/disk-space/);
    expect(await healthOf(t.daemon.address)).toBe('NOT_SERVING');
    expect(await t.daemon.metrics.registry.getSingleMetricAsString('workbay_daemon_disk_free_bytes')).toContain(
      String(200 * MiB),
    );
    // Space comes back: ready again.
    fakeFree = undefined;
    for (let i = 0; i < 50 && (await healthOf(t.daemon.address)) !== 'SERVING'; i++) await sleep(50);
    expect(await healthOf(t.daemon.address)).toBe('SERVING');
    expect((await fetch(`http://${t.daemon.httpAddress}/ready`)).status).toBe(200);
    await t.client.initWorkspace({ id: 'g2', metadata: { owner: 'o', metaId: 'm-g2' }, initializer: empty });
  });
});
