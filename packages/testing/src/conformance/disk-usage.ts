// Conformance group 'disk usage': diskUsage sums object sizes for a whole bucket and under a prefix.
import { describe, expect, it } from 'vitest';
import type { ConformanceContext } from './context.js';
import { body, emptyBody, uniqueBucket } from './context.js';

export function describeDiskUsage(ctx: ConformanceContext): void {
  describe('disk usage', () => {
    it('sums object sizes for the whole bucket and under a prefix', async () => {
      const { storage } = ctx;
      const duBucket = uniqueBucket('du');
      await storage.ensureBucket(duBucket);
      expect(await storage.diskUsage(duBucket)).toBe(0);
      await storage.upload(duBucket, 'u1/a', body(Buffer.alloc(1000)));
      await storage.upload(duBucket, 'u1/b', body(Buffer.alloc(2345)));
      await storage.upload(duBucket, 'u2/c', body(Buffer.alloc(10)));
      await storage.upload(duBucket, 'u1/empty', emptyBody());
      expect(await storage.diskUsage(duBucket)).toBe(3355);
      expect(await storage.diskUsage(duBucket, 'u1/')).toBe(3345);
      expect(await storage.diskUsage(duBucket, 'u2/')).toBe(10);
      expect(await storage.diskUsage(duBucket, 'u3/')).toBe(0);
      await storage.delete(duBucket, { prefix: '' });
      expect(await storage.diskUsage(duBucket)).toBe(0);
    });
  });
}
