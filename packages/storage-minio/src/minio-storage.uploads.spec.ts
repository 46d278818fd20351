// Uploads to real MinIO: unsigned and parallel parts, aborting on a failed source, digest and size checks, metadata.
import { createServer, request } from 'node:http';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Readable } from 'node:stream';
import { InvalidArgumentError } from '@workbay/api';
import { digestStream, generateStream, readAll, sha256Of } from '@workbay/testing';
import { describe, expect, it } from 'vitest';
import { MinioStorage } from './minio-storage.js';
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

/**
 * An HTTP proxy in front of MinIO that counts part uploads in flight (and holds each for a moment so that
 * overlap is visible). It forwards the Host header unchanged, so request signatures stay valid.
 */
async function startPartCountingProxy(
  target: URL,
): Promise<{ url: string; peak: () => number; payloadHashes: Set<string>; server: Server }> {
  let inFlight = 0;
  let peak = 0;
  const payloadHashes = new Set<string>();
  const server = createServer((req, res) => {
    const isPart = req.method === 'PUT' && /[?&]partNumber=/.test(req.url ?? '');
    if (isPart) peak = Math.max(peak, ++inFlight);
    if (isPart) payloadHashes.add(String(req.headers['x-amz-content-sha256']));
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
    req.pipe(upstream);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return { url: `http://127.0.0.1:${port}`, peak: () => peak, payloadHashes, server };
}

describe('MinioStorage against real MinIO', () => {
  useMinioServer();

  it('uploads with payload signing off (UNSIGNED-PAYLOAD over HTTP), intact', async () => {
    const proxy = await startPartCountingProxy(new URL(server.endpoint));
    const unsigned = MinioStorage.fromConfig({
      endpoint: proxy.url,
      accessKey: server.accessKey,
      secretKey: server.secretKey,
      partSize: 5 * MiB,
      signPayload: false,
    });
    try {
      const source = generateStream(11 * MiB);
      await unsigned.upload(bucket, 'unsigned/obj.bin', source.stream);
      const back = await digestStream(await storage.download(bucket, 'unsigned/obj.bin'));
      expect(back).toEqual({ digest: await source.digest, size: 11 * MiB });
      expect([...proxy.payloadHashes]).toEqual(['UNSIGNED-PAYLOAD']);
    } finally {
      await unsigned.close();
      proxy.server.closeAllConnections();
      proxy.server.close();
    }
  });

  it('uploads parts in parallel, up to parallelParts at once', async () => {
    const proxy = await startPartCountingProxy(new URL(server.endpoint));
    const parallel = MinioStorage.fromConfig({
      endpoint: proxy.url,
      accessKey: server.accessKey,
      secretKey: server.secretKey,
      partSize: 5 * MiB,
      parallelParts: 4,
    });
    try {
      const source = generateStream(42 * MiB);
      const info = await parallel.upload(bucket, 'parallel/obj.bin', source.stream);
      expect(info.size).toBe(42 * MiB);
      expect(proxy.peak()).toBe(4);
      // Signed payloads by default: every part carries its own SHA-256.
      for (const hash of proxy.payloadHashes) expect(hash).toMatch(/^[0-9a-f]{64}$/);
      const back = await digestStream(await storage.download(bucket, 'parallel/obj.bin'));
      expect(back).toEqual({ digest: await source.digest, size: 42 * MiB });
    } finally {
      await parallel.close();
      proxy.server.closeAllConnections();
      proxy.server.close();
    }
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
