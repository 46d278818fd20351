/**
 * Kept content holds no disk promise while nobody can write to it (red team round 17, L5), through the real daemon
 * over gRPC with loop images on a filesystem of their own and fs storage: a final backup that fails keeps the content
 * read-only, out of the admission's promises, also after a restart; its owner's resume admits the rest of its quota
 * again or is refused with the content as it was; and kept content is never deleted without a backup.
 */
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { isWorkbayError } from '@workbay/api';
import { createHostOps } from '../host-ops/host-ops.js';
import { startTestDaemon } from '../test-support/daemon-harness.js';
import type { TestDaemon } from '../test-support/daemon-harness.js';
import { exists, errorOf } from '../test-support/outcomes.js';
import { mountScratchDisk, unmountUnder } from '../test-support/loop-disk.js';
import { tempDir } from '../test-support/tree.js';
import { LoopDiskQuota } from './loop-quota.js';

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

describe.skipIf(!isRoot)('kept content is dormant: read-only and out of the disk admission', () => {
  let work: Awaited<ReturnType<typeof tempDir>>;
  let t: TestDaemon | undefined;
  let imageDir: string;
  beforeEach(async () => {
    work = await tempDir('workbay-kept-dormant-');
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
  const init = (id: string, owner: string, bytes: number): Promise<{ contentLocation: string }> =>
    t!.client.initWorkspace({
      id,
      metadata: { owner, metaId: `m-${id}` },
      initializer: empty,
      storageQuotaBytes: bytes,
    });
  const contentOf = (id: string): string => join(work.path, 'workspaces', id);

  it('holds no promise while kept, is never deleted unbacked, and resumes once the disk can back it again', async () => {
    const { availableBytes } = await new LoopDiskQuota(ops, imageDir).capacity();
    const size = Math.floor((availableBytes - 8 * MiB) / MiB) * MiB;
    t = await start();
    await init('kept', 'mallory', size);
    await writeFile(join(contentOf('kept'), 'work.txt'), 'unbacked work');
    await writeFile(Buffer.concat([Buffer.from(contentOf('kept') + '/'), unarchivable]), 'x');
    expect((await errorOf(t.client.disposeWorkspace({ id: 'kept', backup: true }))).message).toMatch(/not valid UTF-8/);

    // Kept and read-only: another owner's workspace is admitted (with the kept promise counted, it was refused).
    expect(await writeCode(contentOf('kept'))).toBe('EROFS');
    await init('other', 'bob', 64 * MiB);

    // Never deleted without a backup: the manager disposes a failed start's content that way.
    const unbacked = await errorOf(t.client.disposeWorkspace({ id: 'kept', backup: false }));
    expect(unbacked.code).toBe('failed-precondition');
    expect(unbacked.message).toMatch(
      /kept since .* because its final backup failed; cannot delete it without a backup/,
    );
    expect(await readFile(join(contentOf('kept'), 'work.txt'), 'utf8')).toBe('unbacked work');

    // Its owner resumes it: the rest of its quota no longer fits beside bob's, so refused, and it stays as it was.
    const refused = await errorOf(init('kept', 'mallory', size));
    expect(isWorkbayError(refused, 'resource-exhausted')).toBe(true);
    expect(refused.message).toMatch(/bytes refused: \d+ bytes available/);
    expect(await writeCode(contentOf('kept'))).toBe('EROFS');

    // A restarted daemon keeps it dormant: read-only, and a third workspace fits too.
    await t.stop();
    t = await start();
    expect(await writeCode(contentOf('kept'))).toBe('EROFS');
    await init('third', 'bob', 64 * MiB);

    for (const id of ['other', 'third']) await t.client.disposeWorkspace({ id, backup: false });
    expect(isWorkbayError(await errorOf(init('kept', 'mallory', size)), 'already-exists')).toBe(true);
    expect(await writeCode(contentOf('kept'))).toBeUndefined();
    // Writable and promised again: nothing else fits now.
    expect(isWorkbayError(await errorOf(init('late', 'bob', 64 * MiB)), 'resource-exhausted')).toBe(true);
    await t.client.disposeWorkspace({ id: 'late', backup: false });

    await rm(Buffer.concat([Buffer.from(contentOf('kept') + '/'), unarchivable]) as unknown as string);
    await t.client.disposeWorkspace({ id: 'kept', backup: true });
    expect(await exists(join(imageDir, 'kept.img'))).toBe(false);
  });
});
