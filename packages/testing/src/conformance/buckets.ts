// Conformance group 'buckets': ensureBucket is idempotent and race-tolerant, bucketExists tells a missing bucket
// from the suite's, and a missing bucket lists nothing, uses no bytes and refuses uploads with NotFoundError.
import { describe, expect, it } from 'vitest';
import type { ConformanceContext } from './context.js';
import { body, collect, expectNotFound, uniqueBucket } from './context.js';

export function describeBuckets(ctx: ConformanceContext): void {
  describe('buckets', () => {
    it('ensureBucket is idempotent and tolerates parallel callers', async () => {
      const { storage } = ctx;
      const fresh = uniqueBucket('race');
      expect(await storage.bucketExists(fresh)).toBe(false);
      await Promise.all(Array.from({ length: 6 }, () => storage.ensureBucket(fresh)));
      expect(await storage.bucketExists(fresh)).toBe(true);
      await storage.ensureBucket(fresh);
      expect(await storage.bucketExists(fresh)).toBe(true);
    });

    it('bucketExists is false for a missing bucket and true for the suite bucket', async () => {
      const { storage, bucket, missingBucket } = ctx;
      expect(await storage.bucketExists(missingBucket)).toBe(false);
      expect(await storage.bucketExists(bucket)).toBe(true);
    });

    it('a missing bucket lists nothing, uses 0 bytes, and rejects uploads with NotFoundError naming it', async () => {
      const { storage, missingBucket } = ctx;
      expect(await collect(storage.list(missingBucket))).toEqual([]);
      expect(await collect(storage.list(missingBucket, { prefix: 'a/' }))).toEqual([]);
      expect(await storage.diskUsage(missingBucket)).toBe(0);
      await expectNotFound(storage.upload(missingBucket, 'x/y.bin', body('data')), [missingBucket]);
      await expectNotFound(storage.download(missingBucket, 'x/y.bin'), []);
      expect(await storage.stat(missingBucket, 'x/y.bin')).toBeUndefined();
      expect(await storage.delete(missingBucket, { name: 'x/y.bin' })).toBe(0);
      expect(await storage.delete(missingBucket, { prefix: 'x/' })).toBe(0);
      expect(await storage.bucketExists(missingBucket)).toBe(false);
    });
  });
}
