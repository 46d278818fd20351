import { createHash, webcrypto } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { Agent as HttpAgent } from 'node:http';
import { Agent as HttpsAgent } from 'node:https';
import type { Readable } from 'node:stream';
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
  AlreadyExistsError,
  CancelledError,
  FailedPreconditionError,
  InvalidArgumentError,
  silentLogger,
} from '@workbay/api';
import { Client } from 'minio';
import type { MinioConfig } from './config.js';
import { maxPartSize, maxParts, parseMinioConfig } from './config.js';
import type { ErrorContext } from './errors.js';
import { toStorageError } from './errors.js';
import { verifyingPassThrough } from './digest-check.js';
import { isUnreadFileStream, readFileParts } from './file-parts.js';
import { BoundedRunner, PartBufferPool, destroyOnAbort, splitParts } from './multipart.js';

/** User-metadata key holding the digest the writer recorded (`x-amz-meta-workbay-digest`). */
export const digestMetadataKey = 'workbay-digest';

const metaPrefix = 'x-amz-meta-';
const standardHeaders = new Set([
  'content-type',
  'cache-control',
  'content-encoding',
  'content-disposition',
  'content-language',
  'x-amz-website-redirect-location',
  'if-none-match',
  'if-match',
  'x-amz-storage-class',
]);
// HTTP header names are tokens, and S3 sends metadata values back as header values.
const metadataKeyPattern = /^[a-z0-9][a-z0-9._-]*$/;
const metadataValuePattern = /^[\x20-\x7e]*$/;
const maxPresignSeconds = 7 * 24 * 3600;
const deleteBatch = 1_000;
const notFoundCodes = new Set(['NotFound', 'NoSuchKey', 'NoSuchBucket']);

interface DeleteFailure {
  readonly Code?: string;
  readonly Message?: string;
  readonly Key?: string;
}

/** SHA-256 in the thread pool (WebCrypto runs its digests there), so the event loop keeps sending parts. */
async function sha256Hex(data: Buffer): Promise<string> {
  return Buffer.from(await webcrypto.subtle.digest('SHA-256', data)).toString('hex');
}

function drain(response: IncomingMessage): Promise<void> {
  return new Promise((resolve, reject) => {
    response.on('data', () => undefined);
    response.once('error', reject);
    response.once('end', resolve);
  });
}

/** The etag S3 answers with, without its quotes. */
function etagOf(response: IncomingMessage): string {
  const raw = response.headers.etag;
  return (Array.isArray(raw) ? (raw[0] ?? '') : (raw ?? '')).replace(/^"|"$/g, '');
}

function codeOf(error: unknown): string | undefined {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : undefined;
}

export interface MinioStorageOptions {
  readonly logger?: PluginLogger;
}

/**
 * {@link RemoteStorage} on MinIO or any S3-compatible store, through the `minio` client.
 *
 * Uploads stream (an unread file stream is read straight into the part buffers): an object that fits in one part (`partSize`, default 16 MiB) is one PUT; a larger one is a
 * multipart upload of our own with up to `parallelParts` parts in flight at once (the client's own
 * `putObject` uploads parts one after another), so memory stays at about `(parallelParts + 1) × partSize`.
 * Either way the object only becomes visible when the single PUT or the multipart completion succeeds; any
 * failure, including an aborted signal or a source stream error, aborts the multipart upload and rejects.
 */
export class MinioStorage implements RemoteStorage {
  readonly kind = 'minio';
  readonly verifiesDigests = true;
  readonly config: MinioConfig;
  /** Where owners' objects live; the daemon names buckets with the api's `locateOwner(layout, owner)`. */
  readonly layout: BucketLayout;
  private readonly client: Client;
  private readonly agent: HttpAgent;
  private readonly logger: PluginLogger;

