// Crafted manifests in real storage, restored through BackupStore as the FromBackup initializer does: what must be
// refused is refused with a named invalid-argument error, and nothing dangerous is created.
import { createHash, randomBytes } from 'node:crypto';
import { lstat, mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { gzipSync } from 'node:zlib';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { isWorkbayError } from '../errors.js';
import { FsRemoteStorage } from '../storage/fs-storage.js';
import { collect, tempDir } from '../test-support/tree.js';
import { BackupStore } from './backup-store.js';
import { manifestName, readManifest } from './chunked.js';
import type { BackupManifest } from './manifest.js';
import { encodeManifest, MalformedManifestError, ManifestTooLargeError } from './manifest.js';
import { packName } from './pack-writer.js';

const ref = { owner: 'owner-1', workspaceId: 'ws-1' };

/** Every path below `root` whose mode has the setuid or setgid bit. */
async function setIdFiles(root: string): Promise<string[]> {
  const found: string[] = [];
  for (const name of await readdir(root, { recursive: true })) {
    const stats = await lstat(join(root, name));
    if (stats.mode & 0o6000) found.push(name);
  }
  return found;
}

describe('restoring a crafted manifest', () => {
  let work: Awaited<ReturnType<typeof tempDir>>;
  let storage: FsRemoteStorage;
  let store: BackupStore;
  let source: string;

  beforeEach(async () => {
    work = await tempDir();
    storage = new FsRemoteStorage({ root: join(work.path, 'storage') });
    store = new BackupStore(storage, { mode: 'per-owner' }, { format: 'chunked' });
    source = join(work.path, 'source');
    await mkdir(source);
  });
  afterEach(async () => {
    await storage.close();
    await work.cleanup();
  });

  const target = (): ReturnType<BackupStore['target']> => store.target(ref);
  const storeManifest = async (data: Buffer): Promise<void> => {
    await storage.upload(target().bucket, manifestName(target()), Readable.from([data]));
  };
  const restore = async (): Promise<{ dir: string; error: unknown }> => {
    const dir = join(work.path, `restored-${Math.random().toString(36).slice(2)}`);
    await mkdir(dir);
    const error = await store.restore(dir, ref).then(
      () => undefined,
      (e: unknown) => e,
    );
    return { dir, error };
  };

  it('refuses a string mode ("24755" is 04755 to fchmod), naming the entry, and creates nothing setuid', async () => {
    // A single-blob file, a multi-blob file and an empty file: the three ways the restore creates files.
    await writeFile(join(source, 'tool'), '#!/bin/sh\nid\n');
    await writeFile(join(source, 'big'), randomBytes(6 * 1024 * 1024));
    await writeFile(join(source, 'empty'), '');
    await store.backup(source, ref);
    const manifest = (await readManifest(target())) as BackupManifest;
    for (const path of ['tool', 'big', 'empty']) {
      const entries = manifest.entries.map((e) =>
        e.path === path ? { ...e, mode: (path === 'tool' ? '24755' : '16755') as unknown as number } : e,
      );
      await storeManifest(await encodeManifest({ ...manifest, entries }));
      const { dir, error } = await restore();
      expect(error, path).toBeInstanceOf(MalformedManifestError);
      expect(isWorkbayError(error, 'invalid-argument')).toBe(true);
      const index = entries.findIndex((e) => e.path === path);
      expect((error as MalformedManifestError).field).toBe(`manifest.entries[${index}].mode`);
      expect(String(error)).toContain(`entry "${path}": mode must be an integer from 0 to 0o7777`);
      expect(await setIdFiles(dir)).toEqual([]);
      expect(await readdir(dir)).toEqual([]);
    }
  });

  it('refuses a manifest bomb (88 KB of gzip, millions of empty entries) quickly, at its first entry', async () => {
    await store.backup(source, ref);
    const head =
      '{"format":"workbay-backup-manifest","version":1,"workspaceId":"ws-1","createdAt":"x","compression":"none",' +
      '"packs":[],"blobs":[],"totals":{"files":0,"contentBytes":0},"entries":[';
    const entries = 30_000_000;
    const bomb = gzipSync(Buffer.from(`${head}${'{},'.repeat(entries - 1)}{}]}`), { level: 9 });
    expect(bomb.length).toBeLessThan(200_000);
    await storeManifest(bomb);
    const heapBefore = process.memoryUsage().heapUsed;
    const { dir, error } = await restore();
    // Each entry is checked as it is decoded: the first one, `{}`, has no path.
    expect(error).toBeInstanceOf(MalformedManifestError);
    expect(isWorkbayError(error, 'invalid-argument')).toBe(true);
    expect(String(error)).toMatch(/manifest\.entries\[0\]\.path/);
    // The entries were never materialised (30 million objects would be GBs).
    expect(process.memoryUsage().heapUsed - heapBefore).toBeLessThan(256 * 1024 * 1024);
    expect(await readdir(dir)).toEqual([]);
    // The next backup cannot deduplicate against it and goes ahead in full (an unusable manifest must not stop the
    // workspace from ever being backed up again), and that backup restores.
    await store.backup(source, ref);
    const again = await restore();
    expect(again.error).toBeUndefined();
  });

  it('refuses a manifest whose one value is past its bound (20 million numbers in an unused field), unparsed', async () => {
    await store.backup(source, ref);
    const head =
      '{"format":"workbay-backup-manifest","version":1,"workspaceId":"ws-1","createdAt":"x","compression":"none",' +
      '"packs":[],"blobs":[],"entries":[],"unused":[';
    const bomb = gzipSync(Buffer.from(`${head}${'0,'.repeat(20_000_000)}0],"totals":{"files":0,"contentBytes":0}}`), {
      level: 9,
    });
    await storeManifest(bomb);
    const heapBefore = process.memoryUsage().heapUsed;
    const { error } = await restore();
    expect(error).toBeInstanceOf(ManifestTooLargeError);
    expect(String(error)).toMatch(/backup manifest too large: a value of more than \d+ bytes/);
    expect(process.memoryUsage().heapUsed - heapBefore).toBeLessThan(256 * 1024 * 1024);
  });

  it('reads a pack up to the furthest blob end, not the end of the blob with the highest offset', async () => {
    await writeFile(join(source, 'a'), randomBytes(3000));
    await writeFile(join(source, 'b'), randomBytes(4000));
    await store.backup(source, ref);
    const manifest = (await readManifest(target())) as BackupManifest;
    expect(manifest.packs).toHaveLength(1);
    const packData = await collect(await storage.download(target().bucket, packName(target(), manifest.packs[0]!.id)));
    const ends = manifest.blobs.map(([, , offset, length]) => offset + length);
    const lastOffset = Math.max(...manifest.blobs.map(([, , offset]) => offset));
    const whole = packData.subarray(0, Math.max(...ends));
    const piece = packData.subarray(lastOffset, lastOffset + 10);
    const sha = (data: Buffer): string => createHash('sha256').update(data).digest('hex');
    // 'whole' starts at 0 and ends past 'piece', which has the highest offset.
    const crafted: BackupManifest = {
      ...manifest,
      blobs: [
        [sha(whole), 0, 0, whole.length],
        [sha(piece), 0, lastOffset, piece.length],
      ],
      entries: [
        { path: 'whole', type: 'file', mode: 0o644, uid: 0, gid: 0, size: whole.length, mtimeMs: 0, blobs: [0] },
        { path: 'piece', type: 'file', mode: 0o644, uid: 0, gid: 0, size: piece.length, mtimeMs: 0, blobs: [1] },
      ],
    };
    await storeManifest(await encodeManifest(crafted));
    const { dir, error } = await restore();
    expect(error).toBeUndefined();
    expect((await readFile(join(dir, 'whole'))).equals(whole)).toBe(true);
    expect((await readFile(join(dir, 'piece'))).equals(piece)).toBe(true);
  });
});
