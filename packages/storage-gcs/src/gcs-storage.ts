import { createHash } from 'node:crypto';
import { Readable, Transform } from 'node:stream';
import type { TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type {
  BucketLayout,
  DeleteTarget,
  DownloadOptions,
  ListOptions,
  ObjectInfo,
  PluginLogger,
  PresignMethod,
  PresignOptions,
  RemoteStorage,
  UploadOptions,
} from '@workbay/api';
import {
  CancelledError,
  copyBytes,
  FailedPreconditionError,
  InvalidArgumentError,
  lowerCaseMetadata,
  silentLogger,
} from '@workbay/api';
import { Storage } from '@google-cloud/storage';
import type { File, FileMetadata } from '@google-cloud/storage';
import type { GcsConfig } from './config.js';
import { parseGcsConfig } from './config.js';
import type { ErrorContext } from './errors.js';
import { httpStatusOf, toStorageError } from './errors.js';

/** Custom-metadata key holding the digest the writer recorded. */
export const digestMetadataKey = 'workbay-digest';

const defaultEndpoint = 'https://storage.googleapis.com';
const maxPresignSeconds = 7 * 24 * 3600;
const listPage = 1_000;
const deleteConcurrency = 16;

export interface GcsStorageOptions {
  readonly logger?: PluginLogger;
}

/**
 * Passes bytes through while hashing and counting them, holding back the last chunk until the source has
 * ended and the announced size and digest check out. A body that does not match therefore never reaches
 * the service in full, and the upload fails without an object being committed.
 */
class VerifyingTransform extends Transform {
  private readonly hash = createHash('sha256');
  private held: Buffer | undefined;
  size = 0;

  constructor(private readonly expected: { size?: number; digest?: string }) {
    super();
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.hash.update(chunk);
    this.size += chunk.length;
    if (this.held) this.push(this.held);
    this.held = chunk;
    callback();
  }

  override _flush(callback: TransformCallback): void {
    if (this.expected.size !== undefined && this.expected.size !== this.size) {
      callback(new InvalidArgumentError('size', `announced ${this.expected.size} bytes but the body had ${this.size}`));
      return;
    }
    if (this.expected.digest?.startsWith('sha256:')) {
      const actual = `sha256:${this.hash.digest('hex')}`;
      if (actual !== this.expected.digest) {
        callback(
          new InvalidArgumentError('digest', `announced ${this.expected.digest} but the body hashes to ${actual}`),
        );
        return;
      }
    }
    if (this.held) this.push(this.held);
    callback();
  }
}

function verifyBuffer(data: Buffer, expected: { size?: number; digest?: string }): void {
  if (expected.size !== undefined && expected.size !== data.length) {
    throw new InvalidArgumentError('size', `announced ${expected.size} bytes but the body had ${data.length}`);
  }
  if (expected.digest?.startsWith('sha256:')) {
    const actual = `sha256:${createHash('sha256').update(data).digest('hex')}`;
    if (actual !== expected.digest) {
      throw new InvalidArgumentError('digest', `announced ${expected.digest} but the body hashes to ${actual}`);
    }
  }
}

function toBuffer(chunk: unknown): Buffer {
  if (Buffer.isBuffer(chunk)) return chunk;
  if (chunk instanceof Uint8Array) return Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
  return Buffer.from(String(chunk));
}

/**
 * {@link RemoteStorage} on Google Cloud Storage (or a JSON-API emulator such as fake-gcs-server) through
 * `@google-cloud/storage`.
 *
 * Bodies up to `resumableThreshold` are buffered and sent in one request; larger ones stream as a resumable
 * upload (in `chunkSize` chunks when set). GCS commits an object only when an upload completes, so readers
 * keep seeing the previous generation until then, and a failed or aborted upload leaves nothing visible.
 * When no `apiEndpoint` or credentials are configured the client uses Application Default Credentials;
 * otherwise nothing here ever asks the GCE metadata server for anything.
 */
export class GcsStorage implements RemoteStorage {
  readonly kind = 'gcs';
  readonly config: GcsConfig;
  /** Where owners' objects live; the daemon names buckets with the api's `locateOwner(layout, owner)`. */
  readonly layout: BucketLayout;
  /** The JSON-API endpoint requests go to. */
  readonly endpoint: string;
  private readonly storage: Storage;
  private readonly logger: PluginLogger;

  /** Validates a raw config section (see {@link parseGcsConfig}) and creates the backend. */
  static fromConfig(raw: unknown, options: GcsStorageOptions = {}): GcsStorage {
    return new GcsStorage(parseGcsConfig(raw), options);
  }

  constructor(config: GcsConfig, options: GcsStorageOptions = {}) {
    this.config = config;
    this.layout = config.layout;
    this.endpoint = config.apiEndpoint ?? defaultEndpoint;
    this.logger = (options.logger ?? silentLogger).child({ endpoint: this.endpoint });
    this.storage = new Storage({
      projectId: config.projectId,
      apiEndpoint: config.apiEndpoint,
      useAuthWithCustomEndpoint: config.useAuthWithCustomEndpoint,
      credentials: config.credentials,
      retryOptions: { autoRetry: config.maxRetries > 0, maxRetries: config.maxRetries },
    });
  }

  private ctx(op: string, bucket?: string, name?: string): ErrorContext {
    return { op, endpoint: this.endpoint, principal: this.config.credentials?.client_email, bucket, name };
  }

  async ensureBucket(bucket: string): Promise<void> {
    if (await this.bucketExists(bucket)) return;
    try {
      await this.storage.createBucket(bucket, this.config.location ? { location: this.config.location } : {});
    } catch (error) {
      // Another caller created it between our check and our create: that is success.
      if (httpStatusOf(error) === 409 && (await this.bucketExists(bucket))) return;
      throw toStorageError(error, this.ctx('create', bucket));
    }
  }

  async bucketExists(bucket: string): Promise<boolean> {
    try {
      const [exists] = await this.storage.bucket(bucket).exists();
      return exists;
    } catch (error) {
      throw toStorageError(error, this.ctx('check', bucket));
    }
  }

  private writeMetadata(options: UploadOptions): FileMetadata {
    const metadata: Record<string, string> = {};
    for (const [rawKey, value] of Object.entries(options.metadata ?? {})) {
      const key = rawKey.toLowerCase();
      if (key === digestMetadataKey) throw new InvalidArgumentError(`metadata.${rawKey}`, 'is reserved');
      metadata[key] = value;
    }
    if (options.digest !== undefined) metadata[digestMetadataKey] = options.digest;
    return { contentType: options.contentType ?? 'application/octet-stream', metadata };
  }

  async upload(bucket: string, name: string, body: Readable, options: UploadOptions = {}): Promise<ObjectInfo> {
    const ctx = this.ctx('upload', bucket, name);
    const signal = options.signal;
    let metadata: FileMetadata;
    try {
      metadata = this.writeMetadata(options);
      if (signal?.aborted) throw new CancelledError(`upload of '${name}' in bucket '${bucket}' was cancelled`);
    } catch (error) {
      body.destroy();
      throw error;
    }
    const file = this.storage.bucket(bucket).file(name);
    const validation = this.config.validation ? 'crc32c' : false;
    const expected = { size: options.size, digest: options.digest };
    const source = body[Symbol.asyncIterator]() as AsyncIterator<unknown>;
    const onAbort = (): void => {
      const reason: unknown = signal?.reason;
      body.destroy(reason instanceof Error ? reason : new DOMException('The upload was aborted', 'AbortError'));
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    let size = 0;
    try {
      // Read up to the threshold: a body that ends before it goes up in one request.
      const head: Buffer[] = [];
      let headSize = 0;
      let ended = false;
      while (headSize <= this.config.resumableThreshold) {
        const next = await source.next();
        if (next.done) {
          ended = true;
          break;
        }
        const chunk = toBuffer(next.value);
        head.push(chunk);
        headSize += chunk.length;
      }
      if (ended) {
        // Not Buffer.concat: a backup's pack arrives as views of shared memory, which copyBytes copies at memcpy speed.
        const data = Buffer.allocUnsafe(headSize);
        let filled = 0;
        for (const chunk of head) filled += copyBytes(chunk, data, filled);
        verifyBuffer(data, expected);
        size = data.length;
        if (signal?.aborted) throw signal.reason;
        await file.save(data, { resumable: false, metadata, validation });
      } else {
        const rest = async function* (): AsyncGenerator<Buffer> {
          yield* head;
          for (;;) {
            const next = await source.next();
            if (next.done) return;
            yield toBuffer(next.value);
          }
        };
        const verifier = new VerifyingTransform(expected);
        const sink = file.createWriteStream({
          resumable: true,
          metadata,
          validation,
          ...(this.config.chunkSize ? { chunkSize: this.config.chunkSize } : {}),
        });
        await pipeline(Readable.from(rest()), verifier, sink);
        size = verifier.size;
      }
    } catch (error) {
      body.destroy();
      throw toStorageError(error, ctx);
    } finally {
      signal?.removeEventListener('abort', onAbort);
    }
    this.logger.debug({ bucket, name, size }, 'uploaded');
    return {
      bucket,
      name,
      size,
      lastModified: new Date(),
      digest: options.digest,
      contentType: metadata.contentType,
      metadata: lowerCaseMetadata(options.metadata),
    };
  }

  async download(bucket: string, name: string, options: DownloadOptions = {}): Promise<Readable> {
    const ctx = this.ctx('download', bucket, name);
    if (options.signal?.aborted) throw new CancelledError(`download of '${name}' in bucket '${bucket}' was cancelled`);
    // Stat first: a missing object must reject here, not as a stream error later. Then read exactly that
    // generation, so a concurrent overwrite cannot splice two versions.
    let generation: string | number | undefined;
    try {
      const [metadata] = await this.storage.bucket(bucket).file(name).getMetadata();
      generation = metadata.generation;
    } catch (error) {
      throw toStorageError(error, ctx);
    }
    const file: File = this.storage.bucket(bucket).file(name, generation !== undefined ? { generation } : {});
    const source = file.createReadStream({ validation: this.config.validation ? 'crc32c' : false });
    // Handed out as is (no extra stream hop), with its errors translated where they are emitted.
    const emit = source.emit.bind(source) as (event: string | symbol, ...args: unknown[]) => boolean;
    source.emit = ((event: string | symbol, ...args: unknown[]): boolean =>
      event === 'error' ? emit('error', toStorageError(args[0], ctx)) : emit(event, ...args)) as Readable['emit'];
    const signal = options.signal;
    if (signal) {
      const onAbort = (): void => {
        source.destroy(new CancelledError(`download of '${name}' in bucket '${bucket}' was cancelled`));
      };
      signal.addEventListener('abort', onAbort, { once: true });
      source.once('close', () => signal.removeEventListener('abort', onAbort));
    }
    return source;
  }

  private toInfo(bucket: string, name: string, metadata: FileMetadata): ObjectInfo {
    const custom: Record<string, string> = {};
    let digest: string | undefined;
    for (const [rawKey, value] of Object.entries(metadata.metadata ?? {})) {
      if (value === null || value === undefined) continue;
      const key = rawKey.toLowerCase();
      if (key === digestMetadataKey) digest = String(value);
      else custom[key] = String(value);
    }
    const modified = metadata.updated ?? metadata.timeCreated;
    return {
      bucket,
      name,
      size: Number(metadata.size ?? 0),
      lastModified: modified ? new Date(modified) : new Date(0),
      digest,
      contentType: metadata.contentType,
      metadata: custom,
    };
  }

  async stat(bucket: string, name: string): Promise<ObjectInfo | undefined> {
    try {
      const [metadata] = await this.storage.bucket(bucket).file(name).getMetadata();
      return this.toInfo(bucket, name, metadata);
    } catch (error) {
      if (httpStatusOf(error) === 404) return undefined;
      throw toStorageError(error, this.ctx('stat', bucket, name));
    }
  }

  async *list(bucket: string, options: ListOptions = {}): AsyncIterable<ObjectInfo> {
    const ctx = this.ctx('list', bucket);
    let pageToken: string | undefined;
    do {
      if (options.signal?.aborted) throw new CancelledError(`listing bucket '${bucket}' was cancelled`);
      let files: File[];
      let next: { pageToken?: string } | null | undefined;
      try {
        [files, next] = await this.storage.bucket(bucket).getFiles({
          prefix: options.prefix || undefined,
          autoPaginate: false,
          maxResults: listPage,
          pageToken,
        });
      } catch (error) {
        if (httpStatusOf(error) === 404) return;
        throw toStorageError(error, ctx);
      }
      for (const file of files) yield this.toInfo(bucket, file.name, file.metadata);
      pageToken = next?.pageToken;
    } while (pageToken);
  }

  private async deleteOne(bucket: string, name: string): Promise<number> {
    try {
      await this.storage.bucket(bucket).file(name).delete();
      return 1;
    } catch (error) {
      if (httpStatusOf(error) === 404) return 0;
      throw toStorageError(error, this.ctx('delete', bucket, name));
    }
  }

  async delete(bucket: string, target: DeleteTarget): Promise<number> {
    if ('name' in target) return this.deleteOne(bucket, target.name);
    let deleted = 0;
    const running = new Set<Promise<void>>();
    let failure: { error: unknown } | undefined;
    for await (const info of this.list(bucket, { prefix: target.prefix })) {
      if (failure) break;
      while (running.size >= deleteConcurrency) await Promise.race(running);
      const task: Promise<void> = this.deleteOne(bucket, info.name)
        .then((n) => {
          deleted += n;
        })
        .catch((error: unknown) => {
          failure ??= { error };
        })
        .finally(() => running.delete(task));
      running.add(task);
    }
    await Promise.all(running);
    if (failure) throw failure.error;
    return deleted;
  }

  async presignedUrl(
    method: PresignMethod,
    bucket: string,
    name: string,
    options: PresignOptions = {},
  ): Promise<string> {
    if (!this.config.credentials) {
      // Signing without a key would go through the IAM API and, on GCE, the metadata server.
      throw new FailedPreconditionError(
        `signing URLs for bucket '${bucket}' needs service-account credentials (keyFilename or credentials)`,
      );
    }
    const seconds = Math.min(
      Math.max(1, Math.floor(options.expiresInSeconds ?? this.config.presignExpirySeconds)),
      maxPresignSeconds,
    );
    try {
      const [url] = await this.storage
        .bucket(bucket)
        .file(name)
        .getSignedUrl({
          version: 'v4',
          action: method === 'GET' ? 'read' : 'write',
          expires: Date.now() + seconds * 1000,
          ...(method === 'PUT' && options.contentType ? { contentType: options.contentType } : {}),
        });
      return url;
    } catch (error) {
      throw toStorageError(error, this.ctx(`presign ${method}`, bucket, name));
    }
  }

  async diskUsage(bucket: string, prefix?: string): Promise<number> {
    let total = 0;
    for await (const info of this.list(bucket, { prefix })) total += info.size;
    return total;
  }

  async close(): Promise<void> {
    // The client holds no sockets of its own beyond Node's global agent.
  }
}
