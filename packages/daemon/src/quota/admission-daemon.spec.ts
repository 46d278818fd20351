import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
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
/** `caf\xe9.txt`: Latin-1, not UTF-8; no archive takes it, so the final backup fails and the content is kept. */
const unarchivable = Buffer.from('caf\xe9.txt', 'latin1');

/** The errno code of writing a file into `dir` (undefined: it could be written). */
async function writeCode(dir: string): Promise<string | undefined> {
  const error = await writeFile(join(dir, 'probe.txt'), 'x').catch((e: NodeJS.ErrnoException) => e);
  return error ? error.code : undefined;
}

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

  const start = (): Promise<TestDaemon> =>
    startTestDaemon({ root: work.path, config: { quota: { mode: 'loop' }, backup: { attempts: 1 } } });
  const init = (id: string, bytes: number, owner = 'o'): Promise<{ contentLocation: string }> =>
    t!.client.initWorkspace({
      id,
      metadata: { owner, metaId: `m-${id}` },
      initializer: empty,
      storageQuotaBytes: bytes,
    });
  const contentOf = (id: string): string => join(work.path, 'workspaces', id);

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

  // Kept content holds no disk promise while nobody can write to it (red team round 17, L5): a final backup that fails
  // keeps the content read-only, out of the admission's promises, also after a restart; its owner's resume admits the
  // rest of its quota again or is refused with the content as it was; and kept content is never deleted unbacked.
  it('holds no promise while kept, is never deleted unbacked, and resumes once the disk can back it again', async () => {
    const { availableBytes } = await new LoopDiskQuota(ops, imageDir).capacity();
    const size = Math.floor((availableBytes - 8 * MiB) / MiB) * MiB;
    t = await start();
    await init('kept', size, 'mallory');
    await writeFile(join(contentOf('kept'), 'work.txt'), 'unbacked work');
    await writeFile(Buffer.concat([Buffer.from(contentOf('kept') + '/'), unarchivable]), 'x');
    expect((await errorOf(t.client.disposeWorkspace({ id: 'kept', backup: true }))).message).toMatch(/not valid UTF-8/);

    // Kept and read-only: another owner's workspace is admitted (with the kept promise counted, it was refused).
    expect(await writeCode(contentOf('kept'))).toBe('EROFS');
    await init('other', 64 * MiB, 'bob');

    // Never deleted without a backup: the manager disposes a failed start's content that way.
    const unbacked = await errorOf(t.client.disposeWorkspace({ id: 'kept', backup: false }));
    expect(unbacked.code).toBe('failed-precondition');
    expect(unbacked.message).toMatch(
      /kept since .* because its final backup failed; cannot delete it without a backup/,
    );
    expect(await readFile(join(contentOf('kept'), 'work.txt'), 'utf8')).toBe('unbacked work');

    // Its owner resumes it: the rest of its quota no longer fits beside bob's, so refused, and it stays as it was.
    const refused = await errorOf(init('kept', size, 'mallory'));
    expect(isWorkbayError(refused, 'resource-exhausted')).toBe(true);
    expect(refused.message).toMatch(/bytes refused: \d+ bytes available/);
    expect(await writeCode(contentOf('kept'))).toBe('EROFS');

    // A restarted daemon keeps it dormant: read-only, and a third workspace fits too.
    await t.stop();
    t = await start();
    expect(await writeCode(contentOf('kept'))).toBe('EROFS');
    await init('third', 64 * MiB, 'bob');

    for (const id of ['other', 'third']) await t.client.disposeWorkspace({ id, backup: false });
    expect(isWorkbayError(await errorOf(init('kept', size, 'mallory')), 'already-exists')).toBe(true);
    expect(await writeCode(contentOf('kept'))).toBeUndefined();
    // Writable and promised again: nothing else fits now.
    expect(isWorkbayError(await errorOf(init('late', 64 * MiB, 'bob')), 'resource-exhausted')).toBe(true);
    await t.client.disposeWorkspace({ id: 'late', backup: false });

    // Resumed as a kind of workspace whose stop disposes without a backup (an image build): refused, and dormant again
    // (red team round 18, L5b: it stayed writable with its whole promise).
    expect((await errorOf(t.client.disposeWorkspace({ id: 'kept', backup: false }))).code).toBe('failed-precondition');
    expect(await writeCode(contentOf('kept'))).toBe('EROFS');
    await init('late', 64 * MiB, 'bob');
    await t.client.disposeWorkspace({ id: 'late', backup: false });
    expect(isWorkbayError(await errorOf(init('kept', size, 'mallory')), 'already-exists')).toBe(true);

    await rm(Buffer.concat([Buffer.from(contentOf('kept') + '/'), unarchivable]) as unknown as string);
    await t.client.disposeWorkspace({ id: 'kept', backup: true });
    expect(await exists(join(imageDir, 'kept.img'))).toBe(false);
  });
});
