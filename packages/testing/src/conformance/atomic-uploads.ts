// Conformance group 'atomic uploads': readers see the previous version until an upload completes, and an upload
// whose source fails or that is aborted leaves the previous version intact and no half object.
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { MiB, digestStream, generateStream, sha256Of } from '../data.js';
import type { ConformanceContext } from './context.js';
import { body, collect } from './context.js';

export function describeAtomicUploads(ctx: ConformanceContext): void {
  describe('atomic uploads', () => {
    it('readers see the previous version until a new upload completes', async () => {
      const { storage, bucket } = ctx;
      const v1 = randomBytes(64 * 1024);
      await storage.upload(bucket, 'at/visible', body(v1), { digest: sha256Of(v1) });
      const v2 = generateStream(12 * MiB, { chunkSize: 256 * 1024, chunkDelayMs: 5 });
      const uploading = storage.upload(bucket, 'at/visible', v2.stream);
      uploading.catch(() => undefined);
      while (v2.produced() < 6 * MiB) await sleep(20);
      const during = await digestStream(await storage.download(bucket, 'at/visible'));
      expect(during.digest).toBe(sha256Of(v1));
      expect((await storage.stat(bucket, 'at/visible'))?.size).toBe(v1.length);
      await uploading;
      const after = await digestStream(await storage.download(bucket, 'at/visible'));
      expect(after).toEqual({ digest: await v2.digest, size: 12 * MiB });
    });

    it('a source that fails midway rejects, leaves the previous version intact and no half object', async () => {
      const { storage, bucket } = ctx;
      const v1 = randomBytes(100 * 1024);
      await storage.upload(bucket, 'at/fail/obj', body(v1), { digest: sha256Of(v1) });
      const broken = generateStream(64 * MiB, { failAfterBytes: 9 * MiB, failWith: new Error('disk read failed') });
      await expect(storage.upload(bucket, 'at/fail/obj', broken.stream)).rejects.toThrow();
      const back = await digestStream(await storage.download(bucket, 'at/fail/obj'));
      expect(back).toEqual({ digest: sha256Of(v1), size: v1.length });
      expect((await storage.stat(bucket, 'at/fail/obj'))?.digest).toBe(sha256Of(v1));
      // A new name that fails leaves nothing at all.
      const broken2 = generateStream(64 * MiB, { failAfterBytes: 7 * MiB });
      await expect(storage.upload(bucket, 'at/fail/new', broken2.stream)).rejects.toThrow();
      expect(await storage.stat(bucket, 'at/fail/new')).toBeUndefined();
      const small = generateStream(1 * MiB, { failAfterBytes: 100 });
      await expect(storage.upload(bucket, 'at/fail/tiny', small.stream)).rejects.toThrow();
      expect(await storage.stat(bucket, 'at/fail/tiny')).toBeUndefined();
      const listed = (await collect(storage.list(bucket, { prefix: 'at/fail/' }))).map((o) => o.name);
      expect(listed).toEqual(['at/fail/obj']);
    });

    it('an upload aborted with an AbortSignal rejects and leaves the previous version intact', async () => {
      const { storage, bucket } = ctx;
      const v1 = randomBytes(50 * 1024);
      await storage.upload(bucket, 'at/abort/obj', body(v1));
      const controller = new AbortController();
      const slow = generateStream(256 * MiB, { chunkSize: 256 * 1024, chunkDelayMs: 2 });
      const uploading = storage.upload(bucket, 'at/abort/obj', slow.stream, { signal: controller.signal });
      uploading.catch(() => undefined);
      while (slow.produced() < 7 * MiB) await sleep(10);
      controller.abort();
      await expect(uploading).rejects.toThrow();
      const back = await digestStream(await storage.download(bucket, 'at/abort/obj'));
      expect(back).toEqual({ digest: sha256Of(v1), size: v1.length });
      // An already-aborted signal refuses to start.
      await expect(
        storage.upload(bucket, 'at/abort/never', body('x'), { signal: AbortSignal.abort() }),
      ).rejects.toThrow();
      expect(await storage.stat(bucket, 'at/abort/never')).toBeUndefined();
      const listed = (await collect(storage.list(bucket, { prefix: 'at/abort/' }))).map((o) => o.name);
      expect(listed).toEqual(['at/abort/obj']);
    });
  });
}
