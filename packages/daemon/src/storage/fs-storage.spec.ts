import { readdir, stat, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { createHash, randomBytes } from 'node:crypto';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { PluginHost, isWorkbayError } from '@workbay/api';
import { collect, tempDir } from '../test-support/tree.js';
import { FsRemoteStorage, fsStorageInternals } from './fs-storage.js';
import { fsStoragePlugin } from './fs-plugin.js';

const body = (text: string | Buffer): Readable => Readable.from([Buffer.from(text)]);

describe('FsRemoteStorage', () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let storage: FsRemoteStorage;

  beforeEach(async () => {
    dir = await tempDir();
    storage = new FsRemoteStorage({ root: dir.path });
    await storage.ensureBucket('bkt');
  });
  afterEach(async () => {
    await storage.close();
    await dir.cleanup();
  });

  it('uploads, stats and downloads with digest, content type and lower-cased metadata', async () => {
    const info = await storage.upload('bkt', 'a/b/c.txt', body('hello'), {
      contentType: 'text/plain',
      metadata: { Foo: 'bar' },
    });
    const expected = `sha256:${createHash('sha256').update('hello').digest('hex')}`;
    expect(info).toMatchObject({
      bucket: 'bkt',
      name: 'a/b/c.txt',
      size: 5,
      digest: expected,
      contentType: 'text/plain',
      metadata: { foo: 'bar' },
    });
    expect((await storage.stat('bkt', 'a/b/c.txt'))?.size).toBe(5);
    expect((await collect(await storage.download('bkt', 'a/b/c.txt'))).toString()).toBe('hello');
  });

  it('keeps what it stores to the daemon: directories 0700, objects and their metadata 0600', async () => {
    // Every owner's snapshots and backups live here; a workspace's uid on the same node must read none of them.
    await storage.upload('bkt', 'deep/er/object.bin', body('secret'));
    const modes: string[] = [];
    const visit = async (path: string): Promise<void> => {
      for (const entry of await readdir(path, { withFileTypes: true })) {
        const full = join(path, entry.name);
        modes.push(`${entry.isDirectory() ? 'd' : 'f'}${((await stat(full)).mode & 0o777).toString(8)}`);
        if (entry.isDirectory()) await visit(full);
      }
    };
    await visit(dir.path);
    expect(modes.length).toBeGreaterThan(3);
    expect(new Set(modes)).toEqual(new Set(['d700', 'f600']));
  });

  it('keeps S3 semantics: "a" and "a/b" are different objects; odd segments round-trip', async () => {
    const names = ['a', 'a/b', 'x//y', './dot', '..', 'sp ace/%25/ü', 'a/b/'];
    for (const name of names) await storage.upload('bkt', name, body(name));
    for (const name of names) expect((await collect(await storage.download('bkt', name))).toString()).toBe(name);
    const listed: string[] = [];
    for await (const info of storage.list('bkt')) listed.push(info.name);
    expect(listed).toEqual([...names].sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b))));
  });

  it('stores very long segments under a hash and still lists their names', async () => {
    const name = `dir/${'x'.repeat(600)}`;
    await storage.upload('bkt', name, body('long'));
    const listed: string[] = [];
    for await (const info of storage.list('bkt', { prefix: 'dir/' })) listed.push(info.name);
    expect(listed).toEqual([name]);
    expect(fsStorageInternals.encodeSegment('x'.repeat(600))).toMatch(/^%H[0-9a-f]{64}$/);
  });

  it('lists in name order, filtered by prefix, and deletes by prefix', async () => {
    for (const name of ['w/2', 'w/10', 'w/1', 'v/1', 'w-x']) await storage.upload('bkt', name, body(name));
    const names = async (prefix?: string): Promise<string[]> => {
      const out: string[] = [];
      for await (const info of storage.list('bkt', prefix === undefined ? {} : { prefix })) out.push(info.name);
      return out;
    };
    expect(await names()).toEqual(['v/1', 'w-x', 'w/1', 'w/10', 'w/2']);
    expect(await names('w/')).toEqual(['w/1', 'w/10', 'w/2']);
    expect(await names('w')).toEqual(['w-x', 'w/1', 'w/10', 'w/2']);
    expect(await storage.diskUsage('bkt', 'w/')).toBe(3 + 4 + 3);
    expect(await storage.delete('bkt', { prefix: 'w/' })).toBe(3);
    expect(await names()).toEqual(['v/1', 'w-x']);
    expect(await storage.delete('bkt', { name: 'nope' })).toBe(0);
    // Empty directories are pruned.
    const left = (await readdir(join(dir.path, 'bkt'))).sort();
    expect(left).toHaveLength(3);
    expect(left.slice(0, 2)).toEqual(['v', 'w-x%o']);
    expect(left[2]).toMatch(/^w-x%z/);
  });

  it('reports missing objects and buckets the way the contract says', async () => {
    await expect(storage.download('bkt', 'missing')).rejects.toSatisfy((e) => isWorkbayError(e, 'not-found'));
    expect(await storage.stat('bkt', 'missing')).toBeUndefined();
    await expect(storage.upload('nobucket', 'x', body('x'))).rejects.toSatisfy((e) => isWorkbayError(e, 'not-found'));
    const listed: string[] = [];
    for await (const info of storage.list('nobucket')) listed.push(info.name);
    expect(listed).toEqual([]);
    expect(await storage.diskUsage('nobucket')).toBe(0);
    expect(await storage.bucketExists('nobucket')).toBe(false);
    await expect(storage.ensureBucket('Bad_Bucket')).rejects.toSatisfy((e) => isWorkbayError(e, 'invalid-argument'));
  });

  it('is all-or-nothing: a failed upload leaves the previous version readable and no debris', async () => {
    await storage.upload('bkt', 'obj', body('version-1'));
    async function* failing(): AsyncGenerator<Buffer> {
      yield Buffer.from('partial-');
      throw new Error('connection reset');
    }
    await expect(storage.upload('bkt', 'obj', Readable.from(failing()))).rejects.toThrow('connection reset');
    expect((await collect(await storage.download('bkt', 'obj'))).toString()).toBe('version-1');
    const files = await readdir(join(dir.path, 'bkt'));
    expect(files.filter((f) => f.startsWith('obj%z'))).toHaveLength(1);
    expect(files.filter((f) => f.includes('%t'))).toHaveLength(0);
  });

  it('rejects a digest that does not match and keeps the old object', async () => {
    await storage.upload('bkt', 'obj', body('one'));
    await expect(storage.upload('bkt', 'obj', body('two'), { digest: `sha256:${'0'.repeat(64)}` })).rejects.toSatisfy(
      (e) => isWorkbayError(e, 'invalid-argument'),
    );
    expect((await collect(await storage.download('bkt', 'obj'))).toString()).toBe('one');
  });

  it('large objects (digest computed by a worker reading the file back) get the right digest, or are refused', async () => {
    const parts = [randomBytes(700 * 1024), randomBytes(900 * 1024), randomBytes(3 * 1024 * 1024 + 5)];
    const whole = Buffer.concat(parts);
    const expected = `sha256:${createHash('sha256').update(whole).digest('hex')}`;
    const uploads = await Promise.all(
      [0, 1, 2].map((i) => storage.upload('bkt', `chunks/p${i}`, Readable.from(parts), { digest: expected })),
    );
    for (const info of uploads) expect(info).toMatchObject({ size: whole.length, digest: expected });
    expect((await collect(await storage.download('bkt', 'chunks/p1'))).equals(whole)).toBe(true);
    const tampered = Buffer.from(whole);
    tampered[whole.length - 1] = (tampered[whole.length - 1] as number) ^ 1;
    await expect(storage.upload('bkt', 'chunks/p0', body(tampered), { digest: expected })).rejects.toSatisfy((e) =>
      isWorkbayError(e, 'invalid-argument'),
    );
    expect((await collect(await storage.download('bkt', 'chunks/p0'))).equals(whole)).toBe(true);
    expect((await readdir(join(dir.path, 'bkt', 'chunks'))).filter((f) => f.includes('%t'))).toHaveLength(0);
  });

  it('large bodies of shared memory (hashed by a worker from that memory) get the right digest, or are refused', async () => {
    const shared = (data: Buffer): Buffer => {
      const view = Buffer.from(new SharedArrayBuffer(data.length + 16), 8, data.length);
      data.copy(view);
      return view;
    };
    const parts = [randomBytes(700 * 1024), randomBytes(900 * 1024), randomBytes(3 * 1024 * 1024 + 5)];
    const whole = Buffer.concat(parts);
    const expected = `sha256:${createHash('sha256').update(whole).digest('hex')}`;
    // All shared, and shared first with an ordinary buffer among them (copied to the worker).
    const bodies = [parts.map(shared), [shared(parts[0] as Buffer), parts[1] as Buffer, shared(parts[2] as Buffer)]];
    for (const [i, list] of bodies.entries()) {
      const info = await storage.upload('bkt', `shm/p${i}`, Readable.from(list), { digest: expected });
      expect(info).toMatchObject({ size: whole.length, digest: expected });
      expect((await collect(await storage.download('bkt', `shm/p${i}`))).equals(whole)).toBe(true);
    }
    // Without a caller's digest, the recorded one is still the content's.
    const unasked = await storage.upload('bkt', 'shm/unasked', Readable.from(parts.map(shared)));
    expect(unasked.digest).toBe(expected);
    const tampered = Buffer.from(whole);
    tampered[whole.length - 1] = (tampered[whole.length - 1] as number) ^ 1;
    await expect(
      storage.upload('bkt', 'shm/p0', Readable.from([shared(tampered)]), { digest: expected }),
    ).rejects.toSatisfy((e) => isWorkbayError(e, 'invalid-argument'));
    expect((await collect(await storage.download('bkt', 'shm/p0'))).equals(whole)).toBe(true);
    expect((await readdir(join(dir.path, 'bkt', 'shm'))).filter((f) => f.includes('%t'))).toHaveLength(0);
  });

  it('sweeps leftovers of crashed uploads older than 10 minutes, never the current data of an object', async () => {
    await storage.upload('bkt', 'a/x', body('current'));
    const folder = join(dir.path, 'bkt', 'a');
    const current = (await readdir(folder)).find((f) => f.startsWith('x%z')) as string;
    const old = new Date(Date.now() - 11 * 60 * 1000);
    const leftovers = ['x%zk0ld0000aaaa', 'x%tk0ld0000bbbb', 'gone%zk0ld0000cccc'];
    for (const name of [...leftovers, 'x%zfresh0000dddd']) await writeFile(join(folder, name), 'partial');
    for (const name of [...leftovers, current]) await utimes(join(folder, name), old, old);
    // Another process (its own sweep times) uploads into the same directory.
    const other = new FsRemoteStorage({ root: dir.path });
    try {
      await other.upload('bkt', 'a/y', body('y'));
    } finally {
      await other.close();
    }
    const names = await readdir(folder);
    for (const name of leftovers) expect(names).not.toContain(name);
    expect(names).toContain('x%zfresh0000dddd');
    expect((await collect(await storage.download('bkt', 'a/x'))).toString()).toBe('current');
  });

  it('readInto refuses an offset that is not a non-negative integer, and changes nothing', async () => {
    await storage.upload('bkt', 'obj', body('hello'));
    for (const offset of [-1, 1.5, Number.NaN]) {
      const error = await storage.readInto('bkt', 'obj', Buffer.alloc(4), { offset }).catch((e: unknown) => e);
      expect(isWorkbayError(error, 'invalid-argument')).toBe(true);
    }
    expect((await collect(await storage.download('bkt', 'obj'))).toString()).toBe('hello');
  });

  it('records no digest for content its caller verifies, unless the caller gives one (then still checked)', async () => {
    const data = randomBytes(3 * 1024 * 1024);
    const expected = `sha256:${createHash('sha256').update(data).digest('hex')}`;
    const skipped = await storage.upload('bkt', 'packs/a', body(data), { verifiedByCaller: true });
    expect(skipped.digest).toBeUndefined();
    expect((await storage.stat('bkt', 'packs/a'))?.digest).toBeUndefined();
    expect((await collect(await storage.download('bkt', 'packs/a'))).equals(data)).toBe(true);
    const given = await storage.upload('bkt', 'packs/b', body(data), { verifiedByCaller: true, digest: expected });
    expect(given.digest).toBe(expected);
    await expect(
      storage.upload('bkt', 'packs/b', body(randomBytes(16)), { verifiedByCaller: true, digest: expected }),
    ).rejects.toSatisfy((e) => isWorkbayError(e, 'invalid-argument'));
    expect((await storage.stat('bkt', 'packs/b'))?.digest).toBe(expected);
  });

  it('a reader that opened the old version keeps reading it while an overwrite commits', async () => {
    const big = Buffer.alloc(4 * 1024 * 1024, 1);
    await storage.upload('bkt', 'obj', body(big));
    const reading = await storage.download('bkt', 'obj');
    await storage.upload('bkt', 'obj', body('new'));
    expect((await collect(reading)).equals(big)).toBe(true);
    expect((await collect(await storage.download('bkt', 'obj'))).toString()).toBe('new');
  });

  it('serves presigned GET and PUT URLs with expiring HMAC signatures', async () => {
    await storage.upload('bkt', 'dir/file.bin', body('payload'));
    const get = await storage.presignedUrl('GET', 'bkt', 'dir/file.bin');
    const response = await fetch(get);
    expect(response.status).toBe(200);
    expect(await response.text()).toBe('payload');

    const put = await storage.presignedUrl('PUT', 'bkt', 'uploaded/x y.txt', { contentType: 'text/plain' });
    expect((await fetch(put, { method: 'PUT', body: 'via-url' })).status).toBe(200);
    const info = await storage.stat('bkt', 'uploaded/x y.txt');
    expect(info?.contentType).toBe('text/plain');
    expect((await collect(await storage.download('bkt', 'uploaded/x y.txt'))).toString()).toBe('via-url');

    const tampered = get.replace('dir/file.bin', 'dir/other.bin');
    expect((await fetch(tampered)).status).toBe(403);
    // A PUT URL cannot be used to GET.
    expect((await fetch(put)).status).toBe(403);
    const missing = await storage.presignedUrl('GET', 'bkt', 'missing');
    expect((await fetch(missing)).status).toBe(404);
    const expiring = await storage.presignedUrl('GET', 'bkt', 'dir/file.bin', { expiresInSeconds: 1 });
    await new Promise((resolve) => setTimeout(resolve, 2100));
    expect((await fetch(expiring)).status).toBe(403);
  });

  it('is registered through its plugin and selected by kind', async () => {
    const host = new PluginHost();
    host.use(fsStoragePlugin);
    expect(host.storageKinds()).toEqual(['fs']);
    const created = await host.createStorage('fs', { root: join(dir.path, 'via-plugin') });
    expect(created.kind).toBe('fs');
    await created.ensureBucket('abc');
    expect(await created.bucketExists('abc')).toBe(true);
    await expect(host.createStorage('fs', { rooot: 'x' })).rejects.toThrow(/storage\.rooot/);
    await created.close?.();
  });
});
