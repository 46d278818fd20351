import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import type { ObjectInfo, RemoteStorage } from '@workbay/api';
import { FailedPreconditionError, NotFoundError, isWorkbayError } from '@workbay/api';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MiB, digestStream, generateStream, readAll, sha256Of } from './data.js';

/** What a conformance factory returns: the backend under test and how to tear it down. */
export interface ConformanceBackend {
  readonly storage: RemoteStorage;
  /**
   * The bucket the suite writes into (it is created with `ensureBucket`). Default: a fresh random name. The
   * suite also creates a few more fresh buckets of its own (race, disk usage) and uses a missing one.
   */
  readonly bucket?: string;
  cleanup?(): Promise<void>;
}

export type ConformanceFactory = () => Promise<ConformanceBackend>;

/** What a backend cannot do, with the reason printed in the test names. Everything else is required. */
export interface ConformanceCapabilities {
  /**
   * The backend implements `presignedUrl` (default true). A backend that declares false must not have the method;
   * the presigned-URL tests are then replaced by that one check.
   */
  readonly presignedUrls?: boolean;
  /**
   * Presigned URLs can be fetched with plain HTTP against the server under test. False for emulators that
   * cannot check signatures (fake-gcs-server): the suite then checks the URLs' shape only, and the plugin must
   * prove its signing another way.
   */
  readonly presignedFetch?: boolean;
  /** Why `presignedFetch` is false, shown in the test name. */
  readonly presignedFetchReason?: string;
}

export interface StorageConformanceOptions {
  readonly capabilities?: ConformanceCapabilities;
  /**
   * Size of the large streamed round trip, in MiB. Default: env `WORKBAY_CONFORMANCE_LARGE_MIB`, else 256.
   * Either way the object is generated and hashed on the fly, never held in memory.
   */
  readonly largeObjectMiB?: number;
}

/** The large-object size the suite uses: the option, else env `WORKBAY_CONFORMANCE_LARGE_MIB`, else 256 MiB. */
export function conformanceLargeObjectMiB(option?: number): number {
  if (option !== undefined) return option;
  const fromEnv = process.env['WORKBAY_CONFORMANCE_LARGE_MIB'];
  if (fromEnv !== undefined && fromEnv !== '') {
    const value = Number(fromEnv);
    if (!Number.isFinite(value) || value <= 0) {
      throw new Error(`WORKBAY_CONFORMANCE_LARGE_MIB must be a positive number of MiB, got '${fromEnv}'`);
    }
    return value;
  }
  return 256;
}

function uniqueBucket(tag: string): string {
  return `wbconf-${tag}-${randomBytes(4).toString('hex')}`;
}

async function collect(iterable: AsyncIterable<ObjectInfo>): Promise<ObjectInfo[]> {
  const out: ObjectInfo[] = [];
  for await (const info of iterable) out.push(info);
  return out;
}

function body(data: string | Buffer): Readable {
  return Readable.from([typeof data === 'string' ? Buffer.from(data) : data]);
}

function emptyBody(): Readable {
  return Readable.from([]);
}

async function expectNotFound(promise: Promise<unknown>, mentions: string[]): Promise<void> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error, 'expected a NotFoundError').toBeDefined();
  expect(isWorkbayError(error, 'not-found'), `expected a NotFoundError, got ${String(error)}`).toBe(true);
  expect(error).toBeInstanceOf(NotFoundError);
  for (const word of mentions) expect((error as Error).message).toContain(word);
}

/** Samples this process's buffer and heap memory, to show that a transfer streams instead of buffering. */
function memoryWatch(): { stop(): number } {
  const used = (): number => {
    const m = process.memoryUsage();
    return m.heapUsed + m.arrayBuffers;
  };
  const baseline = used();
  let peak = baseline;
  const timer = setInterval(() => {
    peak = Math.max(peak, used());
  }, 20);
  return {
    stop: () => {
      clearInterval(timer);
      peak = Math.max(peak, used());
      return peak - baseline;
    },
  };
}

/**
 * The suite every {@link RemoteStorage} backend must pass, for vitest. Call it at the top level of a spec file:
 *
 * ```ts
 * runStorageConformance('minio', async () => {
 *   const server = await startMinio();
 *   return { storage: new MinioStorage({ ... }), cleanup: () => server.stop() };
 * });
 * ```
 *
 * It covers: buckets (idempotent, race-tolerant creation), round trips of empty, small, binary and large
 * streamed objects with digests, metadata, listing in name order and by prefix, missing-bucket and not-found
 * semantics, overwrite and delete (by name and by prefix), concurrent writers, presigned GET/PUT URLs fetched
 * over HTTP including expiry, disk usage, and atomicity: an interrupted upload leaves no half object and the
 * previous version intact, and readers never see an upload before it is complete; and, for a backend that declares
 * `verifiesDigests`, downloads with `verifyDigest`; for one with `readInto`, reads into a caller's buffer.
 */
