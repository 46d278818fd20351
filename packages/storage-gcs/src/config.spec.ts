import { InvalidArgumentError } from '@workbay/api';
import { describe, expect, it } from 'vitest';
import { parseGcsConfig } from './config.js';

function fieldOf(fn: () => unknown): { field: string; message: string } {
  try {
    fn();
  } catch (error) {
    expect(error).toBeInstanceOf(InvalidArgumentError);
    return { field: (error as InvalidArgumentError).field, message: (error as Error).message };
  }
  throw new Error('expected an InvalidArgumentError');
}

describe('parseGcsConfig', () => {
  it('applies defaults', () => {
    expect(parseGcsConfig({ projectId: 'p' })).toMatchObject({
      projectId: 'p',
      apiEndpoint: undefined,
      useAuthWithCustomEndpoint: false,
      resumableThreshold: 8 * 1024 * 1024,
      chunkSize: undefined,
      validation: true,
      maxRetries: 3,
      presignExpirySeconds: 3600,
      layout: { mode: 'per-owner' },
    });
  });

  it('takes the project id from inline credentials and trims the endpoint', () => {
    const c = parseGcsConfig({
      apiEndpoint: 'http://127.0.0.1:4443/',
      credentials: { client_email: 'a@b', private_key: 'k', project_id: 'from-key', type: 'service_account' },
    });
    expect(c.projectId).toBe('from-key');
    expect(c.apiEndpoint).toBe('http://127.0.0.1:4443');
    expect(c.credentials?.['type']).toBe('service_account');
  });

  it('names the bad key', () => {
    expect(fieldOf(() => parseGcsConfig({ projectId: 'p', bukcet: 'x' })).field).toBe('storage.bukcet');
    expect(fieldOf(() => parseGcsConfig({})).field).toBe('storage.projectId');
    expect(fieldOf(() => parseGcsConfig({ projectId: 'p', apiEndpoint: 'ftp://x' })).field).toBe('storage.apiEndpoint');
    expect(fieldOf(() => parseGcsConfig({ projectId: 'p', chunkSize: 1000 })).field).toBe('storage.chunkSize');
    expect(fieldOf(() => parseGcsConfig({ projectId: 'p', chunkSize: 300 * 1024 })).message).toMatch(/256 KiB/);
    expect(fieldOf(() => parseGcsConfig({ projectId: 'p', keyFilename: '/nonexistent.json' })).field).toBe(
      'storage.keyFilename',
    );
    expect(fieldOf(() => parseGcsConfig({ kind: 'minio', gcs: { projectId: 'p' } })).field).toBe('storage.kind');
    expect(fieldOf(() => parseGcsConfig({ gcs: { projectId: 'p', location: 3 } })).field).toBe('storage.gcs.location');
  });

  it('never echoes a private key from bad inline credentials', () => {
    const secret = '-----BEGIN PRIVATE KEY-----\nsecret-material';
    const { field, message } = fieldOf(() =>
      parseGcsConfig({ projectId: 'p', credentials: { private_key: secret, client_email: 5 } }),
    );
    expect(field).toBe('storage.credentials.client_email');
    expect(message).not.toContain('secret-material');
  });

  it('refuses both keyFilename and credentials', () => {
    expect(
      fieldOf(() =>
        parseGcsConfig({
          projectId: 'p',
          keyFilename: '/k.json',
          credentials: { client_email: 'a', private_key: 'b' },
        }),
      ).field,
    ).toBe('storage.keyFilename');
  });
});
