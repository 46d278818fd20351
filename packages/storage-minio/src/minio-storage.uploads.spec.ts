// Uploads to real MinIO: CRC-32-checked, signed and parallel parts, aborting on a failed source, digest and size checks, metadata.
import { createServer, request } from 'node:http';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Readable } from 'node:stream';
import { InvalidArgumentError, UnavailableError } from '@workbay/api';
import { digestStream, generateStream, readAll, sha256Of } from '@workbay/testing';
import { describe, expect, it } from 'vitest';
import { MinioStorage } from './minio-storage.js';
import { crc32Base64 } from './upload.js';
import {
  MiB,
  admin,
  bucket,
  errorOf,
  incompleteUploads,
  server,
  storage,
  useMinioServer,
} from './test-support/minio-suite.js';

/** What the proxy saw of one PUT: its payload hash header, its checksum header, and the CRC-32 of its body. */
interface SeenPut {
  readonly payloadHash: string;
  readonly checksum: string | undefined;
  readonly bodyChecksum: string;
}

/**
 * An HTTP proxy in front of MinIO that counts part uploads in flight (and holds each for a moment so that
 * overlap is visible) and records every PUT. It forwards the Host header unchanged, so request signatures stay
 * valid. With `corruptPart`, it flips one byte in that part's body on the way, as a bad link or NIC would.
 */
