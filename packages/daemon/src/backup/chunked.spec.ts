import { randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { isWorkbayError } from '../errors.js';
import { FsRemoteStorage } from '../storage/fs-storage.js';
import { describeTree, tempDir } from '../test-support/tree.js';
import type { BackupTarget } from './chunked.js';
import { createChunkedBackup, manifestName, readManifest } from './chunked.js';
import { restoreChunkedBackup } from './chunked-restore.js';
import type { BackupManifest } from './manifest.js';
import { encodeManifest } from './manifest.js';
import { packName } from './pack-writer.js';

describe('chunked backups', () => {
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

  it("deletes the packs a failed backup stored, and keeps the previous backup's", async () => {
    const source = join(work.path, 'failing');
    await mkdir(source);
    for (let i = 0; i < 4; i++) await writeFile(join(source, `f${i}`), randomBytes(20_000));
    const options = { packSize: 64 * 1024, uploadConcurrency: 1 };
    await createChunkedBackup(source, target, 'ws-1', options);
    const chunks = async (): Promise<string[]> => {
      const names: string[] = [];
      for await (const info of storage.list('bkt', { prefix: 'workspaces/ws-1/chunks/' })) names.push(info.name);
      return names.sort();
    };
    const before = await chunks();
    expect(before.length).toBeGreaterThan(0);
    for (let i = 0; i < 40; i++) await writeFile(join(source, `g${i}`), randomBytes(20_000));
    // A storage that fails the third pack of this backup (a full disk, a dropped connection).
    let packs = 0;
    const failing = new Proxy(storage, {
      get(store, property, receiver) {
        if (property !== 'upload') return Reflect.get(store, property, receiver) as unknown;
        return async (bucket: string, name: string, body: Readable, opts: object) => {
          if (name.includes('/chunks/') && ++packs === 3) {
            body.destroy();
            throw Object.assign(new Error('no space left on device'), { code: 'ENOSPC' });
          }
          return store.upload(bucket, name, body, opts);
        };
      },
    });
    await expect(createChunkedBackup(source, { ...target, storage: failing }, 'ws-1', options)).rejects.toThrow(
      /no space left/,
    );
    expect(packs).toBeGreaterThanOrEqual(3);
    expect(await chunks()).toEqual(before);
  });

  describe('restore', () => {
    const manifestOf = async (): Promise<BackupManifest> => (await readManifest(target)) as BackupManifest;
    const backUp = async (files: Record<string, Buffer>): Promise<BackupManifest> => {
      const source = join(work.path, 'src');
      await mkdir(source, { recursive: true });
      for (const [name, data] of Object.entries(files)) await writeFile(join(source, name), data);
      await createChunkedBackup(source, target, 'ws-1', {});
      return manifestOf();
    };
    const restoreTo = async (manifest: BackupManifest): Promise<{ dir: string; error: unknown }> => {
      const dir = join(work.path, `restored-${Math.random().toString(36).slice(2)}`);
      await mkdir(dir);
      const error = await restoreChunkedBackup(dir, target, manifest).then(
        () => undefined,
        (e: unknown) => e,
      );
      return { dir, error };
    };

    it('a corrupt blob of a small file fails the restore, and its file is never written', async () => {
      const good = randomBytes(5000);
      const bad = randomBytes(7000);
      const manifest = await backUp({ good, bad });
      const pack = manifest.packs[0]?.id as string;
      const chunks: Buffer[] = [];
      for await (const c of await storage.download('bkt', packName(target, pack))) chunks.push(c as Buffer);
      const data = Buffer.concat(chunks);
      const at = data.indexOf(bad.subarray(0, 32));
      data[at + 100] = (data[at + 100] as number) ^ 0xff;
      await storage.upload('bkt', packName(target, pack), Readable.from([data]));
      const { dir, error } = await restoreTo(manifest);
      expect(isWorkbayError(error, 'internal')).toBe(true);
      expect(String(error)).toMatch(/digest mismatch/);
      expect(await readdir(dir)).not.toContain('bad');
    });

    it('a pack shorter than its blobs is corrupt, not a short file', async () => {
      const manifest = await backUp({ a: randomBytes(3000), b: randomBytes(4000) });
      const pack = manifest.packs[0]?.id as string;
      const chunks: Buffer[] = [];
      for await (const c of await storage.download('bkt', packName(target, pack))) chunks.push(c as Buffer);
      const data = Buffer.concat(chunks);
      await storage.upload('bkt', packName(target, pack), Readable.from([data.subarray(0, data.length - 10)]));
      const { error } = await restoreTo(manifest);
      expect(isWorkbayError(error, 'internal')).toBe(true);
      expect(String(error)).toMatch(/at least/);
    });

    it('a manifest placing a blob beyond any pack size is refused before anything is read', async () => {
      const manifest = await backUp({ a: randomBytes(3000) });
      const blobs = manifest.blobs.map(([hash, pack, , length]) => [hash, pack, 2 ** 40, length] as const);
      const { error } = await restoreTo({ ...manifest, blobs });
      expect(isWorkbayError(error, 'invalid-argument')).toBe(true);
      expect(String(error)).toMatch(/more than a pack holds/);
    });

    it('a crafted manifest cannot write outside the target: .. and absolute paths, and a file below a symlink', async () => {
      const manifest = await backUp({ a: randomBytes(3000) });
      const file = manifest.entries.find((e) => e.path === 'a')!;
      const outside = join(work.path, 'outside');
      await mkdir(outside);
      const crafted: BackupManifest[] = [
        { ...manifest, entries: [{ ...file, path: '../outside/escaped' }] },
        { ...manifest, entries: [{ ...file, path: `${outside}/absolute` }] },
        {
          ...manifest,
          entries: [
            { path: 'link', type: 'symlink', mode: 0o777, uid: 0, gid: 0, size: 0, mtimeMs: 0, linkTarget: outside },
            { ...file, path: 'link/through' },
          ],
        },
      ];
      for (const attempt of crafted) {
        const { error } = await restoreTo(attempt);
        expect(isWorkbayError(error, 'invalid-argument'), String(error)).toBe(true);
      }
      expect(await readdir(outside)).toEqual([]);
    });

    it('a file listed twice is restored once, with one of its contents, and nothing fails', async () => {
      const one = randomBytes(6000);
      const two = randomBytes(6000);
      const manifest = await backUp({ one, two });
      const entry = manifest.entries.find((e) => e.path === 'two');
      const entries = [...manifest.entries, { ...entry!, path: 'one' }];
      await storage.upload(
        'bkt',
        manifestName(target),
        Readable.from([await encodeManifest({ ...manifest, entries })]),
      );
      const { dir, error } = await restoreTo(await manifestOf());
      expect(error).toBeUndefined();
      const restored = await readFile(join(dir, 'one'));
      expect(restored.equals(one) || restored.equals(two)).toBe(true);
      expect((await readFile(join(dir, 'two'))).equals(two)).toBe(true);
    });
  });
});
