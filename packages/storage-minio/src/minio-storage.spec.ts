import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, request } from 'node:http';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import {
  CancelledError,
  InvalidArgumentError,
  NotFoundError,
  PluginHost,
  UnauthenticatedError,
  UnavailableError,
  backupObjectName,
  isWorkbayError,
  locateOwner,
  snapshotObjectName,
} from '@workbay/api';
import type { MinioServer } from '@workbay/testing';
import { digestStream, freePort, generateStream, readAll, sha256Of, startMinio } from '@workbay/testing';
import { Client } from 'minio';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MinioStorage } from './minio-storage.js';
import { plugin } from './plugin.js';

const MiB = 1024 * 1024;

async function errorOf(promise: Promise<unknown>): Promise<Error> {
  try {
    await promise;
  } catch (error) {
    return error as Error;
  }
  throw new Error('expected a rejection');
}

async function names(storage: MinioStorage, bucket: string, prefix?: string): Promise<string[]> {
  const out: string[] = [];
  for await (const info of storage.list(bucket, { prefix })) out.push(info.name);
  return out;
}

/** Multipart uploads that were started and never completed or aborted. */
async function incompleteUploads(client: Client, bucket: string): Promise<string[]> {
  const out: string[] = [];
  for await (const item of client.listIncompleteUploads(bucket, '', true)) out.push(item.key);
  return out;
}

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
  let server: MinioServer;
  let storage: MinioStorage;
  let admin: Client;
  let scratch: string;
  const bucket = 'workbay-minio-spec';

  beforeAll(async () => {
    server = await startMinio();
    scratch = mkdtempSync(join(tmpdir(), 'workbay-minio-spec-'));
    storage = MinioStorage.fromConfig({
      endpoint: server.endpoint,
      accessKey: server.accessKey,
      secretKey: server.secretKey,
      partSize: 5 * MiB,
    });
    admin = new Client({
      endPoint: '127.0.0.1',
      port: server.port,
      useSSL: false,
      accessKey: server.accessKey,
      secretKey: server.secretKey,
      region: server.region,
    });
    await storage.ensureBucket(bucket);
  });

  afterAll(async () => {
    await storage?.close();
    await server?.stop();
    if (scratch) rmSync(scratch, { recursive: true, force: true });
  });

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

  it('reads credentials from files', async () => {
    writeFileSync(join(scratch, 'access'), `${server.accessKey}\n`);
    writeFileSync(join(scratch, 'secret'), `${server.secretKey}\n`);
    const fromFiles = MinioStorage.fromConfig({
      endpoint: `127.0.0.1:${server.port}`,
      accessKeyFile: join(scratch, 'access'),
      secretKeyFile: join(scratch, 'secret'),
    });
    try {
      await fromFiles.upload(bucket, 'files/creds.txt', Readable.from([Buffer.from('from files')]));
      expect((await readAll(await storage.download(bucket, 'files/creds.txt'))).toString()).toBe('from files');
    } finally {
      await fromFiles.close();
    }
  });

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

  it('supports the shared-bucket layout: owners separated by prefix', async () => {
    const shared = MinioStorage.fromConfig({
      endpoint: server.endpoint,
      accessKey: server.accessKey,
      secretKey: server.secretKey,
      layout: { mode: 'shared', bucket: 'workbay-shared' },
    });
    try {
      expect(shared.layout).toEqual({ mode: 'shared', bucket: 'workbay-shared' });
      const alice = locateOwner(shared.layout, 'alice');
      const bob = locateOwner(shared.layout, 'bob');
      expect(alice.bucket).toBe('workbay-shared');
      await shared.ensureBucket(alice.bucket);
      await shared.upload(alice.bucket, backupObjectName(alice, 'ws-1'), Readable.from([Buffer.alloc(100)]));
      await shared.upload(alice.bucket, snapshotObjectName(alice, 'ws-1', 1n), Readable.from([Buffer.alloc(10)]));
      await shared.upload(bob.bucket, backupObjectName(bob, 'ws-2'), Readable.from([Buffer.alloc(7)]));
      expect(await names(shared, alice.bucket, alice.prefix)).toEqual([
        'alice/workspaces/ws-1/full.tar',
        'alice/workspaces/ws-1/snapshot-1.tar',
      ]);
      expect(await shared.diskUsage(alice.bucket, alice.prefix)).toBe(110);
      expect(await shared.diskUsage(bob.bucket, bob.prefix)).toBe(7);
      expect(await shared.delete(alice.bucket, { prefix: alice.prefix })).toBe(2);
      expect(await names(shared, bob.bucket)).toEqual(['bob/workspaces/ws-2/full.tar']);
    } finally {
      await shared.close();
    }
  });

  it('supports the per-owner layout: one bucket per owner', async () => {
    // The api's layout helper decides bucket names; an owner that cannot make a bucket name is refused there.
    expect(() => locateOwner(storage.layout, 'Alice_01')).toThrow(InvalidArgumentError);
    expect(locateOwner(storage.layout, 'User-42')).toEqual({ bucket: 'workbay-user-user-42', prefix: '' });
    const ok = locateOwner(storage.layout, 'User-42');
    await storage.ensureBucket(ok.bucket);
    await storage.upload(ok.bucket, backupObjectName(ok, 'ws-9'), Readable.from([Buffer.from('backup')]));
    expect(await names(storage, 'workbay-user-user-42')).toEqual(['workspaces/ws-9/full.tar']);
  });

  it('registers as the minio kind through the plugin host, validating config', async () => {
    const host = new PluginHost().use(plugin);
    expect(host.storageKinds()).toEqual(['minio']);
    const created = await host.createStorage('minio', {
      kind: 'minio',
      endpoint: server.endpoint,
      accessKey: server.accessKey,
      secretKey: server.secretKey,
    });
    try {
      expect(created).toBeInstanceOf(MinioStorage);
      expect(created.kind).toBe('minio');
      expect(await created.bucketExists(bucket)).toBe(true);
    } finally {
      await created.close?.();
    }
    const error = await errorOf(host.createStorage('minio', { endpoint: server.endpoint, accessKey: 'a' }));
    expect((error as InvalidArgumentError).field).toBe('storage.secretKey');
  });
});

describe('MinioStorage over TLS', () => {
  let server: MinioServer;
  beforeAll(async () => {
    server = await startMinio({ tls: true });
  });
  afterAll(async () => {
    await server?.stop();
  });

  it('trusts the CA from caFile', async () => {
    const storage = MinioStorage.fromConfig({
      endpoint: server.endpoint,
      accessKey: server.accessKey,
      secretKey: server.secretKey,
      caFile: server.caFile,
    });
    try {
      await storage.ensureBucket('workbay-tls');
      await storage.upload('workbay-tls', 'tls/obj', generateStream(11 * MiB).stream);
      expect((await storage.stat('workbay-tls', 'tls/obj'))?.size).toBe(11 * MiB);
      const url = await storage.presignedUrl('GET', 'workbay-tls', 'tls/obj');
      expect(url.startsWith(`${server.endpoint}/workbay-tls/tls/obj?`)).toBe(true);
    } finally {
      await storage.close();
    }
  });

  it('refuses an untrusted certificate as unavailable, naming the endpoint', async () => {
    const storage = MinioStorage.fromConfig({
      endpoint: server.endpoint,
      accessKey: server.accessKey,
      secretKey: server.secretKey,
    });
    try {
      const error = await errorOf(storage.bucketExists('workbay-tls'));
      expect(error).toBeInstanceOf(UnavailableError);
      expect(error.message).toContain(server.endpoint);
    } finally {
      await storage.close();
    }
  });
});