  /** Validates a raw config section (see {@link parseMinioConfig}) and creates the backend. */
  static fromConfig(raw: unknown, options: MinioStorageOptions = {}): MinioStorage {
    return new MinioStorage(parseMinioConfig(raw), options);
  }

  constructor(config: MinioConfig, options: MinioStorageOptions = {}) {
    this.config = config;
    this.layout = config.layout;
    this.logger = (options.logger ?? silentLogger).child({ endpoint: config.endpoint });
    const sockets = config.parallelParts * 2 + 8;
    this.agent = config.useSSL
      ? new HttpsAgent({ keepAlive: true, maxSockets: sockets, ca: config.ca })
      : new HttpAgent({ keepAlive: true, maxSockets: sockets });
    this.client = new Client({
      endPoint: config.host,
      port: config.port,
      useSSL: config.useSSL,
      accessKey: config.accessKey,
      secretKey: config.secretKey,
      sessionToken: config.sessionToken,
      // A configured region spares a GetBucketLocation round trip before every first request to a bucket.
      region: config.region,
      pathStyle: config.pathStyle,
      partSize: config.partSize,
      transportAgent: this.agent,
    });
    // The client hashes payloads only over plain HTTP; this lets an operator turn that off too.
    if (!config.signPayload) this.client.enableSHA256 = false;
  }

  private ctx(op: string, bucket?: string, name?: string): ErrorContext {
    return { op, endpoint: this.config.endpoint, accessKey: this.config.accessKey, bucket, name };
  }

  async ensureBucket(bucket: string): Promise<void> {
    const ctx = this.ctx('create', bucket);
    if (await this.bucketExists(bucket)) return;
    try {
      await this.client.makeBucket(bucket, this.config.region);
    } catch (error) {
      // Another caller created it between our check and our create: that is success.
      if (codeOf(error) === 'BucketAlreadyOwnedByYou') return;
      const mapped = toStorageError(error, ctx);
      if (mapped instanceof AlreadyExistsError && (await this.bucketExists(bucket))) return;
      throw mapped;
    }
  }

  async bucketExists(bucket: string): Promise<boolean> {
    try {
      return await this.client.bucketExists(bucket);
    } catch (error) {
      throw toStorageError(error, this.ctx('check', bucket));
    }
  }

  private writeHeaders(options: UploadOptions): Record<string, string> {
    const headers: Record<string, string> = {
      'Content-Type': options.contentType ?? 'application/octet-stream',
    };
    for (const [rawKey, value] of Object.entries(options.metadata ?? {})) {
      const key = rawKey.toLowerCase();
      if (!metadataKeyPattern.test(key) || key === digestMetadataKey) {
        throw new InvalidArgumentError(`metadata.${rawKey}`, 'metadata keys are letters, digits, ".", "_" and "-"');
      }
      if (!metadataValuePattern.test(value)) {
        throw new InvalidArgumentError(`metadata.${rawKey}`, 'metadata values must be printable ASCII');
      }
      headers[`${metaPrefix}${key}`] = value;
    }
    if (options.digest !== undefined) {
      if (!metadataValuePattern.test(options.digest)) {
        throw new InvalidArgumentError('digest', 'must be printable ASCII, e.g. sha256:<hex>');
      }
      headers[`${metaPrefix}${digestMetadataKey}`] = options.digest;
    }
    return headers;
  }

  /** Parts must be at least `partSize`, and a known size must fit in 10 000 of them. */
  private partSizeFor(size: number | undefined): number {
    if (size === undefined) return this.config.partSize;
    const needed = Math.ceil(size / maxParts / (1024 * 1024)) * 1024 * 1024;
    const partSize = Math.max(this.config.partSize, needed);
    if (partSize > maxPartSize) throw new InvalidArgumentError('size', `${size} bytes is more than S3 can store`);
    return partSize;
  }

