// Failures against real MinIO and the Workbay errors they map to: credentials, endpoint, bucket, broken downloads.
import { createServer, request } from 'node:http';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Readable } from 'node:stream';
import { CancelledError, NotFoundError, UnauthenticatedError, UnavailableError, isWorkbayError } from '@workbay/api';
import { digestStream, freePort, generateStream, sha256Of } from '@workbay/testing';
import { describe, expect, it } from 'vitest';
import { MinioStorage } from './minio-storage.js';
import {
  MiB,
  admin,
  bucket,
  errorOf,
  incompleteUploads,
  names,
  server,
  storage,
  useMinioServer,
} from './test-support/minio-suite.js';

/** An HTTP proxy in front of MinIO that cuts every GET response body after `cutAfter` bytes. */
async function startCuttingProxy(target: URL, cutAfter: number): Promise<{ url: string; server: Server }> {
  const server = createServer((req, res) => {
    const upstream = request(
      { host: target.hostname, port: target.port, method: req.method, path: req.url, headers: req.headers },
      (up) => {
        res.writeHead(up.statusCode ?? 502, up.headers);
        if (req.method !== 'GET') return up.pipe(res);
        let sent = 0;
        up.on('data', (chunk: Buffer) => {
          if (sent + chunk.length > cutAfter) {
            res.write(chunk.subarray(0, cutAfter - sent));
            up.destroy();
            res.socket?.destroy();
            return;
          }
          sent += chunk.length;
          res.write(chunk);
        });
        up.on('end', () => res.end());
      },
    );
    upstream.on('error', () => res.destroy());
    req.pipe(upstream);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return { url: `http://127.0.0.1:${port}`, server };
}

describe('MinioStorage against real MinIO', () => {
  useMinioServer();

  describe('wrong credentials', () => {
    it('a wrong secret key gives a clear authentication error and uploads nothing', async () => {
      const secret = 'definitely-not-the-secret';
      const wrong = MinioStorage.fromConfig({
        endpoint: server.endpoint,
        accessKey: server.accessKey,
        secretKey: secret,
        partSize: 5 * MiB,
      });
      try {
        // Small (one PUT) and large (multipart) uploads both fail before anything is stored.
        const small = await errorOf(wrong.upload(bucket, 'auth/small.bin', Readable.from([Buffer.from('x')])));
        const large = await errorOf(wrong.upload(bucket, 'auth/large.bin', generateStream(12 * MiB).stream));
        for (const error of [small, large]) {
          expect(error).toBeInstanceOf(UnauthenticatedError);
          expect(error.message).toContain(server.endpoint);
          expect(error.message).toContain(server.accessKey);
          expect(error.message).toMatch(/secret key is wrong/);
          expect(error.message).not.toContain(secret);
          expect(JSON.stringify(error)).not.toContain(secret);
        }
        const probe = await errorOf(wrong.bucketExists(bucket));
        expect(isWorkbayError(probe, 'unauthenticated') || isWorkbayError(probe, 'permission-denied')).toBe(true);
        expect(probe.message).not.toContain(secret);
      } finally {
        await wrong.close();
      }
      // Checked with the right credentials: nothing was written, not even an unfinished multipart upload.
      expect(await names(storage, bucket, 'auth/')).toEqual([]);
      expect(await incompleteUploads(admin, bucket)).toEqual([]);
    });

    it('an unknown access key is an authentication error naming it', async () => {
      const wrong = MinioStorage.fromConfig({
        endpoint: server.endpoint,
        accessKey: 'nobody',
        secretKey: 'whatever-secret',
      });
      try {
        const error = await errorOf(wrong.upload(bucket, 'auth/x', Readable.from([Buffer.from('x')])));
        expect(error).toBeInstanceOf(UnauthenticatedError);
        expect(error.message).toContain("access key 'nobody'");
      } finally {
        await wrong.close();
      }
    });
  });

  it('an unreachable endpoint is UnavailableError naming it', async () => {
    const port = await freePort();
    const endpoint = `http://127.0.0.1:${port}`;
    const down = MinioStorage.fromConfig({ endpoint, accessKey: 'a', secretKey: 'b-secret' });
    try {
      for (const attempt of [
        () => down.upload(bucket, 'x', Readable.from([Buffer.from('x')])),
        () => down.stat(bucket, 'x'),
        () => down.ensureBucket(bucket),
        () => down.diskUsage(bucket),
        () => down.download(bucket, 'x'),
      ]) {
        const error = await errorOf(attempt());
        expect(error).toBeInstanceOf(UnavailableError);
        expect(error.message).toContain(endpoint);
        expect(error.message).not.toContain('b-secret');
      }
    } finally {
      await down.close();
    }
  });

  it('an upload to a missing bucket is NotFoundError naming the bucket', async () => {
    const error = await errorOf(storage.upload('workbay-no-such-bucket', 'a', Readable.from([Buffer.from('x')])));
    expect(error).toBeInstanceOf(NotFoundError);
    expect(error.message).toContain("bucket 'workbay-no-such-bucket'");
  });

  it('a download cut off mid-stream fails with UnavailableError naming the endpoint', async () => {
    await storage.upload(bucket, 'cut/obj.bin', generateStream(8 * MiB).stream);
    const proxy = await startCuttingProxy(new URL(server.endpoint), 3 * MiB);
    const viaProxy = MinioStorage.fromConfig({
      endpoint: proxy.url,
      accessKey: server.accessKey,
      secretKey: server.secretKey,
    });
    try {
      const body = await viaProxy.download(bucket, 'cut/obj.bin');
      const error = await errorOf(digestStream(body));
      expect(error).toBeInstanceOf(UnavailableError);
      expect(error.message).toContain(proxy.url);
      // With the digest check too: the cut is reported as such, before any digest comparison.
      const bytes = Buffer.alloc(8 * MiB, 7);
      await storage.upload(bucket, 'cut/verified.bin', Readable.from([bytes]), { digest: sha256Of(bytes) });
      const verified = await viaProxy.download(bucket, 'cut/verified.bin', { verifyDigest: true });
      expect(await errorOf(digestStream(verified))).toBeInstanceOf(UnavailableError);
    } finally {
      await viaProxy.close();
      proxy.server.closeAllConnections();
      proxy.server.close();
    }
  });

  it('a download aborted with an AbortSignal ends with CancelledError', async () => {
    await storage.upload(bucket, 'cut/abort.bin', generateStream(8 * MiB).stream);
    const controller = new AbortController();
    const body = await storage.download(bucket, 'cut/abort.bin', { signal: controller.signal });
    let read = 0;
    const error = await errorOf(
      (async () => {
        for await (const chunk of body) {
          read += (chunk as Buffer).length;
          if (read > MiB) controller.abort();
        }
      })(),
    );
    expect(error).toBeInstanceOf(CancelledError);
  });
});