async function startPartCountingProxy(
  target: URL,
  options: { corruptPart?: number } = {},
): Promise<{ url: string; peak: () => number; puts: SeenPut[]; server: Server }> {
  let inFlight = 0;
  let peak = 0;
  const puts: SeenPut[] = [];
  const server = createServer((req, res) => {
    const isPart = req.method === 'PUT' && /[?&]partNumber=/.test(req.url ?? '');
    const partNumber = Number(/[?&]partNumber=(\d+)/.exec(req.url ?? '')?.[1]);
    if (isPart) peak = Math.max(peak, ++inFlight);
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      if (req.method === 'PUT') {
        puts.push({
          payloadHash: String(req.headers['x-amz-content-sha256']),
          checksum: req.headers['x-amz-checksum-crc32'] as string | undefined,
          bodyChecksum: crc32Base64(body),
        });
      }
      if (partNumber === options.corruptPart) body[body.length >> 1] ^= 0x01;
      const upstream = request(
        { host: target.hostname, port: target.port, method: req.method, path: req.url, headers: req.headers },
        (up) => {
          const forward = (): void => {
            if (isPart) inFlight--;
            res.writeHead(up.statusCode ?? 502, up.headers);
            up.pipe(res);
          };
          if (isPart) setTimeout(forward, 150);
          else forward();
        },
      );
      upstream.on('error', () => res.destroy());
      upstream.end(body);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return { url: `http://127.0.0.1:${port}`, peak: () => peak, puts, server };
}

describe('MinioStorage against real MinIO', () => {
  useMinioServer();

  async function throughProxy(
    proxy: Awaited<ReturnType<typeof startPartCountingProxy>>,
    config: { signPayload?: boolean; parallelParts?: number },
    use: (storage: MinioStorage) => Promise<void>,
  ): Promise<void> {
    const proxied = MinioStorage.fromConfig({
      endpoint: proxy.url,
      accessKey: server.accessKey,
      secretKey: server.secretKey,
      partSize: 5 * MiB,
      ...config,
    });
    try {
      await use(proxied);
    } finally {
      await proxied.close();
      proxy.server.closeAllConnections();
      proxy.server.close();
    }
  }

  it('sends every PUT unsigned with a CRC-32 checksum of its body by default, intact', async () => {
    const proxy = await startPartCountingProxy(new URL(server.endpoint));
    await throughProxy(proxy, {}, async (proxied) => {
      const source = generateStream(11 * MiB);
      await proxied.upload(bucket, 'unsigned/obj.bin', source.stream);
      await proxied.upload(bucket, 'unsigned/small', Readable.from([Buffer.from('small')]));
      const back = await digestStream(await storage.download(bucket, 'unsigned/obj.bin'));
      expect(back).toEqual({ digest: await source.digest, size: 11 * MiB });
      // Three parts and one single PUT, each with the checksum of exactly what it carried.
      expect(proxy.puts).toHaveLength(4);
      for (const put of proxy.puts) {
        expect(put.payloadHash).toBe('UNSIGNED-PAYLOAD');
        expect(put.checksum).toBe(put.bodyChecksum);
      }
    });
  });

  it('fails an upload whose part is corrupted on the way (the store checks the checksum), storing nothing', async () => {
    const proxy = await startPartCountingProxy(new URL(server.endpoint), { corruptPart: 2 });
    await throughProxy(proxy, {}, async (proxied) => {
      const error = await errorOf(proxied.upload(bucket, 'corrupt/obj.bin', generateStream(11 * MiB).stream));
      expect(error).toBeInstanceOf(UnavailableError);
      expect((error as Error).message).toMatch(/received other bytes than were sent.*XAmzContentChecksumMismatch/);
      expect(await storage.stat(bucket, 'corrupt/obj.bin')).toBeUndefined();
      expect(await incompleteUploads(admin, bucket)).toEqual([]);
    });
  });

  it('signs each part with its SHA-256 instead when signPayload is on (plain HTTP)', async () => {
    const proxy = await startPartCountingProxy(new URL(server.endpoint));
    await throughProxy(proxy, { signPayload: true }, async (proxied) => {
      const source = generateStream(11 * MiB);
      await proxied.upload(bucket, 'signed/obj.bin', source.stream);
      expect(proxy.puts).toHaveLength(3);
      for (const put of proxy.puts) {
        expect(put.payloadHash).toMatch(/^[0-9a-f]{64}$/);
        expect(put.checksum).toBeUndefined();
      }
      const back = await digestStream(await storage.download(bucket, 'signed/obj.bin'));
      expect(back).toEqual({ digest: await source.digest, size: 11 * MiB });
    });
  });

  it('uploads parts in parallel, up to parallelParts at once', async () => {
    const proxy = await startPartCountingProxy(new URL(server.endpoint));
    await throughProxy(proxy, { parallelParts: 4 }, async (proxied) => {
      const source = generateStream(42 * MiB);
      const info = await proxied.upload(bucket, 'parallel/obj.bin', source.stream);
      expect(info.size).toBe(42 * MiB);
      expect(proxy.peak()).toBe(4);
      const back = await digestStream(await storage.download(bucket, 'parallel/obj.bin'));
      expect(back).toEqual({ digest: await source.digest, size: 42 * MiB });
    });
  });

  it('aborts the multipart upload when the source fails, leaving no unfinished upload behind', async () => {
    const broken = generateStream(40 * MiB, { failAfterBytes: 17 * MiB });
    await expect(storage.upload(bucket, 'abort/obj.bin', broken.stream)).rejects.toThrow(/failed on purpose/);
    expect(await incompleteUploads(admin, bucket)).toEqual([]);
    expect(await storage.stat(bucket, 'abort/obj.bin')).toBeUndefined();
  });

  it('verifies a sha256 digest and size announced by the writer', async () => {
    await storage.upload(bucket, 'verify/obj', Readable.from([Buffer.from('good')]), { digest: sha256Of('good') });
    const bad = await errorOf(
      storage.upload(bucket, 'verify/obj', generateStream(11 * MiB).stream, { digest: sha256Of('something else') }),
    );
    expect(bad).toBeInstanceOf(InvalidArgumentError);
    expect((bad as InvalidArgumentError).field).toBe('digest');
    const badSize = await errorOf(
      storage.upload(bucket, 'verify/obj', Readable.from([Buffer.from('four')]), { size: 5 }),
    );
    expect((badSize as InvalidArgumentError).field).toBe('size');
    // The good version is still there.
    expect((await readAll(await storage.download(bucket, 'verify/obj'))).toString()).toBe('good');
    expect(await incompleteUploads(admin, bucket)).toEqual([]);
  });

  it('stores the digest and content type as object metadata other S3 clients can read', async () => {
    await storage.upload(bucket, 'meta/obj', Readable.from([Buffer.from('m')]), {
      digest: sha256Of('m'),
      contentType: 'application/x-tar',
      metadata: { owner: 'alice' },
    });
    const stat = await admin.statObject(bucket, 'meta/obj');
    expect(stat.metaData).toMatchObject({
      'content-type': 'application/x-tar',
      'workbay-digest': sha256Of('m'),
      owner: 'alice',
    });
  });

  it('refuses metadata S3 cannot carry, naming the key', async () => {
    const error = await errorOf(
      storage.upload(bucket, 'meta/bad', Readable.from([Buffer.from('m')]), { metadata: { 'bad key': 'v' } }),
    );
    expect((error as InvalidArgumentError).field).toBe('metadata.bad key');
  });
});