  async upload(bucket: string, name: string, body: Readable, options: UploadOptions = {}): Promise<ObjectInfo> {
    const ctx = this.ctx('upload', bucket, name);
    const signal = options.signal;
    let headers: Record<string, string>;
    let partSize: number;
    try {
      headers = this.writeHeaders(options);
      partSize = this.partSizeFor(options.size);
      if (signal?.aborted) throw new CancelledError(`upload of '${name}' in bucket '${bucket}' was cancelled`);
    } catch (error) {
      body.destroy();
      throw error;
    }
    const detach = destroyOnAbort(body, signal);
    // Hash only to check an announced digest; the client already signs each part's own sha256.
    const hash = options.digest?.startsWith('sha256:') ? createHash('sha256') : undefined;
    let size = 0;
    // One part being filled, one peeked at, and the ones in flight.
    const pool = new PartBufferPool(partSize, this.config.parallelParts + 2);
    const acquire = (): Buffer | Promise<Buffer> => pool.acquire();
    const parts = (
      isUnreadFileStream(body) ? readFileParts(body, partSize, acquire) : splitParts(body, partSize, acquire)
    )[Symbol.asyncIterator]();
    let uploadId: string | undefined;
    const runner = new BoundedRunner(this.config.parallelParts);

    const verify = (): void => {
      if (options.size !== undefined && options.size !== size) {
        throw new InvalidArgumentError('size', `announced ${options.size} bytes but the body had ${size}`);
      }
      if (hash) {
        const actual = `sha256:${hash.digest('hex')}`;
        if (actual !== options.digest) {
          throw new InvalidArgumentError('digest', `announced ${options.digest} but the body hashes to ${actual}`);
        }
      }
    };

    try {
      const first = (await parts.next()).value as Buffer;
      hash?.update(first);
      size += first.length;
      // A short first part means the stream already ended; a full one needs a peek at the next.
      const second = first.length < partSize ? undefined : await parts.next();
      if (!second || second.done) {
        verify();
        if (signal?.aborted) throw signal.reason;
        await this.put(bucket, name, first, headers);
      } else {
        uploadId = await this.client.initiateNewMultipartUpload(bucket, name, headers);
        const etags: { part: number; etag: string }[] = [];
        let partNumber = 0;
        const send = (buffer: Buffer): Promise<void> => {
          const part = ++partNumber;
          if (part > maxParts) {
            throw new InvalidArgumentError(
              'size',
              `the body is larger than ${maxParts} parts of ${partSize} bytes; pass its size or raise partSize`,
            );
          }
          return runner.add(async () => {
            try {
              const etag = await this.put(bucket, name, buffer, {}, `uploadId=${uploadId!}&partNumber=${part}`);
              etags.push({ part, etag });
            } finally {
              pool.release(buffer);
            }
          });
        };
        await send(first);
        let next: IteratorResult<Buffer> = second;
        while (!next.done && !runner.failed) {
          hash?.update(next.value);
          size += next.value.length;
          await send(next.value);
          if (runner.failed) break;
          next = await parts.next();
        }
        await runner.settle();
        if (runner.failed) throw runner.failed.error;
        verify();
        if (signal?.aborted) throw signal.reason;
        etags.sort((a, b) => a.part - b.part);
        await this.client.completeMultipartUpload(bucket, name, uploadId, etags);
        uploadId = undefined;
      }
    } catch (error) {
      body.destroy();
      // Deliberate: only releases the source iterator; the upload's own error is rethrown below.
      await parts.return(undefined).catch(() => undefined);
      if (uploadId !== undefined) {
        await runner.settle();
        try {
          await this.client.abortMultipartUpload(bucket, name, uploadId);
        } catch (abortError) {
          // The upload still fails with its own error; the leftover parts are invisible and expire by lifecycle.
          this.logger.warn(
            { bucket, name, uploadId, err: toStorageError(abortError, this.ctx('abort upload', bucket, name)).message },
            'could not abort the multipart upload',
          );
        }
      }
      throw toStorageError(error, ctx);
    } finally {
      detach();
    }
    this.logger.debug({ bucket, name, size }, 'uploaded');
    return {
      bucket,
      name,
      size,
      lastModified: new Date(),
      digest: options.digest,
      contentType: headers['Content-Type'],
      metadata: Object.fromEntries(
        Object.entries(options.metadata ?? {}).map(([k, v]) => [k.toLowerCase(), v] as const),
      ),
    };
  }

