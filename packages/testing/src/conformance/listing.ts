// Conformance groups 'not-found semantics' and 'listing': a missing object rejects downloads with NotFoundError and
// is not confused with a prefix of existing names; listing is recursive, in byte-wise name order, filtered by prefix,
// and goes past one page of a typical API.
import { describe, expect, it } from 'vitest';
import type { ConformanceContext } from './context.js';
import { body, collect, compareNames, expectNotFound, runLimited } from './context.js';

export function describeNotFoundSemantics(ctx: ConformanceContext): void {
  describe('not-found semantics', () => {
    it('download rejects with NotFoundError, stat is undefined, delete is a no-op', async () => {
      const { storage, bucket } = ctx;
      await expectNotFound(storage.download(bucket, 'nf/missing.tar'), ['nf/missing.tar']);
      expect(await storage.stat(bucket, 'nf/missing.tar')).toBeUndefined();
      expect(await storage.delete(bucket, { name: 'nf/missing.tar' })).toBe(0);
      expect(await storage.delete(bucket, { prefix: 'nf/none/' })).toBe(0);
    });

    it('a prefix of an existing name is not an object', async () => {
      const { storage, bucket } = ctx;
      await storage.upload(bucket, 'nf/dir/file.txt', body('x'));
      expect(await storage.stat(bucket, 'nf/dir')).toBeUndefined();
      expect(await storage.stat(bucket, 'nf/dir/')).toBeUndefined();
      await expectNotFound(storage.download(bucket, 'nf/dir'), []);
    });
  });
}

export function describeListing(ctx: ConformanceContext): void {
  describe('listing', () => {
    // Not required: one name being both an object and a "directory" of others (`a` and `a/z`). MinIO and
    // filesystem-backed stores cannot hold both, and Workbay's layout never creates such names.
    it('lists in name order, recursively, filtered by prefix', async () => {
      const { storage, bucket } = ctx;
      const names = ['ls/b', 'ls/a', 'ls/c/e', 'ls/c/d', 'ls/aa', 'ls/ab/z', 'lsx/other'];
      for (const objectName of names) await storage.upload(bucket, objectName, body(`data of ${objectName}`));
      const all = await collect(storage.list(bucket, { prefix: 'ls/' }));
      expect(all.map((o) => o.name)).toEqual(['ls/a', 'ls/aa', 'ls/ab/z', 'ls/b', 'ls/c/d', 'ls/c/e']);
      for (const info of all) {
        expect(info.bucket).toBe(bucket);
        expect(info.size).toBe(Buffer.byteLength(`data of ${info.name}`));
        expect(info.lastModified).toBeInstanceOf(Date);
      }
      expect((await collect(storage.list(bucket, { prefix: 'ls/c/' }))).map((o) => o.name)).toEqual([
        'ls/c/d',
        'ls/c/e',
      ]);
      expect((await collect(storage.list(bucket, { prefix: 'ls/a' }))).map((o) => o.name)).toEqual([
        'ls/a',
        'ls/aa',
        'ls/ab/z',
      ]);
      expect(await collect(storage.list(bucket, { prefix: 'ls/nothing-here/' }))).toEqual([]);
      const everything = (await collect(storage.list(bucket))).map((o) => o.name);
      expect(everything).toEqual(expect.arrayContaining([...names]));
      expect(everything).toEqual([...everything].sort(compareNames));
    });

    it('lists more objects than one page of a typical API (1 100)', async () => {
      const { storage, bucket } = ctx;
      const count = 1_100;
      const names = Array.from({ length: count }, (_, i) => `page/${String(i).padStart(5, '0')}`);
      await runLimited(names, 16, (n) => storage.upload(bucket, n, body('p')).then(() => undefined));
      const listed = (await collect(storage.list(bucket, { prefix: 'page/' }))).map((o) => o.name);
      expect(listed).toEqual(names);
      expect(await storage.delete(bucket, { prefix: 'page/' })).toBe(count);
      expect(await collect(storage.list(bucket, { prefix: 'page/' }))).toEqual([]);
    });
  });
}
