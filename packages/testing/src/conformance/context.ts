// What the storage conformance groups share: the context object (the backend under test, the suite's buckets and
// settings) and small helpers for building bodies, collecting listings and checking not-found errors. Internal to
// the kit: nothing here is exported from the package.
import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import type { ObjectInfo, RemoteStorage } from '@workbay/api';
import { NotFoundError, isWorkbayError } from '@workbay/api';
import { expect } from 'vitest';

/** The backend's capabilities, with the defaults applied. */
export interface ResolvedCapabilities {
  readonly presignedUrls: boolean;
  readonly presignedFetch: boolean;
  /** Why `presignedFetch` is false, shown in the test name. */
  readonly presignedFetchReason: string | undefined;
}

/**
 * What the conformance groups share. `storage` and `bucket` are set in the suite's `beforeAll`: read them inside
 * tests and hooks only, never at describe time (reading them earlier throws).
 */
export interface ConformanceContext {
  /** The backend's name, as given to `runStorageConformance`. */
  readonly name: string;
  readonly storage: RemoteStorage;
  /** The bucket the suite writes into. */
  readonly bucket: string;
  /** A bucket that is never created. */
  readonly missingBucket: string;
  /** Size of the large streamed round trip, in MiB. */
  readonly largeMiB: number;
  /** Timeout of the large streamed round trip, in ms. */
  readonly largeTimeout: number;
  readonly capabilities: ResolvedCapabilities;
}

export interface ConformanceContextInit extends Omit<ConformanceContext, 'storage' | 'bucket'> {
  /** Returns the storage once `beforeAll` has set it. */
  storage(): RemoteStorage | undefined;
  /** Returns the suite bucket once `beforeAll` has set it. */
  bucket(): string | undefined;
}

/** A context whose `storage` and `bucket` are read through `init`'s accessors each time they are used. */
export function createConformanceContext(init: ConformanceContextInit): ConformanceContext {
  const { storage, bucket, ...fixed } = init;
  return {
    ...fixed,
    get storage() {
      return setInBeforeAll(storage(), 'storage');
    },
    get bucket() {
      return setInBeforeAll(bucket(), 'bucket');
    },
  };
}

function setInBeforeAll<T>(value: T | undefined, what: string): T {
  if (value === undefined) {
    throw new Error(`conformance ${what} read before beforeAll set it: read it inside a test or hook`);
  }
  return value;
}

export function uniqueBucket(tag: string): string {
  return `wbconf-${tag}-${randomBytes(4).toString('hex')}`;
}

export async function collect(iterable: AsyncIterable<ObjectInfo>): Promise<ObjectInfo[]> {
  const out: ObjectInfo[] = [];
  for await (const info of iterable) out.push(info);
  return out;
}

export function body(data: string | Buffer): Readable {
  return Readable.from([typeof data === 'string' ? Buffer.from(data) : data]);
}

export function emptyBody(): Readable {
  return Readable.from([]);
}

export async function expectNotFound(promise: Promise<unknown>, mentions: string[]): Promise<void> {
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
export function memoryWatch(): { stop(): number } {
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

/** Byte-wise comparison of UTF-8 names, the order object stores list in. */
export function compareNames(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a), Buffer.from(b));
}

export function* chunked(data: Buffer, size: number): Generator<Buffer> {
  for (let offset = 0; offset < data.length; offset += size) yield data.subarray(offset, offset + size);
}

export async function runLimited<T>(
  items: readonly T[],
  limit: number,
  work: (item: T) => Promise<void>,
): Promise<void> {
  let next = 0;
  const workers = Array.from({ length: Math.min(limit, items.length) }, async () => {
    while (next < items.length) {
      const item = items[next++]!;
      await work(item);
    }
  });
  await Promise.all(workers);
}
