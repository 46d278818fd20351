import { randomBytes } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FsRemoteStorage } from '../storage/fs-storage.js';
import { describeTree, tempDir } from '../test-support/tree.js';
import type { BackupTarget } from './chunked.js';
import { createChunkedBackup } from './chunked.js';
import { restoreChunkedBackup } from './chunked-restore.js';
import { readManifest } from './chunked.js';

describe('repacking', () => {
  let work: Awaited<ReturnType<typeof tempDir>>;
  let storage: FsRemoteStorage;
  let target: BackupTarget;

  beforeEach(async () => {
    work = await tempDir();
    storage = new FsRemoteStorage({ root: join(work.path, 'storage') });
    await storage.ensureBucket('bkt');
    target = { storage, bucket: 'bkt', prefix: 'workspaces/ws-1/' };
  });
  afterEach(async () => {
    await storage.close();
    await work.cleanup();
  });

  it('leaves a little garbage in place, and rewrites mostly-dead packs once the garbage share is exceeded', async () => {
    const source = join(work.path, 'src');
    await mkdir(source);
    // 40 files of 20 KB in packs of ~60 KB: three files a pack.
    for (let i = 0; i < 40; i++) await writeFile(join(source, `f${i}`), randomBytes(20_000));
    const options = { packSize: 64 * 1024, repackBelow: 0.9 };
    await createChunkedBackup(source, target, 'ws-1', options);
    // Files changed in the last 2 s are always re-read; the quick check does not matter here.
    await writeFile(join(source, 'f0'), randomBytes(20_000));
    // One file of 40 changed: its old pack is two-thirds live (below repackBelow) but the garbage is 2.5% of all.
    const small = await createChunkedBackup(source, target, 'ws-1', options);
    expect(small.repackedBlobs).toBe(0);
    expect(small.newBlobs).toBeGreaterThanOrEqual(1);
    // The same change with no tolerance for garbage: the pack's two live blobs are rewritten and it is deleted.
    await writeFile(join(source, 'f0'), randomBytes(20_000));
    const strict = await createChunkedBackup(source, target, 'ws-1', { ...options, repackGarbageShare: 0 });
    expect(strict.repackedBlobs).toBeGreaterThanOrEqual(2);
    expect(strict.deletedPacks).toBeGreaterThanOrEqual(1);
    const restored = join(work.path, 'restored');
    await mkdir(restored);
    await restoreChunkedBackup(
      restored,
      target,
      (await readManifest(target)) as NonNullable<Awaited<ReturnType<typeof readManifest>>>,
    );
    expect(await describeTree(restored)).toEqual(await describeTree(source));
  });
});