  /**
   * One PUT of a buffer: a whole small object, or a part (`query`). The client would hash the payload on the
   * event loop (SHA-256 to sign it, and MD5 besides for a single PUT); the signature's SHA-256 is computed in
   * the thread pool instead, so parts in flight hash on the other cores while this thread feeds the sockets.
   * A single unsigned PUT keeps its Content-MD5, so the store still checks what arrived.
   */
  private async put(
    bucket: string,
    name: string,
    body: Buffer,
    headers: Record<string, string>,
    query?: string,
  ): Promise<string> {
    // The client's own name check, which its put methods would have done.
    if (name.length === 0 || name.length > 1024) {
      throw Object.assign(new Error(`Invalid object name: ${name.slice(0, 64)}`), { name: 'InvalidObjectNameError' });
    }
    const signed = this.client.enableSHA256;
    const sha256 = signed ? await sha256Hex(body) : '';
    const requestHeaders: Record<string, string | number> = { ...headers, 'Content-Length': body.length };
    // As the client does: a single unsigned PUT carries its MD5; unsigned parts are covered by the etags.
    if (!signed && query === undefined) requestHeaders['Content-MD5'] = createHash('md5').update(body).digest('base64');
    const response = await this.client.makeRequestStreamAsync(
      { method: 'PUT', bucketName: bucket, objectName: name, headers: requestHeaders, ...(query ? { query } : {}) },
      body,
      sha256,
      [200],
      this.config.region ?? '',
    );
    await drain(response);
    return etagOf(response);
  }

  async download(bucket: string, name: string, options: DownloadOptions = {}): Promise<Readable> {
    const ctx = this.ctx('download', bucket, name);
    if (options.signal?.aborted) throw new CancelledError(`download of '${name}' in bucket '${bucket}' was cancelled`);
    const what = `'${name}' in bucket '${bucket}' at ${this.config.endpoint}`;
    /** The digest to verify the bytes against, from the object's metadata headers, if asked to. */
    const expected = (headers: Readonly<Record<string, string | string[] | undefined>>): string | undefined => {
      if (!options.verifyDigest) return undefined;
      const raw = headers[`${metaPrefix}${digestMetadataKey}`];
      const recorded = Array.isArray(raw) ? raw[0] : raw;
      if (!recorded?.startsWith('sha256:')) {
        throw new FailedPreconditionError(`${what} has no recorded sha256 digest to verify`);
      }
      return recorded;
    };
    let source: Readable;
    try {
      const response = (await this.client.getObject(bucket, name)) as IncomingMessage;
      let digest: string | undefined;
      try {
        digest = expected(response.headers);
      } catch (error) {
        response.destroy();
        throw error;
      }
      source = digest ? verifyingPassThrough(response, digest, what) : response;
      const detach = destroyOnAbort(source, options.signal);
      source.once('close', detach);
    } catch (error) {
      throw toStorageError(error, ctx);
    }
    // The response is handed out as is (an extra stream hop costs about a third of the throughput), with
    // its errors translated where they are emitted, so a failure mid-stream is a domain error too.
    const emit = source.emit.bind(source) as (event: string | symbol, ...args: unknown[]) => boolean;
    source.emit = ((event: string | symbol, ...args: unknown[]): boolean =>
      event === 'error' ? emit('error', toStorageError(args[0], ctx)) : emit(event, ...args)) as Readable['emit'];
    return source;
  }

