/**
 * The upload path of `MinioStorage`: an object that fits in one part is one PUT, a larger one a multipart
 * upload of our own with parts in flight in parallel, each PUT's signature hashed off the event loop. Cutting
 * the body into parts and bounding the parts in flight: `multipart.ts` and `file-parts.ts`; the headers
 * written: `object-metadata.ts`.
 */
import { createHash, webcrypto } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { Readable } from 'node:stream';
import { crc32 } from 'node:zlib';
import type { ObjectInfo, PluginLogger, UploadOptions } from '@workbay/api';
import { CancelledError, InvalidArgumentError, lowerCaseMetadata } from '@workbay/api';
import type { Client } from 'minio';
import type { MinioConfig } from './config.js';
import { maxPartSize, maxParts } from './config.js';
import type { ErrorContext } from './errors.js';
import { toStorageError } from './errors.js';
import { isUnreadFileStream, readFileParts } from './file-parts.js';
import { BoundedRunner, PartBufferCache, PartBufferPool, destroyOnAbort, splitParts } from './multipart.js';
import { writeHeaders } from './object-metadata.js';

/** SHA-256 in the thread pool (WebCrypto runs its digests there), so the event loop keeps sending parts. */
async function sha256Hex(data: Buffer): Promise<string> {
  return Buffer.from(await webcrypto.subtle.digest('SHA-256', data)).toString('hex');
}

/** The `x-amz-checksum-crc32` value of a body: its CRC-32 (the zlib/IEEE one), big-endian, base64. */
export function crc32Base64(data: Buffer): string {
  const value = Buffer.allocUnsafe(4);
  value.writeUInt32BE(crc32(data));
  return value.toString('base64');
}

function drain(response: IncomingMessage): Promise<void> {
  return new Promise((resolve, reject) => {
    response.on('data', () => undefined);
    response.once('error', reject);
    response.once('end', resolve);
  });
}

/** The additional-checksum header S3 and MinIO verify on a PUT (object or part) before storing it. */
export const checksumHeader = 'x-amz-checksum-crc32';

/** The etag S3 answers with, without its quotes. */
function etagOf(response: IncomingMessage): string {
  const raw = response.headers.etag;
  return (Array.isArray(raw) ? (raw[0] ?? '') : (raw ?? '')).replace(/^"|"$/g, '');
}

/** Uploads for one `MinioStorage`, on its client, config and logger. */
export class MinioUploader {
  /** Part buffers of the configured size, kept between uploads (one upload's worth). */
  private readonly buffers: PartBufferCache;

  constructor(
    private readonly client: Client,
    private readonly config: MinioConfig,
    private readonly logger: PluginLogger,
    /** The storage's error context for an operation on a bucket or object. */
    private readonly ctx: (op: string, bucket?: string, name?: string) => ErrorContext,
  ) {
    this.buffers = new PartBufferCache(config.partSize, config.parallelParts + 2);
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
      headers = writeHeaders(options);
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
    const pool = new PartBufferPool(partSize, this.config.parallelParts + 2, this.buffers);
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
        // Sent (a failed PUT's buffer is left to the collector: its socket may still hold it).
        pool.release(first);
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
      pool.close();
    }
    this.logger.debug({ bucket, name, size }, 'uploaded');
    return {
      bucket,
      name,
      size,
      lastModified: new Date(),
      digest: options.digest,
      contentType: headers['Content-Type'],
      metadata: lowerCaseMetadata(options.metadata),
    };
  }

  /**
   * One PUT of a buffer: a whole small object, or a part (`query`). Every PUT is checked by the store against
   * what the client computed before sending:
   * - signed (`signPayload` over plain HTTP): the signature covers the payload's SHA-256, computed in the
   *   thread pool (WebCrypto) so parts in flight hash on the other cores while this thread feeds the sockets;
   * - otherwise (the default, and always over TLS): `UNSIGNED-PAYLOAD` with an `x-amz-checksum-crc32` header,
   *   which the signature covers and the store verifies (MinIO and S3 refuse a mismatch with
   *   `XAmzContentChecksumMismatch`). zlib's CRC-32 runs at about 1.8 GB/s on this thread, against SHA-256's
   *   1.1 GB/s, and the store's check of it costs next to nothing, where a signed payload is hashed twice,
   *   once on each side of a loopback that shares the same cores.
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
    if (!signed) requestHeaders[checksumHeader] = crc32Base64(body);
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
}
