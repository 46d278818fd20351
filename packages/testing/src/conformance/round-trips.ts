// Conformance group 'round trips': empty, small (with content type, metadata and digest), oddly named, binary and
// large streamed objects come back byte for byte; plus the optional readInto, verifiedByCaller and verifyDigest.
import { Readable } from 'node:stream';
import { FailedPreconditionError, isWorkbayError } from '@workbay/api';
import { describe, expect, it } from 'vitest';
import { MiB, digestStream, generateStream, readAll, sha256Of } from '../data.js';
import type { ConformanceContext } from './context.js';
import { body, chunked, collect, emptyBody, memoryWatch } from './context.js';

export function describeRoundTrips(ctx: ConformanceContext): void {
  describe('round trips', () => {
    it('an empty object', async () => {
      const { storage, bucket } = ctx;
      const info = await storage.upload(bucket, 'rt/empty', emptyBody());
      expect(info).toMatchObject({ bucket, name: 'rt/empty', size: 0 });
      const bytes = await readAll(await storage.download(bucket, 'rt/empty'));
      expect(bytes.length).toBe(0);
      expect((await storage.stat(bucket, 'rt/empty'))?.size).toBe(0);
    });

    it('a small object with content type, metadata and digest', async () => {
      const { storage, bucket } = ctx;
      const text = 'hello, workbay\n';
      const digest = sha256Of(text);
      const info = await storage.upload(bucket, 'rt/small.txt', body(text), {
        contentType: 'text/plain',
        metadata: { owner: 'alice', 'Mixed-Case': 'Value With Spaces' },
        digest,
      });
      expect(info.bucket).toBe(bucket);
      expect(info.name).toBe('rt/small.txt');
      expect(info.size).toBe(Buffer.byteLength(text));
      expect(info.lastModified).toBeInstanceOf(Date);
      expect(info.digest).toBe(digest);
      expect(info.contentType).toBe('text/plain');
      const stat = await storage.stat(bucket, 'rt/small.txt');
      expect(stat).toBeDefined();
      expect(stat!.size).toBe(Buffer.byteLength(text));
      expect(stat!.digest).toBe(digest);
      expect(stat!.contentType).toBe('text/plain');
      expect(stat!.lastModified).toBeInstanceOf(Date);
      expect(Math.abs(stat!.lastModified.getTime() - Date.now())).toBeLessThan(10 * 60_000);
      expect(stat!.metadata).toMatchObject({ owner: 'alice', 'mixed-case': 'Value With Spaces' });
      expect((await readAll(await storage.download(bucket, 'rt/small.txt'))).toString()).toBe(text);
    });

    it('names with spaces, unicode and URL-special characters', async () => {
      const { storage, bucket } = ctx;
      const names = ['rt/odd/with space.tar', 'rt/odd/ünïcødé-名前.bin', 'rt/odd/plus+amp&eq=q?hash#pct%.x'];
      for (const objectName of names) {
        await storage.upload(bucket, objectName, body(objectName));
        expect((await readAll(await storage.download(bucket, objectName))).toString()).toBe(objectName);
        expect((await storage.stat(bucket, objectName))?.name).toBe(objectName);
      }
      const listed = (await collect(storage.list(bucket, { prefix: 'rt/odd/' }))).map((o) => o.name);
      expect([...listed].sort()).toEqual([...names].sort());
    });

    it('binary data of every byte value, size given up front', async () => {
      const { storage, bucket } = ctx;
      const data = Buffer.alloc(12 * MiB + 3);
      for (let i = 0; i < data.length; i++) data[i] = (i * 31 + (i >> 11)) & 0xff;
      const info = await storage.upload(bucket, 'rt/binary.bin', Readable.from(chunked(data, 64 * 1024)), {
        size: data.length,
        contentType: 'application/octet-stream',
      });
      expect(info.size).toBe(data.length);
      const back = await digestStream(await storage.download(bucket, 'rt/binary.bin'));
      expect(back).toEqual({ digest: sha256Of(data), size: data.length });
    });

    it('readInto, where present: fills the buffer from an offset, stops at the end, and misses like download', async () => {
      const { storage, bucket } = ctx;
      // Optional (RemoteStorage.readInto); a backend without it passes vacuously.
      if (!storage.readInto) return;
      const data = Buffer.alloc(2 * MiB + 7);
      for (let i = 0; i < data.length; i++) data[i] = (i * 11 + (i >> 10)) & 0xff;
      await storage.upload(bucket, 'rt/read-into.bin', Readable.from(chunked(data, 64 * 1024)));
      const whole = Buffer.alloc(data.length);
      expect(await storage.readInto(bucket, 'rt/read-into.bin', whole)).toBe(data.length);
      expect(whole.equals(data)).toBe(true);
      const shared = Buffer.from(new SharedArrayBuffer(MiB));
      expect(await storage.readInto(bucket, 'rt/read-into.bin', shared, { offset: 5000 })).toBe(MiB);
      expect(shared.equals(data.subarray(5000, 5000 + MiB))).toBe(true);
      const tail = Buffer.alloc(100);
      expect(await storage.readInto(bucket, 'rt/read-into.bin', tail, { offset: data.length - 40 })).toBe(40);
      expect(tail.subarray(0, 40).equals(data.subarray(data.length - 40))).toBe(true);
      const missing = await storage.readInto(bucket, 'rt/not-there.bin', Buffer.alloc(10)).catch((e: unknown) => e);
      expect(isWorkbayError(missing, 'not-found')).toBe(true);
    });

    it('verifiedByCaller: the object round-trips; a digest given beside it is the one recorded', async () => {
      const { storage, bucket } = ctx;
      // A backend may skip its own digest of such content; what it stores and reports must not change.
      const data = Buffer.alloc(3 * MiB + 1);
      for (let i = 0; i < data.length; i++) data[i] = (i * 13 + (i >> 9)) & 0xff;
      const info = await storage.upload(bucket, 'rt/self-verified.bin', Readable.from(chunked(data, 64 * 1024)), {
        verifiedByCaller: true,
      });
      expect(info.size).toBe(data.length);
      expect(await digestStream(await storage.download(bucket, 'rt/self-verified.bin'))).toEqual({
        digest: sha256Of(data),
        size: data.length,
      });
      if (info.digest !== undefined) expect(info.digest).toBe(sha256Of(data));
      const given = await storage.upload(bucket, 'rt/self-verified.bin', Readable.from(chunked(data, 64 * 1024)), {
        verifiedByCaller: true,
        digest: sha256Of(data),
      });
      expect(given.digest ?? (await storage.stat(bucket, 'rt/self-verified.bin'))?.digest).toBe(sha256Of(data));
    });

    it('verifyDigest, where declared: an intact object streams whole; one without a sha256 digest is refused', async () => {
      const { storage, bucket } = ctx;
      // Optional capability (RemoteStorage.verifiesDigests); a backend without it passes vacuously.
      if (!storage.verifiesDigests) return;
      const data = Buffer.alloc(6 * MiB + 5);
      for (let i = 0; i < data.length; i++) data[i] = (i * 7 + (i >> 13)) & 0xff;
      await storage.upload(bucket, 'rt/verified.bin', Readable.from(chunked(data, 64 * 1024)), {
        digest: sha256Of(data),
      });
      const back = await digestStream(await storage.download(bucket, 'rt/verified.bin', { verifyDigest: true }));
      expect(back).toEqual({ digest: sha256Of(data), size: data.length });
      await storage.upload(bucket, 'rt/unverifiable.bin', body('no digest'));
      const refused = await storage.download(bucket, 'rt/unverifiable.bin', { verifyDigest: true }).then(
        (stream) => {
          stream.destroy();
          return undefined;
        },
        (error: unknown) => error,
      );
      expect(refused).toBeInstanceOf(FailedPreconditionError);
    });

    it(
      `a large object (${ctx.largeMiB} MiB) streamed both ways without buffering it`,
      async () => {
        const { storage, bucket, largeMiB } = ctx;
        const size = Math.round(largeMiB * MiB);
        const source = generateStream(size);
        const upWatch = memoryWatch();
        const info = await storage.upload(bucket, 'rt/large.bin', source.stream, {
          contentType: 'application/x-tar',
        });
        const upGrowth = upWatch.stop();
        const digest = await source.digest;
        expect(info.size).toBe(size);
        expect((await storage.stat(bucket, 'rt/large.bin'))?.size).toBe(size);
        const downWatch = memoryWatch();
        const back = await digestStream(await storage.download(bucket, 'rt/large.bin'));
        const downGrowth = downWatch.stop();
        expect(back).toEqual({ digest, size });
        // Holding the whole object would grow memory by at least its size.
        if (size >= 128 * MiB) {
          expect(upGrowth, `upload grew memory by ${Math.round(upGrowth / MiB)} MiB`).toBeLessThan(size * 0.75);
          expect(downGrowth, `download grew memory by ${Math.round(downGrowth / MiB)} MiB`).toBeLessThan(size * 0.75);
        }
        await storage.delete(bucket, { name: 'rt/large.bin' });
      },
      ctx.largeTimeout,
    );
  });
}