  private toInfo(
    bucket: string,
    name: string,
    stat: { size: number; lastModified: Date; metaData: Record<string, unknown> },
  ): ObjectInfo {
    const metadata: Record<string, string> = {};
    let digest: string | undefined;
    let contentType: string | undefined;
    for (const [rawKey, value] of Object.entries(stat.metaData ?? {})) {
      const key = rawKey.toLowerCase();
      const text = Array.isArray(value) ? value.join(',') : String(value);
      if (key === 'content-type') contentType = text;
      else if (key === digestMetadataKey) digest = text;
      else if (!standardHeaders.has(key) && !key.startsWith('x-amz-')) metadata[key] = text;
    }
    return { bucket, name, size: stat.size, lastModified: stat.lastModified, digest, contentType, metadata };
  }

  async stat(bucket: string, name: string): Promise<ObjectInfo | undefined> {
    try {
      const stat = await this.client.statObject(bucket, name);
      return this.toInfo(bucket, name, stat);
    } catch (error) {
      if (notFoundCodes.has(codeOf(error) ?? '')) return undefined;
      throw toStorageError(error, this.ctx('stat', bucket, name));
    }
  }

  async *list(bucket: string, options: ListOptions = {}): AsyncIterable<ObjectInfo> {
    const ctx = this.ctx('list', bucket);
    const stream = this.client.listObjectsV2(bucket, options.prefix ?? '', true);
    try {
      for await (const item of stream) {
        if (options.signal?.aborted) throw new CancelledError(`listing bucket '${bucket}' was cancelled`);
        if (typeof item.name !== 'string') continue;
        yield {
          bucket,
          name: item.name,
          size: item.size,
          lastModified: item.lastModified ?? new Date(0),
          metadata: {},
        };
      }
    } catch (error) {
      if (codeOf(error) === 'NoSuchBucket') return;
      throw toStorageError(error, ctx);
    } finally {
      stream.destroy();
    }
  }

  async delete(bucket: string, target: DeleteTarget): Promise<number> {
    if ('name' in target) {
      if (!(await this.stat(bucket, target.name))) return 0;
      try {
        await this.client.removeObject(bucket, target.name);
        return 1;
      } catch (error) {
        if (notFoundCodes.has(codeOf(error) ?? '')) return 0;
        throw toStorageError(error, this.ctx('delete', bucket, target.name));
      }
    }
    let deleted = 0;
    let batch: string[] = [];
    const flush = async (): Promise<void> => {
      if (!batch.length) return;
      const names = batch;
      batch = [];
      let failures: DeleteFailure[];
      try {
        // The typings say `{ Error: {...} }`; the parser returns the `Error` elements themselves. Accept both.
        failures = (await this.client.removeObjects(bucket, names))
          .filter((f) => !!f)
          .map((f) => ((f as { Error?: DeleteFailure }).Error ?? f) as DeleteFailure);
      } catch (error) {
        throw toStorageError(error, this.ctx('delete', bucket));
      }
      const real = failures.filter((f) => f.Code !== 'NoSuchKey');
      deleted += names.length - failures.length;
      if (real.length) {
        const first = real[0]!;
        throw toStorageError(Object.assign(new Error(first.Message ?? 'delete failed'), { code: first.Code }), {
          ...this.ctx('delete', bucket, first.Key),
        });
      }
    };
    for await (const info of this.list(bucket, { prefix: target.prefix })) {
      batch.push(info.name);
      if (batch.length >= deleteBatch) await flush();
    }
    await flush();
    return deleted;
  }

  async presignedUrl(
    method: PresignMethod,
    bucket: string,
    name: string,
    options: PresignOptions = {},
  ): Promise<string> {
    const expires = Math.min(
      Math.max(1, Math.floor(options.expiresInSeconds ?? this.config.presignExpirySeconds)),
      maxPresignSeconds,
    );
    try {
      return await this.client.presignedUrl(method, bucket, name, expires);
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
    this.agent.destroy();
  }
}
