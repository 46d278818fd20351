// Conformance groups 'overwrite and delete' and 'concurrency': an overwrite replaces content and metadata, delete by
// name and by prefix removes exactly what it names and counts it; parallel writers never corrupt an object.
import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { MiB, digestStream, readAll, sha256Of } from '../data.js';
import type { ConformanceContext } from './context.js';
import { body, chunked, collect } from './context.js';

export function describeOverwriteAndDelete(ctx: ConformanceContext): void {
  describe('overwrite and delete', () => {
    it('an overwrite replaces content and metadata', async () => {
      const { storage, bucket } = ctx;
      await storage.upload(bucket, 'ow/obj', body('first version'), {
        metadata: { first: '1' },
        contentType: 'text/plain',
        digest: sha256Of('first version'),
      });
      await storage.upload(bucket, 'ow/obj', body('second'), {
        metadata: { second: '2' },
        contentType: 'application/octet-stream',
      });
      expect((await readAll(await storage.download(bucket, 'ow/obj'))).toString()).toBe('second');
      const stat = await storage.stat(bucket, 'ow/obj');
      expect(stat?.size).toBe(6);
      expect(stat?.metadata).toMatchObject({ second: '2' });
      expect(stat?.metadata['first']).toBeUndefined();
      expect(stat?.digest).not.toBe(sha256Of('first version'));
      expect(stat?.contentType).toBe('application/octet-stream');
    });

    it('delete by name returns 1, then 0', async () => {
      const { storage, bucket } = ctx;
      await storage.upload(bucket, 'del/one', body('1'));
      expect(await storage.delete(bucket, { name: 'del/one' })).toBe(1);
      expect(await storage.stat(bucket, 'del/one')).toBeUndefined();
      expect(await storage.delete(bucket, { name: 'del/one' })).toBe(0);
    });

    it('delete by prefix removes exactly the objects under it and returns the count', async () => {
      const { storage, bucket } = ctx;
      for (const n of ['del/p/a1', 'del/p/a2', 'del/p/a3/deep', 'del/p/b1', 'del/q/a1']) {
        await storage.upload(bucket, n, body(n));
      }
      expect(await storage.delete(bucket, { prefix: 'del/p/a' })).toBe(3);
      const left = (await collect(storage.list(bucket, { prefix: 'del/' }))).map((o) => o.name);
      expect(left).toEqual(['del/p/b1', 'del/q/a1']);
      expect(await storage.delete(bucket, { prefix: 'del/' })).toBe(2);
      expect(await collect(storage.list(bucket, { prefix: 'del/' }))).toEqual([]);
    });
  });
}

export function describeConcurrency(ctx: ConformanceContext): void {
  describe('concurrency', () => {
    it('parallel writers to different objects all land intact', async () => {
      const { storage, bucket } = ctx;
      const items = Array.from({ length: 8 }, (_, i) => ({
        name: `cc/diff/${i}`,
        data: randomBytes(256 * 1024 + i * 4099),
      }));
      await Promise.all(
        items.map((it) => storage.upload(bucket, it.name, body(it.data), { digest: sha256Of(it.data) })),
      );
      for (const item of items) {
        const back = await digestStream(await storage.download(bucket, item.name));
        expect(back).toEqual({ digest: sha256Of(item.data), size: item.data.length });
      }
    });

    it('parallel writers to one object: one complete version wins, never a mix', async () => {
      const { storage, bucket } = ctx;
      const writers = Array.from({ length: 4 }, (_, i) => {
        const data = Buffer.alloc(3 * MiB + i * 1_000, 0x41 + i);
        return { data, digest: sha256Of(data) };
      });
      const results = await Promise.allSettled(
        writers.map((w) =>
          storage.upload(bucket, 'cc/same', Readable.from(chunked(w.data, 256 * 1024)), {
            digest: w.digest,
            metadata: { writer: w.digest },
          }),
        ),
      );
      // A backend may refuse a conflicting writer, but at least one must succeed and none may corrupt.
      const winners = writers.filter((_, i) => results[i]!.status === 'fulfilled');
      expect(winners.length).toBeGreaterThan(0);
      const back = await digestStream(await storage.download(bucket, 'cc/same'));
      const winner = winners.find((w) => w.digest === back.digest);
      expect(winner, 'the stored object is exactly one writer’s data').toBeDefined();
      expect(back.size).toBe(winner!.data.length);
      const stat = await storage.stat(bucket, 'cc/same');
      expect(stat?.digest).toBe(back.digest);
      expect(stat?.metadata['writer']).toBe(back.digest);
    });
  });
}
