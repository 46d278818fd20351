import { randomBytes } from 'node:crypto';
import { appendFile, link, mkdir, readFile, readdir, rm, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { OwnerSlots } from '@workbay/api';
import type { ObjectInfo, RemoteStorage, UploadOptions } from '@workbay/api';
import { SafeTreeWriter } from '../archive/safe-writer.js';
import { isWorkbayError } from '../errors.js';
import { FsRemoteStorage } from '../storage/fs-storage.js';
import { describeTree, tempDir } from '../test-support/tree.js';
import { BackupStore } from './backup-store.js';
import { findCut, StreamChunker } from './chunker.js';
import { readManifest } from './chunked.js';

const ref = { owner: 'owner-1', workspaceId: 'ws-1' };

async function makeTree(root: string, files: number): Promise<string[]> {
  const names: string[] = [];
  for (let i = 0; i < files; i++) {
    const dir = join(root, `d${i % 7}`);
    await mkdir(dir, { recursive: true });
    const name = `d${i % 7}/f${i}.dat`;
    await writeFile(join(root, name), randomBytes(2000 + (i % 13) * 1000));
    names.push(name);
  }
  // Larger than four maximum chunks, so that re-uploading the one chunk an edit touches stays a small share.
  await writeFile(join(root, 'big.bin'), randomBytes(16 * 1024 * 1024));
  await symlink('big.bin', join(root, 'big-link'));
  await mkdir(join(root, '.workbay'));
  await writeFile(join(root, '.workbay/ready'), '{}');
  return names;
}

describe('chunking', () => {
  it('cuts content-defined chunks that resynchronise after an insertion', () => {
    const options = { minSize: 2048, avgSize: 8192, maxSize: 32768 };
    const data = randomBytes(400_000);
    const cuts = (buffer: Buffer): number[] => {
      const chunker = new StreamChunker(options);
      const out: number[] = [];
      let offset = 0;
      for (let i = 0; i < buffer.length; i += 5000) {
        for (const chunk of chunker.push(buffer.subarray(i, i + 5000))) out.push((offset += chunk.length));
      }
      for (const chunk of chunker.flush()) out.push((offset += chunk.length));
      return out;
    };
    const before = cuts(data);
    expect(before.at(-1)).toBe(data.length);
    const sizes = before.map((c, i) => c - (before[i - 1] ?? 0));
    expect(Math.max(...sizes)).toBeLessThanOrEqual(options.maxSize);
    const edited = Buffer.concat([data.subarray(0, 1000), Buffer.from('inserted'), data.subarray(1000)]);
    const after = new Set(cuts(edited).map((c) => c - 8));
    const shared = before.filter((c) => after.has(c));
    expect(shared.length).toBeGreaterThan(before.length - 3);
    expect(findCut(Buffer.alloc(100), options, true)).toBe(100);
  });
});

describe('BackupStore', () => {
  let work: Awaited<ReturnType<typeof tempDir>>;
  let storage: FsRemoteStorage;
  let source: string;

  beforeEach(async () => {
    work = await tempDir();
    storage = new FsRemoteStorage({ root: join(work.path, 'storage') });
    source = join(work.path, 'source');
    await mkdir(source);
  });
  afterEach(async () => {
    await storage.close();
    await work.cleanup();
  });

  const skipReady = { skip: (p: string) => p === '.workbay/ready' };

  it('a chunked restore aborted after its content was read creates none of its links (red team round 13b, G2b)', async () => {
    await writeFile(join(source, 'base'), randomBytes(4096));
    for (let i = 0; i < 500; i++) await link(join(source, 'base'), join(source, `l${i}`));
    const store = new BackupStore(storage, { mode: 'per-owner' });
    await store.backup(source, ref);
    // The abort comes with the last (only) pack read: what is left is the links.
    const controller = new AbortController();
    const aborting = new Proxy(storage, {
      get(target, property, receiver) {
        if (property === 'readInto') {
          return async (...args: Parameters<FsRemoteStorage['readInto']>) => {
            const read = await target.readInto(...args);
            controller.abort(new Error('stopped'));
            return read;
          };
        }
        const value: unknown = Reflect.get(target, property, receiver);
        return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value;
      },
    });
    const restoring = new BackupStore(aborting, { mode: 'per-owner' });
    const into = join(work.path, 'aborted');
    await mkdir(into);
    await expect(restoring.restore(into, ref, { signal: controller.signal })).rejects.toThrow('stopped');
    expect((await readdir(into)).filter((name) => name.startsWith('l'))).toEqual([]);
  });

  it('a chunked restore aborted among the directories of one level makes no more of them (red team round 14, F5)', async () => {
    for (let i = 0; i < 2000; i++) await mkdir(join(source, `d${i}`));
    const store = new BackupStore(storage, { mode: 'per-owner' });
    await store.backup(source, ref);
    const controller = new AbortController();
    const make = SafeTreeWriter.prototype.directory;
    let made = 0;
    const spy = vi.spyOn(SafeTreeWriter.prototype, 'directory').mockImplementation(function (
      this: SafeTreeWriter,
      ...args: Parameters<SafeTreeWriter['directory']>
    ) {
      if (++made === 10) controller.abort(new Error('stopped'));
      return make.apply(this, args);
    });
    try {
      const into = join(work.path, 'aborted');
      await mkdir(into);
      await expect(store.restore(into, ref, { signal: controller.signal })).rejects.toThrow('stopped');
      // The calls already under way finish; none starts after the abort (before: the whole level of 2,000).
      expect((await readdir(into)).length).toBeLessThan(50);
    } finally {
      spy.mockRestore();
    }
  });

  it("chunked restores take restoreSlots: an owner's restore waits for its share, another owner's does not", async () => {
    await writeFile(join(source, 'a'), 'content');
    const slots = new OwnerSlots(2, 1);
    const store = new BackupStore(storage, { mode: 'per-owner' }, { restoreSlots: slots });
    const bob = { owner: 'owner-2', workspaceId: 'ws-1' };
    await store.backup(source, ref);
    await store.backup(source, bob);
    await mkdir(join(work.path, 'r1'));
    await mkdir(join(work.path, 'r2'));
    // Another restore of owner-1's holds its one slot.
    const held = await slots.acquire(ref.owner);
    let done = false;
    const waiting = store.restore(join(work.path, 'r1'), ref).then((r) => ((done = true), r));
    expect((await store.restore(join(work.path, 'r2'), bob))?.format).toBe('chunked');
    expect(done).toBe(false);
    held();
    expect((await waiting)?.format).toBe('chunked');
    expect(await readFile(join(work.path, 'r1', 'a'), 'utf8')).toBe('content');
    expect(slots.inUse()).toBe(0);
  });

  for (const format of ['chunked', 'tar'] as const) {
    it(`backs up and restores a tree identically (${format})`, async () => {
      await makeTree(source, 60);
      const store = new BackupStore(storage, { mode: 'per-owner' }, { format, packSize: 1024 * 1024 });
      expect(await store.find(ref)).toBeUndefined();
      const result = await store.backup(source, ref);
      expect(result.format).toBe(format);
      expect(result.url).toMatch(
        format === 'tar' ? /workspaces\/ws-1\/full\.tar@workbay-user-owner-1$/ : /full\.manifest@/,
      );
      const target = join(work.path, 'restored');
      await mkdir(target);
      const restored = await store.restore(target, ref);
      expect(restored?.format).toBe(format);
      expect(await describeTree(target)).toEqual(await describeTree(source, skipReady));
    });
  }

  it('re-uploads only what changed (incremental), and collects garbage after repacking', async () => {
    const names = await makeTree(source, 200);
    // Files changed within the last 2 s are always re-read (their ctime could still move within one tick).
    await new Promise((resolve) => setTimeout(resolve, 2100));
    const store = new BackupStore(storage, { mode: 'per-owner' }, { packSize: 256 * 1024 });
    const first = await store.backup(source, ref);
    expect(first.chunked?.newBlobs).toBeGreaterThan(200);
    // Change 2 of 200 small files and append to the big one.
    await writeFile(join(source, names[3] as string), randomBytes(3000));
    await writeFile(join(source, names[150] as string), randomBytes(3000));
    await appendFile(join(source, 'big.bin'), randomBytes(100));
    const second = await store.backup(source, ref);
    // Only the changed files were read again (big.bin and two small ones), not the unchanged ones.
    expect(second.chunked?.readBytes).toBeLessThan(16 * 1024 * 1024 + 100_000);
    expect(second.uploadedBytes).toBeLessThan(first.uploadedBytes / 4);
    // Nothing changed: nothing but the manifest goes up.
    const third = await store.backup(source, ref);
    expect(third.chunked?.newBlobs).toBe(0);
    const target = join(work.path, 'restored');
    await mkdir(target);
    await store.restore(target, ref);
    expect(await describeTree(target)).toEqual(await describeTree(source, skipReady));
    // Delete most small files: packs that are now mostly garbage get their live blobs rewritten.
    for (const name of names.slice(0, 160)) await rm(join(source, name));
    const repacked = await store.backup(source, ref);
    expect(repacked.chunked?.repackedBlobs).toBeGreaterThan(0);
    expect(repacked.chunked?.deletedPacks).toBeGreaterThan(0);
    await rm(target, { recursive: true });
    await mkdir(target);
    await store.restore(target, ref);
    expect(await describeTree(target)).toEqual(await describeTree(source, skipReady));
    // Replace everything: the old packs become garbage and are deleted after the commit.
    await rm(source, { recursive: true });
    await mkdir(source);
    await makeTree(source, 20);
    const fourth = await store.backup(source, ref);
    expect(fourth.chunked?.deletedPacks).toBeGreaterThan(0);
    let stored = 0;
    for await (const info of storage.list('workbay-user-owner-1', { prefix: 'workspaces/ws-1/chunks/' }))
      stored += info.size;
    expect(stored).toBeLessThan(fourth.contentBytes * 1.6);
  });

  it('a backup that fails mid-upload leaves the previous backup restorable, byte for byte', async () => {
    await makeTree(source, 40);
    const good = new BackupStore(storage, { mode: 'per-owner' }, { packSize: 128 * 1024 });
    await good.backup(source, ref);
    const expected = await describeTree(source, skipReady);
    await writeFile(join(source, 'new-file'), randomBytes(500_000));
    await writeFile(join(source, 'd1/f1.dat'), 'changed');
    let uploads = 0;
    const flaky: RemoteStorage = Object.assign(Object.create(storage) as RemoteStorage, {
      upload: async (bucket: string, name: string, body: Readable, options?: UploadOptions): Promise<ObjectInfo> => {
        if (++uploads === 2) {
          body.destroy();
          throw new Error('network down');
        }
        return storage.upload(bucket, name, body, options);
      },
    });
    const broken = new BackupStore(flaky, { mode: 'per-owner' }, { packSize: 128 * 1024 });
    await expect(broken.backup(source, ref)).rejects.toThrow('network down');
    const target = join(work.path, 'restored');
    await mkdir(target);
    await good.restore(target, ref);
    expect(await describeTree(target)).toEqual(expected);
  });

  it('fails loudly on a corrupted pack instead of restoring wrong bytes', async () => {
    await makeTree(source, 5);
    const store = new BackupStore(storage, { mode: 'per-owner' }, {});
    await store.backup(source, ref);
    const packs: string[] = [];
    for await (const info of storage.list('workbay-user-owner-1', { prefix: 'workspaces/ws-1/chunks/' }))
      packs.push(info.name);
    const original = await readFile(join(source, 'big.bin'));
    for (const name of packs) {
      const chunks: Buffer[] = [];
      for await (const c of await storage.download('workbay-user-owner-1', name)) chunks.push(c as Buffer);
      const data = Buffer.concat(chunks);
      const at = data.indexOf(original.subarray(0, 64));
      if (at >= 0) data[at + 10] = (data[at + 10] as number) ^ 0xff;
      await storage.upload('workbay-user-owner-1', name, Readable.from([data]));
    }
    const target = join(work.path, 'restored');
    await mkdir(target);
    const error = await store.restore(target, ref).catch((e: unknown) => e);
    expect(isWorkbayError(error, 'internal')).toBe(true);
    expect(String(error)).toMatch(/digest mismatch/);
  });

  it('cuts large files where the streaming reference chunker cuts them', async () => {
    const data = randomBytes(20 * 1024 * 1024 + 12345);
    await writeFile(join(source, 'large.bin'), data);
    const store = new BackupStore(storage, { mode: 'per-owner' }, {});
    await store.backup(source, ref);
    const manifest = await readManifest(store.target(ref));
    const entry = manifest?.entries.find((e) => e.path === 'large.bin');
    const stored = (entry?.blobs ?? []).map((b) => manifest!.blobs[b]![3]);
    const reference: number[] = [];
    const chunker = new StreamChunker();
    for (let i = 0; i < data.length; i += 777_777)
      for (const chunk of chunker.push(data.subarray(i, i + 777_777))) reference.push(chunk.length);
    for (const chunk of chunker.flush()) reference.push(chunk.length);
    expect(stored).toEqual(reference);
    expect(reference.length).toBeGreaterThan(5);
  });

  it('snapshots are plain tars named snapshot-<unixnano>.tar; a missing snapshot is NOT_FOUND', async () => {
    await makeTree(source, 5);
    const store = new BackupStore(storage, { mode: 'shared', bucket: 'shared-bucket' }, { compression: 'gzip' });
    const snapshot = await store.snapshot(source, ref);
    expect(snapshot.url).toMatch(/^owner-1\/workspaces\/ws-1\/snapshot-\d{19}\.tar@shared-bucket$/);
    const target = join(work.path, 'restored');
    await mkdir(target);
    await store.restoreSnapshot(target, snapshot.url, 'snapshot');
    expect(await describeTree(target)).toEqual(await describeTree(source, skipReady));
    const missing = await store.restoreSnapshot(target, 'nope.tar@shared-bucket', 'snapshot').catch((e: unknown) => e);
    expect(isWorkbayError(missing, 'not-found')).toBe(true);
    const malformed = await store
      .restoreSnapshot(target, 'no-bucket', 'initializer.snapshot.snapshot')
      .catch((e: unknown) => e);
    expect(String(malformed)).toMatch(/initializer\.snapshot\.snapshot/);
  });

  it('deletes only snapshot objects, in both bucket layouts; backups and chunks cannot be named', async () => {
    await makeTree(source, 5);
    for (const layout of [{ mode: 'per-owner' as const }, { mode: 'shared' as const, bucket: 'shared-bucket' }]) {
      const store = new BackupStore(storage, layout, { packSize: 1024 * 1024 });
      const backup = await store.backup(source, ref);
      const snapshot = await store.snapshot(source, ref);
      const bucket = snapshot.bucket;
      const prefix = layout.mode === 'shared' ? 'owner-1/' : '';
      const stored: string[] = [];
      for await (const info of storage.list(bucket)) stored.push(info.name);
      const chunk = stored.find((name) => name.includes('/chunks/'));
      expect(chunk).toBeDefined();
      const refused = [
        backup.url,
        `${chunk}@${bucket}`,
        `${prefix}workspaces/ws-1/full.tar@${bucket}`,
        `${prefix}workspaces/ws-1/snapshot-1.tar/../full.tar@${bucket}`,
        `${prefix}workspaces/ws-1/snapshot-01.tar@${bucket}`,
        `${prefix}workspaces/ws-1/snapshot-x.tar@${bucket}`,
        `${prefix}workspaces/ws-1/sub/snapshot-1.tar@${bucket}`,
        `${prefix}workspaces/../snapshot-1.tar@${bucket}`,
        `${snapshot.name}@other-bucket`,
        layout.mode === 'shared' ? `workspaces/ws-1/snapshot-1.tar@${bucket}` : `x/${snapshot.name}@${bucket}`,
        'no-bucket',
      ];
      for (const qualified of refused) {
        const error = await store.deleteSnapshot(qualified, 'req.snapshot').catch((e: unknown) => e);
        expect(isWorkbayError(error, 'invalid-argument'), `${qualified}: ${String(error)}`).toBe(true);
        expect((error as { field: string }).field).toBe('req.snapshot');
      }
      await store.deleteSnapshot(snapshot.url);
      expect(await storage.stat(bucket, snapshot.name)).toBeUndefined();
      const again = await store.deleteSnapshot(snapshot.url).catch((e: unknown) => e);
      expect(isWorkbayError(again, 'not-found')).toBe(true);
      const after: string[] = [];
      for await (const info of storage.list(bucket)) after.push(info.name);
      expect(after).toEqual(stored.filter((name) => name !== snapshot.name));
      const target = join(work.path, `restored-${layout.mode}`);
      await mkdir(target);
      await store.restore(target, ref);
      expect(await describeTree(target)).toEqual(await describeTree(source, skipReady));
    }
  });
});
