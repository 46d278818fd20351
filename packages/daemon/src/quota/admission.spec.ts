import { mkdir, readFile, readdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { isWorkbayError } from '@workbay/api';
import { parseDaemonConfig } from '../config.js';
import { DiskOvercommitError } from '../errors.js';
import { createHostOps } from '../host-ops/host-ops.js';
import { mountScratchDisk, unmountUnder } from '../test-support/loop-disk.js';
import { tempDir } from '../test-support/tree.js';
import { runProcess } from '../util/process.js';
import type { LoopAdmissionSettings } from './admission.js';
import type { QuotaHandle } from './disk-quota.js';
import { LoopDiskQuota } from './loop-quota.js';
import { createDiskQuota } from './quotas.js';
import { exists, errorOf } from '../test-support/outcomes.js';

const MiB = 1024 * 1024;
const isRoot = process.getuid?.() === 0;
const ops = createHostOps();

/** Loop devices whose backing file is `path` (a refused or released image must leave none). */
async function loopDevicesOf(path: string): Promise<string[]> {
  const out: string[] = [];
  for (const dev of await readdir('/sys/block')) {
    if (!dev.startsWith('loop')) continue;
    const backing = await readFile(`/sys/block/${dev}/loop/backing_file`, 'utf8').catch(() => '');
    if (backing.trim() === path) out.push(dev);
  }
  return out;
}

/** Fills a mounted image until ENOSPC and flushes it to the image file. */
async function fill(dir: string): Promise<void> {
  const error = (await writeFile(join(dir, 'fill.bin'), Buffer.alloc(512 * MiB, 1)).catch(
    (e: unknown) => e,
  )) as NodeJS.ErrnoException;
  expect(error?.code).toBe('ENOSPC');
  await runProcess('sync', []);
}

/**
 * The "node disk": a small ext4 filesystem of its own holding the images, so that the tests can fill it without
 * touching the host's.
 */
describe.skipIf(!isRoot)('loop quota admission (real loop devices on a 400 MiB disk)', () => {
  let work: Awaited<ReturnType<typeof tempDir>>;
  let disk: string;
  let imageDir: string;
  const applied: { quota: LoopDiskQuota; dir: string; handle: QuotaHandle }[] = [];
  const settings: Partial<LoopAdmissionSettings> = { reserveBytes: 64 * MiB, reserveFraction: 0 };

  beforeEach(async () => {
    work = await tempDir('workbay-admission-');
    disk = join(work.path, 'disk');
    imageDir = join(disk, '.images');
    await mkdir(disk);
    await mountScratchDisk(work.path, disk, 400 * MiB);
  });
  afterEach(async () => {
    for (const a of applied.splice(0)) await a.quota.release('', a.dir, a.handle).catch(() => undefined);
    await unmountUnder(work.path);
    await work.cleanup();
  });

  async function apply(quota: LoopDiskQuota, id: string, bytes: number): Promise<string> {
    const dir = join(work.path, 'ws', id);
    await mkdir(dir, { recursive: true });
    const handle = await quota.apply(id, dir, bytes);
    applied.push({ quota, dir, handle });
    return dir;
  }

  async function release(id: string): Promise<void> {
    const index = applied.findIndex((a) => a.handle.image?.endsWith(`/${id}.img`));
    const [a] = applied.splice(index, 1);
    await a!.quota.release(id, a!.dir, a!.handle);
  }

  it('admits images that fit, refuses the one that would overcommit (changing nothing), and re-admits after a release', async () => {
    const quota = new LoopDiskQuota(ops, imageDir, undefined, settings);
    const before = await quota.capacity();
    expect(before.availableBytes).toBeGreaterThan(200 * MiB);
    const size = Math.floor((before.availableBytes - 8 * MiB) / 3 / MiB) * MiB;
    for (const id of ['a', 'b', 'c']) await apply(quota, id, size);

    const dir = join(work.path, 'ws', 'd');
    await mkdir(dir, { recursive: true });
    const error = await errorOf(quota.apply('d', dir, size));
    expect(error).toBeInstanceOf(DiskOvercommitError);
    expect(isWorkbayError(error, 'resource-exhausted')).toBe(true);
    const refused = error as DiskOvercommitError;
    expect(refused.requestedBytes).toBe(size);
    expect(refused.availableBytes).toBeLessThan(size);
    expect(refused.message).toContain(`${size} bytes refused: ${refused.availableBytes} bytes available`);
    expect(refused.message).toMatch(/quota\.reserveBytes.*quota\.overcommitRatio/);
    expect(await exists(join(imageDir, 'd.img'))).toBe(false);
    expect(await loopDevicesOf(join(imageDir, 'd.img'))).toEqual([]);
    expect(await ops.isMountPoint(dir)).toBe(false);
    expect((await quota.capacity()).images).toBe(3);

    // The red team's attack: every admitted workspace fills its image. The node keeps its reserve.
    for (const a of applied) await fill(a.dir);
    expect((await ops.statfs(disk)).freeBytes).toBeGreaterThanOrEqual(64 * MiB);

    await release('b');
    expect(await loopDevicesOf(join(imageDir, 'b.img'))).toEqual([]);
    await apply(quota, 'd', size);
    expect(await ops.isMountPoint(dir)).toBe(true);
  });

  it('two concurrent applies cannot both take the last space', async () => {
    const quota = new LoopDiskQuota(ops, imageDir, undefined, settings);
    const { availableBytes } = await quota.capacity();
    const size = Math.floor((availableBytes * 0.6) / MiB) * MiB;
    const dirs = ['x', 'y'].map((id) => join(work.path, 'ws', id));
    for (const dir of dirs) await mkdir(dir, { recursive: true });
    const results = await Promise.allSettled(
      ['x', 'y'].map(async (id, i) => {
        const handle = await quota.apply(id, dirs[i]!, size);
        applied.push({ quota, dir: dirs[i]!, handle });
      }),
    );
    expect(results.map((r) => r.status).sort()).toEqual(['fulfilled', 'rejected']);
    const rejection = results.find((r) => r.status === 'rejected') as PromiseRejectedResult;
    expect(rejection.reason).toBeInstanceOf(DiskOvercommitError);
    expect(await readdir(imageDir)).toHaveLength(1);
  });

  it('after a daemon restart, the restored images (and any other image left in the directory) still count', async () => {
    const first = new LoopDiskQuota(ops, imageDir, undefined, settings);
    const { availableBytes } = await first.capacity();
    const size = Math.floor((availableBytes * 0.4) / MiB) * MiB;
    const dirA = await apply(first, 'r1', size);
    await apply(first, 'r2', size);
    const handles = applied.splice(0);

    // A new daemon process: nothing in memory. A node reboot also unmounted r1's image.
    const second = new LoopDiskQuota(ops, imageDir, undefined, settings);
    await ops.unmount(dirA);
    for (const h of handles) {
      await second.restore('', h.dir, h.handle);
      applied.push({ quota: second, dir: h.dir, handle: h.handle });
    }
    expect(await ops.isMountPoint(dirA)).toBe(true);
    const snapshot = await second.capacity();
    expect(snapshot.images).toBe(2);
    expect(snapshot.availableBytes).toBeLessThan(size);
    const dir = join(work.path, 'ws', 'r3');
    await mkdir(dir, { recursive: true });
    expect(await errorOf(second.apply('r3', dir, size))).toBeInstanceOf(DiskOvercommitError);
    expect(await exists(join(imageDir, 'r3.img'))).toBe(false);
  });

  it("createDiskQuota takes the daemon config's quota section as the loop settings", async () => {
    const config = parseDaemonConfig({ quota: { mode: 'loop', reserveBytes: '100MiB', overcommitRatio: 0.5 } });
    const { quota } = await createDiskQuota(config.quota.mode, {
      ops,
      workingArea: work.path,
      imageDir,
      watchIntervalMs: 1000,
      loop: config.quota,
    });
    const snapshot = await (quota as LoopDiskQuota).capacity();
    expect(snapshot.reserveBytes).toBe(100 * MiB);
    expect(snapshot.availableBytes).toBe(Math.floor((snapshot.freeBytes - 100 * MiB) * 0.5));
  });

  it('overcommitRatio lets the images promise more than the free space; preallocate takes the whole size up front', async () => {
    const bet = new LoopDiskQuota(ops, imageDir, undefined, { ...settings, overcommitRatio: 2 });
    const { availableBytes, freeBytes } = await bet.capacity();
    const big = Math.floor((freeBytes * 1.2) / MiB) * MiB;
    expect(big).toBeLessThanOrEqual(availableBytes);
    await apply(bet, 'big', big);
    await release('big');

    const hard = new LoopDiskQuota(ops, imageDir, undefined, { ...settings, preallocate: true });
    await apply(hard, 'pre', 64 * MiB);
    const image = await stat(join(imageDir, 'pre.img'));
    expect(image.blocks * 512).toBeGreaterThanOrEqual(64 * MiB);
    // Nothing left to promise for it: its blocks are already out of the free space.
    const after = await hard.capacity();
    expect(after.promisedBytes).toBe(0);
    expect(after.freeBytes).toBeLessThanOrEqual(freeBytes - 64 * MiB);
  });
});
