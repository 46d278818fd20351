import type { Readable } from 'node:stream';
import type { BucketLayout } from './storage-layout.js';

/** What a backend knows about one stored object. */
export interface ObjectInfo {
  readonly bucket: string;
  /** The object key inside the bucket. */
  readonly name: string;
  readonly size: number;
  readonly lastModified: Date;
  /** Content digest as `<algorithm>:<hex>` (e.g. `sha256:…`) when the writer recorded one. */
  readonly digest?: string;
  readonly contentType?: string;
  /** User metadata, keys lower-cased. */
  readonly metadata: Readonly<Record<string, string>>;
}

export interface UploadOptions {
  readonly contentType?: string;
  /** User metadata stored with the object (keys are lower-cased by most backends). */
  readonly metadata?: Readonly<Record<string, string>>;
  /** Recorded as the object's digest; backends that can verify it do. */
  readonly digest?: string;
  /**
   * The caller checks this content by its own means (a backup pack: restore verifies every blob in it against its
   * SHA-256), so a backend that computes a digest of every upload on its own may skip that pass over the bytes and
   * record none. Ignored when `digest` is given (that one is still recorded, and verified where the backend can).
   */
  readonly verifiedByCaller?: boolean;
  /** Size in bytes when known up front; lets a backend pick part sizes. */
  readonly size?: number;
  readonly signal?: AbortSignal;
}

export interface DownloadOptions {
  readonly signal?: AbortSignal;
  /**
   * Check the bytes against the object's recorded `sha256:` digest (`UploadOptions.digest`) while they stream:
   * on a mismatch or a short body the stream fails with an `InternalError` instead of ending, so a reader that
   * sees the end has every byte of the recorded content. An object with no recorded `sha256:` digest rejects
   * the download with `FailedPreconditionError`. Only backends that declare `verifiesDigests` honour it;
   * callers check that flag and otherwise hash the stream themselves.
   */
  readonly verifyDigest?: boolean;
}

/** Options of `RemoteStorage.readInto`. */
export interface ReadIntoOptions {
  /** Where in the object to start (default 0). */
  readonly offset?: number;
  readonly signal?: AbortSignal;
}

export interface ListOptions {
  /** Only objects whose name starts with this. */
  readonly prefix?: string;
  readonly signal?: AbortSignal;
}

/** Delete one object by exact name, or every object under a prefix. */
export type DeleteTarget = { readonly name: string } | { readonly prefix: string };

export type PresignMethod = 'GET' | 'PUT';

export interface PresignOptions {
  /** Lifetime of the URL; backends cap it at their own maximum (7 days for S3 signatures). */
  readonly expiresInSeconds?: number;
  readonly contentType?: string;
}

/**
 * What the daemon needs from a storage backend. Implementations are plugins (`fs`, `minio`, `gcs`, …) and are
 * proven by `runStorageConformance()` from `@workbay/testing`.
 *
 * Contract every implementation keeps:
 * - `upload` is all-or-nothing: readers see the previous version of an object (or none) until the new one is
 *   complete; an upload that fails or is aborted leaves no visible half object. Errors are never swallowed.
 * - Missing objects: `download` rejects with `NotFoundError`; `stat` resolves `undefined`; `delete` is a no-op.
 * - Missing buckets: `list` yields nothing and `diskUsage` is 0; `upload` rejects with `NotFoundError` naming
 *   the bucket (call `ensureBucket` first).
 * - Bad credentials reject with `UnauthenticatedError`/`PermissionDeniedError`, an unreachable endpoint with
 *   `UnavailableError`, each naming the endpoint and never the secret.
 */
export interface RemoteStorage {
  /** The `kind` it was selected by (`fs`, `minio`, `gcs`, …). */
  readonly kind: string;
  /**
   * How this backend's config places owners in buckets (per-owner buckets or one shared bucket), when the
   * config says; the daemon then names objects with `locateOwner(layout, owner)`.
   */
  readonly layout?: BucketLayout;
  /** The backend honours `DownloadOptions.verifyDigest`. Optional capability: absent means it does not. */
  readonly verifiesDigests?: boolean;

  /** Creates the bucket if it does not exist; safe when several callers race to create it. */
  ensureBucket(bucket: string): Promise<void>;
  bucketExists(bucket: string): Promise<boolean>;

  /** Streams `body` into `bucket/name`; resolves once the object is durably stored and visible. */
  upload(bucket: string, name: string, body: Readable, options?: UploadOptions): Promise<ObjectInfo>;
  /** A stream of the object's bytes. Rejects with `NotFoundError` if the object or bucket is missing. */
  download(bucket: string, name: string, options?: DownloadOptions): Promise<Readable>;
  /**
   * Reads the object's bytes from `offset` (default 0) into `into` until it is full or the object ends; resolves
   * with the count. Optional: for callers that keep their own (shared) buffers, such as a restore reading packs
   * for worker threads, and that otherwise copy from {@link download}'s stream. Rejects like `download` when the
   * object or bucket is missing.
   */
  readInto?(bucket: string, name: string, into: Uint8Array, options?: ReadIntoOptions): Promise<number>;
  stat(bucket: string, name: string): Promise<ObjectInfo | undefined>;
  /** Objects in name order. */
  list(bucket: string, options?: ListOptions): AsyncIterable<ObjectInfo>;
  /** Returns how many objects were deleted; deleting nothing is not an error. */
  delete(bucket: string, target: DeleteTarget): Promise<number>;

  /**
   * A URL a plain HTTP client can GET (download) or PUT (upload) without credentials until it expires, bound to
   * its method and object. Optional: nothing in Workbay needs it (a disk backend may leave it out); a backend that
   * has it declares so to the conformance kit, which then checks it over HTTP.
   */
  presignedUrl?(method: PresignMethod, bucket: string, name: string, options?: PresignOptions): Promise<string>;
  /** Total bytes stored under `prefix` (the whole bucket when omitted). */
  diskUsage(bucket: string, prefix?: string): Promise<number>;
  /**
   * Bytes `bucket` can still take, for a backend whose space runs out with the node's (a local disk); absent, or
   * `undefined`, where the store has no such bound or does not know it. Optional capability: the daemon keeps a
   * reserve there for final backups, which must never fail for want of space another owner's snapshots took.
   */
  availableBytes?(bucket: string): Promise<number | undefined>;

  /** Releases connections and servers the backend holds. */
  close?(): Promise<void>;
}
