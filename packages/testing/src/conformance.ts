import type { RemoteStorage } from '@workbay/api';
import { afterAll, beforeAll, describe } from 'vitest';
import { describeAtomicUploads } from './conformance/atomic-uploads.js';
import { describeBuckets } from './conformance/buckets.js';
import { createConformanceContext, uniqueBucket } from './conformance/context.js';
import { describeDiskUsage } from './conformance/disk-usage.js';
import { describeListing, describeNotFoundSemantics } from './conformance/listing.js';
import { describeConcurrency, describeOverwriteAndDelete } from './conformance/overwrite-delete.js';
import { describePresignedUrls } from './conformance/presigned-urls.js';
import { describeRoundTrips } from './conformance/round-trips.js';

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

    // What the groups share. They read the storage and bucket through it inside their tests and hooks only: both are
    // set in beforeAll, after the groups are declared.
    const ctx = createConformanceContext({
      name,
      storage: () => storage,
      bucket: () => bucket,
      missingBucket,
      largeMiB,
      largeTimeout,
      capabilities: {
        presignedUrls,
        presignedFetch,
        presignedFetchReason: options.capabilities?.presignedFetchReason,
      },
    });

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

    describeBuckets(ctx);
    describeRoundTrips(ctx);
    describeNotFoundSemantics(ctx);
    describeListing(ctx);
    describeOverwriteAndDelete(ctx);
    describeConcurrency(ctx);
    describeAtomicUploads(ctx);
    describePresignedUrls(ctx);
    describeDiskUsage(ctx);
  });
}
