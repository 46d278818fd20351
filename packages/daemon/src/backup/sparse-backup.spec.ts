import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FsRemoteStorage } from '../storage/fs-storage.js';
import { allocatedBytes, GiB, makeSparseFile, MiB, runsHash } from '../test-support/sparse.js';
import { tempDir } from '../test-support/tree.js';
import type { BackupTarget } from './chunked.js';
import { createChunkedBackup, readManifest } from './chunked.js';
import { restoreChunkedBackup } from './chunked-restore.js';
import type { BackupManifest, ManifestEntry } from './manifest.js';
import { decodeManifest, encodeManifest } from './manifest.js';
import { MalformedManifestError } from './manifest-errors.js';

describe('chunked backups of sparse files', () => {
  let work: Awaited<ReturnType<typeof tempDir>>;
  let storage: FsRemoteStorage;
  let target: BackupTarget;
  let source: string;

  beforeEach(async () => {
    work = await tempDir();
    storage = new FsRemoteStorage({ root: join(work.path, 'storage') });
    await storage.ensureBucket('bkt');
    target = { storage, bucket: 'bkt', prefix: 'workspaces/ws-1/' };
    source = join(work.path, 'src');
    await mkdir(source);
  });
  afterEach(async () => {
    await storage.close();
    await work.cleanup();
  });

  const manifest = async (): Promise<BackupManifest> => (await readManifest(target)) as BackupManifest;
  const entryOf = (m: BackupManifest, path: string): ManifestEntry =>
    m.entries.find((e) => e.path === path) as ManifestEntry;
  const restore = async (m: BackupManifest): Promise<string> => {
    const dir = join(work.path, `restored-${Math.random().toString(36).slice(2)}`);
    await mkdir(dir);
    await restoreChunkedBackup(dir, target, m);
    return dir;
  };

  it('reads and stores only the data of an 8 GiB sparse file, and restores it sparse', async () => {
    const runs = [
      [0, MiB],
      [3 * GiB, 2 * MiB + 123],
      [8 * GiB - 4096, 4096],
    ] as const;
    const hash = makeSparseFile(join(source, 'big'), 8 * GiB, runs);
    const dense = randomBytes(3 * MiB);
    await writeFile(join(source, 'dense'), dense);

    const result = await createChunkedBackup(source, target, 'ws-1', {});
    // The file system keeps data in whole blocks: the 123 bytes come with the rest of their block.
    const data = MiB + 2 * MiB + 4096 + 4096;
    expect(result.readBytes).toBe(data + dense.length);
    expect(result.contentBytes).toBe(8 * GiB + dense.length);
    expect(result.uploadedBytes).toBeLessThan(16 * MiB);
    const m = await manifest();
    // The data extents as the file system reports them (block-aligned: the 123 bytes end in a block of data).
    const extents = entryOf(m, 'big').extents as number[];
    expect(extents.filter((_, i) => i % 2 === 0)).toEqual([0, 3 * GiB, 8 * GiB - 4096]);
    expect(entryOf(m, 'big').size).toBe(8 * GiB);
    expect(entryOf(m, 'dense').extents).toBeUndefined();

    const restored = await restore(m);
    expect((await stat(join(restored, 'big'))).size).toBe(8 * GiB);
    expect(allocatedBytes(join(restored, 'big'))).toBeLessThan(8 * MiB);
    expect(runsHash(join(restored, 'big'), runs)).toBe(hash);
    // The holes read as zeros again (a sample at each side of the data).
    expect(runsHash(join(restored, 'big'), [[MiB, 4096]])).toBe(runsHash(join(source, 'big'), [[MiB, 4096]]));
    expect(runsHash(join(restored, 'dense'), [[0, dense.length]])).toBe(
      runsHash(join(source, 'dense'), [[0, dense.length]]),
    );
  });

  it('restores a 1 GiB sparse file byte for byte, also from the next (incremental) backup', async () => {
    const runs = Array.from({ length: 30 }, (_, i) => [i * 33 * MiB + 4096 * i, 100_000 + i] as const);
    makeSparseFile(join(source, 'mid'), GiB, runs);
    // A file that is all hole, and one with one hole punched into it.
    execFileSync('truncate', ['-s', String(GiB), join(source, 'void')]);
    makeSparseFile(join(source, 'punched'), 32 * MiB, [[0, 32 * MiB]]);
    execFileSync('fallocate', ['-p', '-o', String(8 * MiB), '-l', String(16 * MiB), join(source, 'punched')]);

    await createChunkedBackup(source, target, 'ws-1', {});
    const second = await createChunkedBackup(source, target, 'ws-1', {});
    // Sparse files are read again (their data only), and their data deduplicated.
    expect(second.readBytes).toBeLessThan(24 * MiB);
    expect(second.newBlobs).toBe(0);
    const m = await manifest();
    expect(entryOf(m, 'void').extents).toEqual([]);
    const restored = await restore(m);
    for (const name of ['mid', 'void', 'punched']) {
      execFileSync('cmp', [join(source, name), join(restored, name)]);
      expect(allocatedBytes(join(restored, name))).toBeLessThanOrEqual(allocatedBytes(join(source, name)) + 64 * 1024);
    }
  });

  it('reuses an unchanged sparse file with its extents, and reads it again once changed', async () => {
    const runs = [
      [0, 100_000],
      [40 * MiB, 4096],
    ] as const;
    makeSparseFile(join(source, 'f'), 64 * MiB, runs);
    // Files before and after it: the previous backup's index must step over its extents to find them.
    await writeFile(join(source, 'a'), randomBytes(1000));
    await writeFile(join(source, 'g'), randomBytes(300_000));
    makeSparseFile(join(source, 'h'), 32 * MiB, [[MiB, 4096]]);
    // The quick check trusts only files older than 2 s when read.
    await new Promise((resolve) => setTimeout(resolve, 2100));
    await createChunkedBackup(source, target, 'ws-1', {});
    const first = entryOf(await manifest(), 'f');
    const unchanged = await createChunkedBackup(source, target, 'ws-1', {});
    expect(unchanged.readBytes).toBe(0);
    expect(entryOf(await manifest(), 'f')).toEqual(first);
    execFileSync('cmp', [join(source, 'f'), join(await restore(await manifest()), 'f')]);

    // Data written into a hole: read again (only the data), restored with it.
    makeSparseFile(join(work.path, 'patch'), 8192, [[0, 8192]]);
    execFileSync(
      'dd',
      [`if=${join(work.path, 'patch')}`, `of=${join(source, 'f')}`, 'bs=8192', 'seek=2560', 'conv=notrunc'],
      {
        stdio: 'ignore',
      },
    );
    const changed = await createChunkedBackup(source, target, 'ws-1', {});
    expect(changed.readBytes).toBeLessThan(MiB);
    expect((entryOf(await manifest(), 'f').extents as number[]).length).toBe(6);
    execFileSync('cmp', [join(source, 'f'), join(await restore(await manifest()), 'f')]);
  });

  it('refuses a manifest whose extents lie', async () => {
    makeSparseFile(join(source, 'big'), 64 * MiB, [[0, MiB]]);
    await createChunkedBackup(source, target, 'ws-1', {});
    const good = await manifest();
    const withExtents = async (extents: unknown, size = 64 * MiB): Promise<unknown> => {
      const entries = good.entries.map((e) => (e.path === 'big' ? { ...e, extents, size } : e));
      return decodeManifest(await encodeManifest({ ...good, entries } as BackupManifest)).catch((error) => error);
    };
    expect(await withExtents(entryOf(good, 'big').extents)).not.toBeInstanceOf(Error);
    for (const extents of [
      [MiB, MiB, 0, MiB], // unsorted
      [0, 2 * MiB, MiB, MiB], // overlapping
      [64 * MiB - 10, MiB], // past the size
      [0, MiB, 2 * MiB, 1], // more data than the blobs
      [0, MiB, 2 * MiB], // not pairs
      Array.from({ length: 40_000 }, (_, i) => (i % 2 === 0 ? i * 10 : 1)), // too many
      'all of it',
    ]) {
      expect(await withExtents(extents)).toBeInstanceOf(MalformedManifestError);
    }
    // A size no file can have, with the data at its start.
    expect(await withExtents(entryOf(good, 'big').extents, 2 ** 50)).toBeInstanceOf(MalformedManifestError);
  });
});
