import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { InvalidArgumentError } from '@workbay/api';
import { afterAll, describe, expect, it } from 'vitest';
import { parseMinioConfig } from './config.js';

const base = { endpoint: 'http://127.0.0.1:9000', accessKey: 'ak', secretKey: 'sk' };

function fieldOf(fn: () => unknown): string {
  try {
    fn();
  } catch (error) {
    expect(error).toBeInstanceOf(InvalidArgumentError);
    return (error as InvalidArgumentError).field;
  }
  throw new Error('expected an InvalidArgumentError');
}

describe('parseMinioConfig', () => {
  const dir = mkdtempSync(join(tmpdir(), 'workbay-minio-config-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('applies defaults', () => {
    const c = parseMinioConfig(base);
    expect(c).toMatchObject({
      host: '127.0.0.1',
      port: 9000,
      useSSL: false,
      region: 'us-east-1',
      pathStyle: true,
      partSize: 16 * 1024 * 1024,
      parallelParts: 4,
      presignExpirySeconds: 1800,
      signPayload: false,
      layout: { mode: 'per-owner' },
    });
  });

  it('accepts URL, host:port and bare host endpoints', () => {
    expect(parseMinioConfig({ ...base, endpoint: 'https://minio.example.com' })).toMatchObject({
      host: 'minio.example.com',
      port: undefined,
      useSSL: true,
    });
    expect(parseMinioConfig({ ...base, endpoint: 'minio:9000' })).toMatchObject({
      host: 'minio',
      port: 9000,
      useSSL: false,
    });
    expect(parseMinioConfig({ ...base, endpoint: 'minio:9000', useSSL: true })).toMatchObject({ useSSL: true });
    expect(parseMinioConfig({ ...base, endpoint: 'minio', tls: true })).toMatchObject({ host: 'minio', useSSL: true });
    expect(parseMinioConfig({ ...base, endpoint: 'http://[::1]:9000' })).toMatchObject({ host: '::1', port: 9000 });
  });

  it('names the bad key', () => {
    expect(fieldOf(() => parseMinioConfig({ ...base, endpiont: 'x' }))).toBe('storage.endpiont');
    expect(fieldOf(() => parseMinioConfig({ accessKey: 'a', secretKey: 'b' }))).toBe('storage.endpoint');
    expect(fieldOf(() => parseMinioConfig({ ...base, endpoint: 'ftp://x' }))).toBe('storage.endpoint');
    expect(fieldOf(() => parseMinioConfig({ ...base, endpoint: 'http://u:p@x:9000' }))).toBe('storage.endpoint');
    expect(fieldOf(() => parseMinioConfig({ ...base, endpoint: 'http://x/path' }))).toBe('storage.endpoint');
    expect(fieldOf(() => parseMinioConfig({ ...base, endpoint: 'https://x', useSSL: false }))).toBe('storage.useSSL');
    expect(fieldOf(() => parseMinioConfig({ ...base, partSize: 1024 }))).toBe('storage.partSize');
    expect(fieldOf(() => parseMinioConfig({ ...base, parallelParts: 0 }))).toBe('storage.parallelParts');
    expect(fieldOf(() => parseMinioConfig({ ...base, layout: { mode: 'shared' } }))).toBe('storage.layout.bucket');
    expect(fieldOf(() => parseMinioConfig({ ...base, kind: 'gcs' }))).toBe('storage.kind');
    expect(fieldOf(() => parseMinioConfig({ endpoint: 'x:1', accessKey: 'a' }))).toBe('storage.secretKey');
    expect(fieldOf(() => parseMinioConfig({ ...base, caFile: '/x.pem' }))).toBe('storage.caFile');
    expect(fieldOf(() => parseMinioConfig('nope'))).toBe('storage');
  });

  it('reads the nested form and names keys under storage.minio', () => {
    const c = parseMinioConfig({ kind: 'minio', minio: { ...base, region: 'eu-1' } });
    expect(c.region).toBe('eu-1');
    expect(fieldOf(() => parseMinioConfig({ kind: 'minio', minio: { ...base, region: 5 } }))).toBe(
      'storage.minio.region',
    );
    expect(fieldOf(() => parseMinioConfig({ kind: 'minio', minio: base, extra: 1 }))).toBe('storage.extra');
  });

  it('reads credentials from files, without the trailing newline', () => {
    writeFileSync(join(dir, 'ak'), 'file-access\n');
    writeFileSync(join(dir, 'sk'), 'file-secret\n');
    const c = parseMinioConfig({
      endpoint: 'x:1',
      accessKeyFile: join(dir, 'ak'),
      secretKeyFile: join(dir, 'sk'),
    });
    expect(c.accessKey).toBe('file-access');
    expect(c.secretKey).toBe('file-secret');
  });

  it('refuses unreadable, empty or doubled credential sources, naming the key and never the secret', () => {
    writeFileSync(join(dir, 'empty'), '\n');
    expect(fieldOf(() => parseMinioConfig({ ...base, secretKey: undefined, secretKeyFile: join(dir, 'nope') }))).toBe(
      'storage.secretKeyFile',
    );
    expect(fieldOf(() => parseMinioConfig({ ...base, secretKey: undefined, secretKeyFile: join(dir, 'empty') }))).toBe(
      'storage.secretKeyFile',
    );
    let message = '';
    try {
      parseMinioConfig({ ...base, secretKey: 'top-secret', secretKeyFile: join(dir, 'sk') });
    } catch (error) {
      message = (error as Error).message;
      expect((error as InvalidArgumentError).field).toBe('storage.secretKeyFile');
    }
    expect(message).not.toContain('top-secret');
  });
});
