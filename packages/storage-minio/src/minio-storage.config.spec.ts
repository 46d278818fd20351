// Configuring MinioStorage against real MinIO: credential files, bucket layouts, the plugin host, and TLS.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import {
  InvalidArgumentError,
  PluginHost,
  UnavailableError,
  backupObjectName,
  locateOwner,
  snapshotObjectName,
} from '@workbay/api';
import type { MinioServer } from '@workbay/testing';
import { generateStream, readAll, startMinio } from '@workbay/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MinioStorage } from './minio-storage.js';
import { plugin } from './plugin.js';
import { MiB, bucket, errorOf, names, scratch, server, storage, useMinioServer } from './test-support/minio-suite.js';

describe('MinioStorage against real MinIO', () => {
  useMinioServer();

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
    // The api's layout helper decides bucket names: a plain owner's is its name; any other owner's (upper case, `_`)
    // a digest, which MinIO takes as a bucket name too; an owner that is no owner id is refused.
    expect(() => locateOwner(storage.layout, '../x')).toThrow(InvalidArgumentError);
    expect(locateOwner(storage.layout, 'user-42')).toEqual({ bucket: 'workbay-user-user-42', prefix: '' });
    for (const owner of ['user-42', 'User-42', 'Alice_01']) {
      const location = locateOwner(storage.layout, owner);
      await storage.ensureBucket(location.bucket);
      await storage.upload(location.bucket, backupObjectName(location, 'ws-9'), Readable.from([Buffer.from(owner)]));
    }
    const buckets = ['user-42', 'User-42', 'Alice_01'].map((owner) => locateOwner(storage.layout, owner).bucket);
    expect(new Set(buckets).size).toBe(3);
    for (const bucket of buckets) expect(await names(storage, bucket)).toEqual(['workspaces/ws-9/full.tar']);
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
