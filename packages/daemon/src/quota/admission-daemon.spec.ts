import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { isWorkbayError } from '@workbay/api';
import { createHostOps } from '../host-ops/host-ops.js';
import { startTestDaemon } from '../test-support/daemon-harness.js';
import type { TestDaemon } from '../test-support/daemon-harness.js';
import { mountScratchDisk, unmountUnder } from '../test-support/loop-disk.js';
import { tempDir } from '../test-support/tree.js';
import { LoopDiskQuota } from './loop-quota.js';
import { exists, errorOf } from '../test-support/outcomes.js';

const MiB = 1024 * 1024;
const isRoot = process.getuid?.() === 0;
const ops = createHostOps();
const empty = { spec: { $case: 'empty' as const, value: {} } };

/**
 * Through the daemon's gRPC API with the default admission settings (reserve max(1 GiB, 5%), no overcommit): the
 * images live on a 1280 MiB filesystem of their own, which leaves ~200 MiB above the reserve.
 */
describe.skipIf(!isRoot)('loop quota admission through InitWorkspace', () => {
  let work: Awaited<ReturnType<typeof tempDir>>;
  let t: TestDaemon | undefined;
  let imageDir: string;
  beforeEach(async () => {
    work = await tempDir('workbay-admission-daemon-');
    imageDir = join(work.path, 'workspaces', '.images');
    await mkdir(imageDir, { recursive: true });
    await mountScratchDisk(work.path, imageDir, 1280 * MiB);
  });
  afterEach(async () => {
    await t?.stop();
    t = undefined;
    await unmountUnder(work.path);
    await work.cleanup();
  });

  const start = (): Promise<TestDaemon> => startTestDaemon({ root: work.path, config: { quota: { mode: 'loop' } } });
  const init = (id: string, bytes: number): Promise<{ contentLocation: string }> =>
    t!.client.initWorkspace({
      id,
      metadata: { owner: 'o', metaId: `m-${id}` },
      initializer: empty,
      storageQuotaBytes: bytes,
    });

  it('refuses with RESOURCE_EXHAUSTED a workspace whose image the disk cannot hold, also after a restart', async () => {
    const { availableBytes } = await new LoopDiskQuota(ops, imageDir).capacity();
    expect(availableBytes).toBeGreaterThan(64 * MiB);
    const size = Math.floor((availableBytes - 8 * MiB) / MiB) * MiB;
    t = await start();
    await init('big', size);

    const error = await errorOf(init('late', 16 * MiB));
    expect(isWorkbayError(error, 'resource-exhausted')).toBe(true);
    expect(error.message).toMatch(new RegExp(`${16 * MiB} bytes refused: \\d+ bytes available`));
    expect(error.message).toContain('quota.reserveBytes');
    expect(await exists(join(imageDir, 'late.img'))).toBe(false);
    await t.client.disposeWorkspace({ id: 'late', backup: false });

    // A restarted daemon restores 'big' and still counts it.
    await t.stop();
    t = await start();
    expect(isWorkbayError(await errorOf(init('late', 16 * MiB)), 'resource-exhausted')).toBe(true);
    await t.client.disposeWorkspace({ id: 'late', backup: false });

    // Disposing 'big' frees its promise.
    await t.client.disposeWorkspace({ id: 'big', backup: false });
    expect(await exists(join(imageDir, 'big.img'))).toBe(false);
    const again = await init('again', size);
    expect(await ops.isMountPoint(again.contentLocation)).toBe(true);
    await t.client.disposeWorkspace({ id: 'again', backup: false });
  });
});
