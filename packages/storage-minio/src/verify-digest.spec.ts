import { PassThrough, Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { FailedPreconditionError, InternalError } from '@workbay/api';
import type { MinioServer } from '@workbay/testing';
import { generateStream, readAll, sha256Of, startMinio } from '@workbay/testing';
import { Client } from 'minio';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DigestMismatchError } from './digest-check.js';
import { MinioStorage, digestMetadataKey } from './minio-storage.js';

const MiB = 1024 * 1024;

const randomBytes = async (size: number): Promise<Buffer> => readAll(generateStream(size).stream);

/** Reads the stream to its end; resolves with what it read, or rejects with its error and how far it got. */
async function drain(stream: Readable): Promise<{ bytes: number; ended: boolean; error?: Error }> {
  let bytes = 0;
  let ended = false;
  stream.once('end', () => (ended = true));
  try {
    for await (const chunk of stream) bytes += (chunk as Buffer).length;
    return { bytes, ended };
  } catch (error) {
    return { bytes, ended, error: error as Error };
  }
}

/** The same digest checks over plain HTTP and TLS. */
for (const tls of [false, true]) {
  describe(`MinioStorage download with verifyDigest, ${tls ? 'TLS' : 'plain HTTP'}`, () => {
    let server: MinioServer;
    let storage: MinioStorage;
    let admin: Client;
    const bucket = 'workbay-verify';

    beforeAll(async () => {
      server = await startMinio({ tls });
      storage = MinioStorage.fromConfig({
        endpoint: server.endpoint,
        accessKey: server.accessKey,
        secretKey: server.secretKey,
        caFile: server.caFile,
        partSize: 5 * MiB,
      });
      // Writes behind the plugin's back, as another S3 client (or a faulty store) would.
      admin = new Client({
        endPoint: '127.0.0.1',
        port: server.port,
        useSSL: tls,
        accessKey: server.accessKey,
        secretKey: server.secretKey,
        region: server.region,
        ...(tls ? { transportAgent: new (await import('node:https')).Agent({ ca: storage.config.ca }) } : {}),
      });
      await storage.ensureBucket(bucket);
    });

    afterAll(async () => {
      await storage?.close();
      await server?.stop();
    });

    it('an intact object streams whole and ends', async () => {
      const bytes = await randomBytes(12 * MiB);
      await storage.upload(bucket, 'ok.bin', Readable.from([bytes]), { digest: sha256Of(bytes) });
      expect(storage.verifiesDigests).toBe(true);
      const body = await storage.download(bucket, 'ok.bin', { verifyDigest: true });
      expect(sha256Of(await readAll(body))).toBe(sha256Of(bytes));
    });

    it('every way of reading checks the bytes: pipe, paused read() and flowing data events', async () => {
      const bytes = await randomBytes(6 * MiB);
      const digest = sha256Of(bytes);
      await storage.upload(bucket, 'ways.bin', Readable.from([bytes]), { digest });
      const other = Buffer.from(bytes);
      other[3 * MiB] ^= 0x01;
      await admin.putObject(bucket, 'ways-bad.bin', other, other.length, { [digestMetadataKey]: digest });

      const piped = async (name: string): Promise<Error | undefined> => {
        const sink = new PassThrough();
        sink.resume();
        return pipeline(await storage.download(bucket, name, { verifyDigest: true }), sink).then(
          () => undefined,
          (error: Error) => error,
        );
      };
      const paused = async (name: string): Promise<Error | undefined> => {
        const body = await storage.download(bucket, name, { verifyDigest: true });
        return new Promise((resolve) => {
          body.on('readable', () => {
            while (body.read() !== null);
          });
          body.once('end', () => resolve(undefined));
          body.once('error', resolve);
        });
      };
      const flowing = async (name: string): Promise<Error | undefined> => {
        const body = await storage.download(bucket, name, { verifyDigest: true });
        return new Promise((resolve) => {
          body.on('data', () => undefined);
          body.once('end', () => resolve(undefined));
          body.once('error', resolve);
        });
      };
      for (const read of [piped, paused, flowing]) {
        expect(await read('ways.bin'), read.name).toBeUndefined();
        expect(await read('ways-bad.bin'), read.name).toBeInstanceOf(DigestMismatchError);
      }
    });

    it('a verified stream refuses unshift (the bytes would be hashed twice)', async () => {
      const bytes = await randomBytes(MiB);
      await storage.upload(bucket, 'unshift.bin', Readable.from([bytes]), { digest: sha256Of(bytes) });
      const body = await storage.download(bucket, 'unshift.bin', { verifyDigest: true });
      const failed = new Promise<Error>((resolve) => body.once('error', resolve));
      body.once('data', (chunk: Buffer) => body.unshift(chunk));
      expect((await failed).message).toContain('unshift');
    });

    it('an empty object with its digest verifies', async () => {
      await storage.upload(bucket, 'empty.bin', Readable.from([]), { digest: sha256Of('') });
      const body = await storage.download(bucket, 'empty.bin', { verifyDigest: true });
      expect((await readAll(body)).length).toBe(0);
    });

    it('bytes overwritten out of band under the recorded digest fail the stream with DigestMismatchError', async () => {
      const bytes = await randomBytes(12 * MiB);
      const digest = sha256Of(bytes);
      await storage.upload(bucket, 'corrupt.bin', Readable.from([bytes]), { digest });
      // Same size, one byte different, the original digest kept in the metadata.
      const other = Buffer.from(bytes);
      other[7 * MiB] ^= 0xff;
      await admin.putObject(bucket, 'corrupt.bin', other, other.length, { [digestMetadataKey]: digest });
      expect((await storage.stat(bucket, 'corrupt.bin'))?.digest).toBe(digest);

      const result = await drain(await storage.download(bucket, 'corrupt.bin', { verifyDigest: true }));
      expect(result.error).toBeInstanceOf(DigestMismatchError);
      expect(result.error).toBeInstanceOf(InternalError);
      expect(result.error?.message).toContain('corrupt.bin');
      expect((result.error as DigestMismatchError).expected).toBe(digest);
      expect((result.error as DigestMismatchError).actual).toBe(sha256Of(other));
      // The reader may have had bytes, but never the end of the stream.
      expect(result.ended).toBe(false);
      // Without the option the store's bytes come through as they are.
      expect(sha256Of(await readAll(await storage.download(bucket, 'corrupt.bin')))).toBe(sha256Of(other));
    });

    it('a shorter object under the recorded digest fails too', async () => {
      const digest = sha256Of('the whole content');
      await admin.putObject(bucket, 'short.bin', Buffer.from('the whole'), 9, { [digestMetadataKey]: digest });
      const result = await drain(await storage.download(bucket, 'short.bin', { verifyDigest: true }));
      expect(result.error).toBeInstanceOf(DigestMismatchError);
      expect(result.ended).toBe(false);
    });

    it('an object with no recorded sha256 digest is refused with FailedPreconditionError', async () => {
      await storage.upload(bucket, 'nodigest.bin', Readable.from([Buffer.from('x')]));
      await expect(storage.download(bucket, 'nodigest.bin', { verifyDigest: true })).rejects.toBeInstanceOf(
        FailedPreconditionError,
      );
      await storage.upload(bucket, 'md5.bin', Readable.from([Buffer.from('x')]), { digest: 'md5:0' });
      await expect(storage.download(bucket, 'md5.bin', { verifyDigest: true })).rejects.toBeInstanceOf(
        FailedPreconditionError,
      );
    });
  });
}
