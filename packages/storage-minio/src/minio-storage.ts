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
  ReadIntoOptions,
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
  NotFoundError,
  silentLogger,
} from '@workbay/api';
import { Client } from 'minio';
import type { MinioConfig } from './config.js';
import { parseMinioConfig } from './config.js';
import type { ErrorContext } from './errors.js';
import { toStorageError } from './errors.js';
import { verifyWhileRead } from './digest-check.js';
import { destroyOnAbort } from './multipart.js';
import { digestMetadataKey, metaPrefix, toInfo } from './object-metadata.js';
import { getObjectBody } from './object-body.js';
import { fillFrom, readObjectRange } from './object-range.js';
import { MinioUploader } from './upload.js';

export { digestMetadataKey } from './object-metadata.js';

const maxPresignSeconds = 7 * 24 * 3600;
const deleteBatch = 1_000;
/** A direct GET's presigned URL is used at once; a minute covers clocks a little apart. */
const directGetExpirySeconds = 60;

/** A download's response: headers (lower-case names) and the body stream. */
interface ObjectBody {
  readonly headers: Readonly<Record<string, string | string[] | undefined>>;
  readonly body: Readable;
}
const notFoundCodes = new Set(['NotFound', 'NoSuchKey', 'NoSuchBucket']);

interface DeleteFailure {
  readonly Code?: string;
  readonly Message?: string;
  readonly Key?: string;
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
  /** The upload path (`upload.ts`), on this storage's client, config and logger. */
  private readonly uploader: MinioUploader;

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
    this.uploader = new MinioUploader(this.client, config, this.logger, (op, bucket, name) =>
      this.ctx(op, bucket, name),
    );
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

  async upload(bucket: string, name: string, body: Readable, options: UploadOptions = {}): Promise<ObjectInfo> {
    return this.uploader.upload(bucket, name, body, options);
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
      const response = (await this.directBody(bucket, name, what)) ?? (await this.clientBody(bucket, name));
      let digest: string | undefined;
      try {
        digest = expected(response.headers);
      } catch (error) {
        response.body.destroy();
        throw error;
      }
      source = digest ? verifyWhileRead(response.body, digest, what) : response.body;
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
  /**
   * The object's bytes read from the socket into the chunks themselves (object-body.ts: a third of the CPU of the
   * S3 client's HTTP path) over a presigned plain-HTTP GET; undefined over TLS, or when the store answers anything
   * but a plain 200 (the S3 client then asks again and maps the store's error).
   */
  private async directBody(bucket: string, name: string, what: string): Promise<ObjectBody | undefined> {
    if (this.config.useSSL) return undefined;
    const url = new URL(await this.client.presignedUrl('GET', bucket, name, directGetExpirySeconds));
    const response = await getObjectBody(url, what);
    return response && { headers: response.headers, body: response.body };
  }

  /**
   * Reads from `offset` into the caller's buffer: over plain HTTP straight from the socket (object-range.ts), else
   * (TLS, or an answer that is not a plain 206) through the S3 client's ranged GET, copied in.
   */
  async readInto(bucket: string, name: string, into: Uint8Array, options: ReadIntoOptions = {}): Promise<number> {
    const offset = options.offset ?? 0;
    if (!Number.isSafeInteger(offset) || offset < 0) {
      throw new InvalidArgumentError('offset', `must be a non-negative integer, not ${offset}`);
    }
    const ctx = this.ctx('read', bucket, name);
    const what = `'${name}' in bucket '${bucket}' at ${this.config.endpoint}`;
    // No range is empty: an empty read still says whether the object is there, as a download would.
    if (into.length === 0) {
      if (!(await this.stat(bucket, name))) throw new NotFoundError(`object ${what} not found`);
      return 0;
    }
    try {
      if (!this.config.useSSL) {
        const url = new URL(await this.client.presignedUrl('GET', bucket, name, directGetExpirySeconds));
        const direct = await readObjectRange(url, into, offset, what, options.signal);
        if (direct !== undefined) return direct;
      }
      options.signal?.throwIfAborted();
      const stream = await this.client.getPartialObject(bucket, name, offset, into.length);
      return await fillFrom(stream, into, options.signal);
    } catch (error) {
      // Past the object's end: the S3 client reports the store's 416 as an error; nothing to read is 0 bytes.
      if ((error as { code?: unknown }).code === 'InvalidRange') return 0;
      throw toStorageError(error, ctx);
    }
  }

  private async clientBody(bucket: string, name: string): Promise<ObjectBody> {
    const response = (await this.client.getObject(bucket, name)) as IncomingMessage;
    return { headers: response.headers, body: response };
  }

  async stat(bucket: string, name: string): Promise<ObjectInfo | undefined> {
    try {
      const stat = await this.client.statObject(bucket, name);
      return toInfo(bucket, name, stat);
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
