import { createHash, generateKeyPairSync, verify } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import type { Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import {
  CancelledError,
  FailedPreconditionError,
  InvalidArgumentError,
  NotFoundError,
  PluginHost,
  UnavailableError,
  backupObjectName,
  locateOwner,
} from '@workbay/api';
import { Storage } from '@google-cloud/storage';
import type { FakeGcsServer } from '@workbay/testing';
import { digestStream, freePort, generateStream, readAll, sha256Of, startFakeGcs } from '@workbay/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GcsStorage } from './gcs-storage.js';
import { plugin } from './plugin.js';

const MiB = 1024 * 1024;

// A trap for the GCE metadata server: the auth library is pointed at this counting TCP listener, so any probe
// shows up as a hit. (METADATA_SERVER_DETECTION is deliberately not set in this file.)
let metadataHits = 0;
let metadataTrap: Server;
beforeAll(async () => {
  metadataTrap = createServer((socket) => {
    metadataHits++;
    socket.destroy();
  });
  await new Promise<void>((resolve) => metadataTrap.listen(0, '127.0.0.1', resolve));
  const { port } = metadataTrap.address() as { port: number };
  process.env['GCE_METADATA_HOST'] = `127.0.0.1:${port}`;
  process.env['GCE_METADATA_IP'] = `127.0.0.1:${port}`;
});
afterAll(() => {
  metadataTrap?.close();
});

async function errorOf(promise: Promise<unknown>): Promise<Error> {
  try {
    await promise;
  } catch (error) {
    return error as Error;
  }
  throw new Error('expected a rejection');
}

async function names(storage: GcsStorage, bucket: string, prefix?: string): Promise<string[]> {
  const out: string[] = [];
  for await (const info of storage.list(bucket, { prefix })) out.push(info.name);
  return out;
}

/** RFC 3986 encoding, as the V4 canonical query string wants it. */
function rfc3986(value: string): string {
  return encodeURIComponent(value).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
}

/**
 * Checks a GCS V4 signed URL (GOOG4-RSA-SHA256) the way the service does, from the spec: rebuild the
 * canonical request and the string to sign, then verify the RSA-SHA256 signature with the public key.
 */
function verifyV4(signed: string, method: string, publicKey: KeyObject, host?: string): boolean {
  const url = new URL(signed);
  const signature = url.searchParams.get('X-Goog-Signature') ?? '';
  const params = [...url.searchParams.entries()].filter(([k]) => k !== 'X-Goog-Signature');
  params.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  const canonicalQuery = params.map(([k, v]) => `${rfc3986(k)}=${rfc3986(v)}`).join('&');
  const signedHeaders = url.searchParams.get('X-Goog-SignedHeaders') ?? '';
  expect(signedHeaders).toBe('host');
  const canonicalRequest = [
    method,
    url.pathname,
    canonicalQuery,
    `host:${host ?? url.host}\n`,
    signedHeaders,
    'UNSIGNED-PAYLOAD',
  ].join('\n');
  const credential = url.searchParams.get('X-Goog-Credential') ?? '';
  const scope = credential.split('/').slice(1).join('/');
  const stringToSign = [
    'GOOG4-RSA-SHA256',
    url.searchParams.get('X-Goog-Date'),
    scope,
    createHash('sha256').update(canonicalRequest).digest('hex'),
  ].join('\n');
  return verify('sha256', Buffer.from(stringToSign), publicKey, Buffer.from(signature, 'hex'));
}

describe('GcsStorage against fake-gcs-server', () => {
  let server: FakeGcsServer;
  let storage: GcsStorage;
  let publicKey: KeyObject;
  let privateKeyPem: string;
  let scratch: string;
  const bucket = 'workbay-gcs-spec';
  const clientEmail = 'spec@workbay-test.iam.gserviceaccount.com';

  beforeAll(async () => {
    server = await startFakeGcs();
    scratch = mkdtempSync(join(tmpdir(), 'workbay-gcs-spec-'));
    const pair = generateKeyPairSync('rsa', { modulusLength: 2048 });
    publicKey = pair.publicKey;
    privateKeyPem = pair.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
    storage = GcsStorage.fromConfig({
      projectId: server.projectId,
      apiEndpoint: server.endpoint,
      credentials: { client_email: clientEmail, private_key: privateKeyPem },
    });
    await storage.ensureBucket(bucket);
  });

  afterAll(async () => {
    await storage?.close();
    await server?.stop();
    if (scratch) rmSync(scratch, { recursive: true, force: true });
  });

  describe('signed URLs', () => {
    it('signs V4 GET and PUT URLs for storage.googleapis.com that verify against the public key', async () => {
      // Signing is local (the key is configured): no request to GCS, the metadata server or the IAM API.
      const production = GcsStorage.fromConfig({
        projectId: 'workbay-test',
        credentials: { client_email: clientEmail, private_key: privateKeyPem },
      });
      for (const method of ['GET', 'PUT'] as const) {
        const before = Date.now();
        const signed = await production.presignedUrl(method, 'workbay-user-alice', 'workspaces/ws 1/full+1.tar', {
          expiresInSeconds: 900,
        });
        const url = new URL(signed);
        expect(url.origin).toBe('https://storage.googleapis.com');
        expect(decodeURIComponent(url.pathname)).toBe('/workbay-user-alice/workspaces/ws 1/full+1.tar');
        expect(url.searchParams.get('X-Goog-Algorithm')).toBe('GOOG4-RSA-SHA256');
        expect(url.searchParams.get('X-Goog-Expires')).toBe('900');
        const date = url.searchParams.get('X-Goog-Date')!;
        expect(date).toMatch(/^\d{8}T\d{6}Z$/);
        const signedAt = Date.parse(
          `${date.slice(0, 4)}-${date.slice(4, 6)}-${date.slice(6, 8)}T${date.slice(9, 11)}:${date.slice(11, 13)}:${date.slice(13, 15)}Z`,
        );
        expect(Math.abs(signedAt - before)).toBeLessThan(60_000);
        expect(url.searchParams.get('X-Goog-Credential')).toBe(
          `${clientEmail}/${date.slice(0, 8)}/auto/storage/goog4_request`,
        );
        expect(verifyV4(signed, method, publicKey)).toBe(true);
        // The verifier is not a rubber stamp: another method, object or key fails.
        expect(verifyV4(signed, method === 'GET' ? 'PUT' : 'GET', publicKey)).toBe(false);
        expect(verifyV4(signed.replace('full%2B1', 'full%2B2'), method, publicKey)).toBe(false);
        const other = generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey;
        expect(verifyV4(signed, method, other)).toBe(false);
      }
      expect(metadataHits).toBe(0);
    });

    it('signs URLs for a custom endpoint (the emulator), with the host signed without its port', async () => {
      const signed = await storage.presignedUrl('GET', bucket, 'signed/obj', { expiresInSeconds: 60 });
      const url = new URL(signed);
      expect(url.origin).toBe(server.endpoint);
      expect(url.pathname).toBe(`/${bucket}/signed/obj`);
      // @google-cloud/storage signs `host` as the endpoint's hostname; a service on a non-default port must
      // check it the same way.
      expect(verifyV4(signed, 'GET', publicKey, url.hostname)).toBe(true);
    });

    it('caps the lifetime at 7 days and uses the configured default', async () => {
      const long = new URL(await storage.presignedUrl('GET', bucket, 'x', { expiresInSeconds: 30 * 24 * 3600 }));
      expect(long.searchParams.get('X-Goog-Expires')).toBe(String(7 * 24 * 3600));
      const byDefault = new URL(await storage.presignedUrl('GET', bucket, 'x'));
      expect(byDefault.searchParams.get('X-Goog-Expires')).toBe('3600');
    });

    it('refuses to sign without a service-account key instead of asking the metadata server', async () => {
      const keyless = GcsStorage.fromConfig({ projectId: 'p', apiEndpoint: server.endpoint });
      const error = await errorOf(keyless.presignedUrl('GET', bucket, 'x'));
      expect(error).toBeInstanceOf(FailedPreconditionError);
      expect(error.message).toMatch(/service-account credentials/);
    });
  });

  it('uploads a large body in chunked resumable mode and reads it back', async () => {
    const chunked = GcsStorage.fromConfig({
      projectId: server.projectId,
      apiEndpoint: server.endpoint,
      resumableThreshold: 0,
      chunkSize: 4 * MiB,
    });
    const source = generateStream(18 * MiB + 5);
    const info = await chunked.upload(bucket, 'chunked/obj', source.stream, { metadata: { kind: 'backup' } });
    expect(info.size).toBe(18 * MiB + 5);
    const back = await digestStream(await chunked.download(bucket, 'chunked/obj'));
    expect(back).toEqual({ digest: await source.digest, size: 18 * MiB + 5 });
    expect((await chunked.stat(bucket, 'chunked/obj'))?.metadata).toMatchObject({ kind: 'backup' });
    // A digest mismatch in chunked mode fails before the last chunk is sent: the old object stays.
    const bad = await errorOf(
      chunked.upload(bucket, 'chunked/obj', generateStream(9 * MiB).stream, { digest: sha256Of('other') }),
    );
    expect((bad as InvalidArgumentError).field).toBe('digest');
    expect(await digestStream(await chunked.download(bucket, 'chunked/obj'))).toEqual(back);
  });

  it('a download aborted with an AbortSignal ends with CancelledError', async () => {
    await storage.upload(bucket, 'abort/obj', generateStream(12 * MiB).stream);
    const controller = new AbortController();
    const body = await storage.download(bucket, 'abort/obj', { signal: controller.signal });
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

  it('verifies an announced digest and size before committing, in both upload modes', async () => {
    await storage.upload(bucket, 'verify/obj', Readable.from([Buffer.from('good')]), { digest: sha256Of('good') });
    const small = await errorOf(
      storage.upload(bucket, 'verify/obj', Readable.from([Buffer.from('bad')]), { digest: sha256Of('other') }),
    );
    expect((small as InvalidArgumentError).field).toBe('digest');
    const large = await errorOf(
      storage.upload(bucket, 'verify/obj', generateStream(12 * MiB).stream, { digest: sha256Of('other') }),
    );
    expect(large).toBeInstanceOf(InvalidArgumentError);
    expect((large as InvalidArgumentError).field).toBe('digest');
    const size = await errorOf(storage.upload(bucket, 'verify/obj', generateStream(12 * MiB).stream, { size: 5 }));
    expect((size as InvalidArgumentError).field).toBe('size');
    expect((await readAll(await storage.download(bucket, 'verify/obj'))).toString()).toBe('good');
    expect((await storage.stat(bucket, 'verify/obj'))?.digest).toBe(sha256Of('good'));
  });

  it('stores digest and metadata as GCS custom metadata other clients can read', async () => {
    await storage.upload(bucket, 'meta/obj', Readable.from([Buffer.from('m')]), {
      digest: sha256Of('m'),
      contentType: 'application/x-tar',
      metadata: { Owner: 'alice' },
    });
    const raw = new Storage({ apiEndpoint: server.endpoint, projectId: server.projectId });
    const [metadata] = await raw.bucket(bucket).file('meta/obj').getMetadata();
    expect(metadata.contentType).toBe('application/x-tar');
    expect(metadata.metadata).toMatchObject({ 'workbay-digest': sha256Of('m'), owner: 'alice' });
  });

  it('an upload to a missing bucket is NotFoundError naming it, in both upload modes', async () => {
    for (const body of [Readable.from([Buffer.from('x')]), generateStream(12 * MiB).stream]) {
      const error = await errorOf(storage.upload('workbay-no-such-bucket', 'a', body));
      expect(error).toBeInstanceOf(NotFoundError);
      expect(error.message).toContain("bucket 'workbay-no-such-bucket'");
    }
  });

  it('an unreachable endpoint is UnavailableError naming it', async () => {
    const endpoint = `http://127.0.0.1:${await freePort()}`;
    const down = GcsStorage.fromConfig({ projectId: 'p', apiEndpoint: endpoint, maxRetries: 0 });
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
    }
  });

  it('reads the service-account key from keyFilename, never echoing it in errors', async () => {
    const keyFile = join(scratch, 'key.json');
    writeFileSync(
      keyFile,
      JSON.stringify({
        type: 'service_account',
        project_id: 'from-key',
        client_email: clientEmail,
        private_key: privateKeyPem,
      }),
    );
    const fromFile = GcsStorage.fromConfig({ apiEndpoint: server.endpoint, keyFilename: keyFile });
    expect(fromFile.config.projectId).toBe('from-key');
    expect(verifyV4(await fromFile.presignedUrl('GET', bucket, 'k'), 'GET', publicKey, '127.0.0.1')).toBe(true);

    writeFileSync(join(scratch, 'bad.json'), JSON.stringify({ private_key: privateKeyPem }));
    let message = '';
    try {
      GcsStorage.fromConfig({ projectId: 'p', keyFilename: join(scratch, 'bad.json') });
    } catch (error) {
      expect((error as InvalidArgumentError).field).toBe('storage.keyFilename');
      message = (error as Error).message;
    }
    expect(message).toMatch(/client_email/);
    expect(message).not.toContain('PRIVATE KEY');
  });

  it('supports the shared-bucket layout: owners separated by prefix', async () => {
    const shared = GcsStorage.fromConfig({
      projectId: server.projectId,
      apiEndpoint: server.endpoint,
      layout: { mode: 'shared', bucket: 'workbay-shared' },
    });
    const alice = locateOwner(shared.layout, 'alice');
    const bob = locateOwner(shared.layout, 'bob');
    await shared.ensureBucket(alice.bucket);
    await shared.upload(alice.bucket, backupObjectName(alice, 'ws-1'), Readable.from([Buffer.alloc(100)]));
    await shared.upload(bob.bucket, backupObjectName(bob, 'ws-2'), Readable.from([Buffer.alloc(7)]));
    expect(await names(shared, alice.bucket, alice.prefix)).toEqual(['alice/workspaces/ws-1/full.tar']);
    expect(await shared.diskUsage(bob.bucket, bob.prefix)).toBe(7);
    expect(await shared.delete(alice.bucket, { prefix: alice.prefix })).toBe(1);
    expect(await names(shared, alice.bucket)).toEqual(['bob/workspaces/ws-2/full.tar']);
  });

  it('registers as the gcs kind through the plugin host, validating config', async () => {
    const host = new PluginHost().use(plugin);
    expect(host.storageKinds()).toEqual(['gcs']);
    const created = await host.createStorage('gcs', { kind: 'gcs', projectId: 'p', apiEndpoint: server.endpoint });
    expect(created).toBeInstanceOf(GcsStorage);
    expect(await created.bucketExists(bucket)).toBe(true);
    const error = await errorOf(host.createStorage('gcs', { apiEndpoint: server.endpoint }));
    expect((error as InvalidArgumentError).field).toBe('storage.projectId');
  });

  it('never contacted the GCE metadata server', () => {
    expect(metadataHits).toBe(0);
  });
});

describe('the metadata-server trap', () => {
  it('does catch a client that falls back to Application Default Credentials', async () => {
    const before = metadataHits;
    // No endpoint, no credentials: the library has to look for a metadata server to sign.
    const adc = new Storage({ projectId: 'p' });
    await expect(
      adc
        .bucket('b')
        .file('x')
        .getSignedUrl({ version: 'v4', action: 'read', expires: Date.now() + 60_000 }),
    ).rejects.toThrow();
    expect(metadataHits).toBeGreaterThan(before);
  });
});