export function runStorageConformance(
  name: string,
  factory: ConformanceFactory,
  options: StorageConformanceOptions = {},
): void {
  const largeMiB = conformanceLargeObjectMiB(options.largeObjectMiB);
  const presignedUrls = options.capabilities?.presignedUrls ?? true;
  const presignedFetch = options.capabilities?.presignedFetch ?? true;
  const largeTimeout = 120_000 + largeMiB * 1_000;

  describe(`RemoteStorage conformance: ${name}`, () => {
    let backend: ConformanceBackend;
    let storage: RemoteStorage;
    let bucket: string;
    const missingBucket = uniqueBucket('missing');

    beforeAll(async () => {
      backend = await factory();
      storage = backend.storage;
      bucket = backend.bucket ?? uniqueBucket('main');
      await storage.ensureBucket(bucket);
    });

    afterAll(async () => {
      try {
        if (storage && bucket) await storage.delete(bucket, { prefix: '' });
        await storage?.close?.();
      } finally {
        await backend?.cleanup?.();
      }
    });

    describe('buckets', () => {
      it('ensureBucket is idempotent and tolerates parallel callers', async () => {
        const fresh = uniqueBucket('race');
        expect(await storage.bucketExists(fresh)).toBe(false);
        await Promise.all(Array.from({ length: 6 }, () => storage.ensureBucket(fresh)));
        expect(await storage.bucketExists(fresh)).toBe(true);
        await storage.ensureBucket(fresh);
        expect(await storage.bucketExists(fresh)).toBe(true);
      });

      it('bucketExists is false for a missing bucket and true for the suite bucket', async () => {
        expect(await storage.bucketExists(missingBucket)).toBe(false);
        expect(await storage.bucketExists(bucket)).toBe(true);
      });

      it('a missing bucket lists nothing, uses 0 bytes, and rejects uploads with NotFoundError naming it', async () => {
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

    describe('round trips', () => {
      it('an empty object', async () => {
        const info = await storage.upload(bucket, 'rt/empty', emptyBody());
        expect(info).toMatchObject({ bucket, name: 'rt/empty', size: 0 });
        const bytes = await readAll(await storage.download(bucket, 'rt/empty'));
        expect(bytes.length).toBe(0);
        expect((await storage.stat(bucket, 'rt/empty'))?.size).toBe(0);
      });

      it('a small object with content type, metadata and digest', async () => {
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
        `a large object (${largeMiB} MiB) streamed both ways without buffering it`,
        async () => {
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
        largeTimeout,
      );
    });

    describe('not-found semantics', () => {
      it('download rejects with NotFoundError, stat is undefined, delete is a no-op', async () => {
        await expectNotFound(storage.download(bucket, 'nf/missing.tar'), ['nf/missing.tar']);
        expect(await storage.stat(bucket, 'nf/missing.tar')).toBeUndefined();
        expect(await storage.delete(bucket, { name: 'nf/missing.tar' })).toBe(0);
        expect(await storage.delete(bucket, { prefix: 'nf/none/' })).toBe(0);
      });

      it('a prefix of an existing name is not an object', async () => {
        await storage.upload(bucket, 'nf/dir/file.txt', body('x'));
        expect(await storage.stat(bucket, 'nf/dir')).toBeUndefined();
        expect(await storage.stat(bucket, 'nf/dir/')).toBeUndefined();
        await expectNotFound(storage.download(bucket, 'nf/dir'), []);
      });
    });

    describe('listing', () => {
      // Not required: one name being both an object and a "directory" of others (`a` and `a/z`). MinIO and
      // filesystem-backed stores cannot hold both, and Workbay's layout never creates such names.
      it('lists in name order, recursively, filtered by prefix', async () => {
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
        const count = 1_100;
        const names = Array.from({ length: count }, (_, i) => `page/${String(i).padStart(5, '0')}`);
        await runLimited(names, 16, (n) => storage.upload(bucket, n, body('p')).then(() => undefined));
        const listed = (await collect(storage.list(bucket, { prefix: 'page/' }))).map((o) => o.name);
        expect(listed).toEqual(names);
        expect(await storage.delete(bucket, { prefix: 'page/' })).toBe(count);
        expect(await collect(storage.list(bucket, { prefix: 'page/' }))).toEqual([]);
      });
    });

    describe('overwrite and delete', () => {
      it('an overwrite replaces content and metadata', async () => {
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
        await storage.upload(bucket, 'del/one', body('1'));
        expect(await storage.delete(bucket, { name: 'del/one' })).toBe(1);
        expect(await storage.stat(bucket, 'del/one')).toBeUndefined();
        expect(await storage.delete(bucket, { name: 'del/one' })).toBe(0);
      });

      it('delete by prefix removes exactly the objects under it and returns the count', async () => {
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

    describe('concurrency', () => {
      it('parallel writers to different objects all land intact', async () => {
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

    describe('atomic uploads', () => {
      it('readers see the previous version until a new upload completes', async () => {
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

    describe('presigned URLs', () => {
      const presign = (...args: Parameters<NonNullable<RemoteStorage['presignedUrl']>>): Promise<string> => {
        if (!storage.presignedUrl) throw new Error(`${name} declares presigned URLs but has no presignedUrl method`);
        return storage.presignedUrl(...args);
      };
      if (!presignedUrls) {
        it('declares no presigned URLs, and has no presignedUrl method', () => {
          expect(storage.presignedUrl).toBeUndefined();
        });
      } else if (presignedFetch) {
        it('a presigned GET URL downloads the object over plain HTTP', async () => {
          const data = randomBytes(300 * 1024);
          await storage.upload(bucket, 'ps/get me.bin', body(data));
          const url = await presign('GET', bucket, 'ps/get me.bin', { expiresInSeconds: 60 });
          expect(url).toMatch(/^https?:\/\//);
          const res = await fetch(url);
          expect(res.status).toBe(200);
          expect(sha256Of(Buffer.from(await res.arrayBuffer()))).toBe(sha256Of(data));
        });

        it('a presigned PUT URL uploads an object over plain HTTP', async () => {
          const data = randomBytes(200 * 1024);
          const url = await presign('PUT', bucket, 'ps/put.bin', { expiresInSeconds: 60 });
          const res = await fetch(url, { method: 'PUT', body: data });
          expect(res.ok, `PUT answered ${res.status}: ${await res.clone().text()}`).toBe(true);
          await res.arrayBuffer();
          const back = await digestStream(await storage.download(bucket, 'ps/put.bin'));
          expect(back).toEqual({ digest: sha256Of(data), size: data.length });
        });

        it('a presigned URL stops working after it expires', async () => {
          await storage.upload(bucket, 'ps/expiring', body('soon gone'));
          const url = await presign('GET', bucket, 'ps/expiring', { expiresInSeconds: 1 });
          const putUrl = await presign('PUT', bucket, 'ps/expiring', { expiresInSeconds: 1 });
          await sleep(2_100);
          const res = await fetch(url);
          await res.arrayBuffer();
          expect(res.status).toBeGreaterThanOrEqual(400);
          expect(res.status).toBeLessThan(500);
          const put = await fetch(putUrl, { method: 'PUT', body: 'overwritten' });
          await put.arrayBuffer();
          expect(put.status).toBeGreaterThanOrEqual(400);
          expect((await readAll(await storage.download(bucket, 'ps/expiring'))).toString()).toBe('soon gone');
        });

        it('a presigned URL is bound to its method: a GET URL refuses PUT, a PUT URL reads nothing', async () => {
          await storage.upload(bucket, 'ps/method', body('original'));
          const getUrl = await presign('GET', bucket, 'ps/method', { expiresInSeconds: 60 });
          const put = await fetch(getUrl, { method: 'PUT', body: 'overwritten through a download URL' });
          await put.arrayBuffer();
          expect(put.status, 'a download URL accepted an upload').toBeGreaterThanOrEqual(400);
          const putUrl = await presign('PUT', bucket, 'ps/method', { expiresInSeconds: 60 });
          const get = await fetch(putUrl);
          const got = await get.text();
          expect(get.ok && got === 'original', 'an upload URL served the object').toBe(false);
          expect((await readAll(await storage.download(bucket, 'ps/method'))).toString()).toBe('original');
        });

        it('a presigned URL is bound to its object', async () => {
          await storage.upload(bucket, 'ps/a', body('a'));
          await storage.upload(bucket, 'ps/b', body('b'));
          const url = await presign('GET', bucket, 'ps/a', { expiresInSeconds: 60 });
          // Point the signed URL at another object; an opaque token that names no object is bound by design.
          const tampered = url.replace(/ps(\/|%2F)a(?=$|[?&#])/i, 'ps$1b');
          if (tampered !== url) {
            const res = await fetch(tampered);
            await res.arrayBuffer();
            expect(res.status).toBeGreaterThanOrEqual(400);
          }
          const res = await fetch(url);
          expect(await res.text()).toBe('a');
        });
      } else {
        it(`presigned URLs are well formed (fetch not checked: ${options.capabilities?.presignedFetchReason ?? 'the server cannot verify signatures'})`, async () => {
          await storage.upload(bucket, 'ps/shape', body('x'));
          for (const method of ['GET', 'PUT'] as const) {
            const url = new URL(await presign(method, bucket, 'ps/shape', { expiresInSeconds: 60 }));
            expect(url.protocol).toMatch(/^https?:$/);
            expect(decodeURIComponent(url.pathname + url.hostname)).toContain('ps/shape');
            expect(url.search.length).toBeGreaterThan(0);
          }
        });
      }
    });

    describe('disk usage', () => {
      it('sums object sizes for the whole bucket and under a prefix', async () => {
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
  });
}

/** Byte-wise comparison of UTF-8 names, the order object stores list in. */
function compareNames(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a), Buffer.from(b));
}

function* chunked(data: Buffer, size: number): Generator<Buffer> {
  for (let offset = 0; offset < data.length; offset += size) yield data.subarray(offset, offset + size);
}

async function runLimited<T>(items: readonly T[], limit: number, work: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const workers = Array.from({ length: Math.min(limit, items.length) }, async () => {
    while (next < items.length) {
      const item = items[next++]!;
      await work(item);
    }
  });
  await Promise.all(workers);
}
