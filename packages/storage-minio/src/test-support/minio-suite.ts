// Shared by the MinioStorage specs that run against a real MinIO server: its setup, and the helpers they all use.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { MinioServer } from '@workbay/testing';
import { startMinio } from '@workbay/testing';
import { Client } from 'minio';
import { afterAll, beforeAll } from 'vitest';
import { MinioStorage } from '../minio-storage.js';

export const MiB = 1024 * 1024;

export const bucket = 'workbay-minio-spec';

// Set by the beforeAll of useMinioServer(); the specs import them as live bindings and read them in their tests.
export let server: MinioServer;
export let storage: MinioStorage;
export let admin: Client;
export let scratch: string;

/**
 * A set-up step retried while MinIO answers 503: under the load of a whole CI run it answered the first request after
 * `/minio/health/ready` with 503 beyond the client's one retry (CI, session 28). Only the set-up: what the specs ask of
 * MinIO is never retried here.
 */
async function withSetUpRetries(step: () => Promise<void>): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await step();
    } catch (error) {
      if (attempt >= 6 || !/\b503\b/.test(String(error))) throw error;
      await new Promise((resolve) => setTimeout(resolve, 500 * attempt));
    }
  }
}

/**
 * Hooks for the calling describe block: before its tests, starts MinIO with `bucket` in it, `storage` (5 MiB parts)
 * and `admin` (a plain S3 client) on it, and a `scratch` directory; after them, removes it all.
 */
export function useMinioServer(): void {
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
    await withSetUpRetries(() => storage.ensureBucket(bucket));
  });

  afterAll(async () => {
    await storage?.close();
    await server?.stop();
    if (scratch) rmSync(scratch, { recursive: true, force: true });
  });
}

export async function errorOf(promise: Promise<unknown>): Promise<Error> {
  try {
    await promise;
  } catch (error) {
    return error as Error;
  }
  throw new Error('expected a rejection');
}

export async function names(storage: MinioStorage, bucket: string, prefix?: string): Promise<string[]> {
  const out: string[] = [];
  for await (const info of storage.list(bucket, { prefix })) out.push(info.name);
  return out;
}

/** Multipart uploads that were started and never completed or aborted. */
export async function incompleteUploads(client: Client, bucket: string): Promise<string[]> {
  const out: string[] = [];
  for await (const item of client.listIncompleteUploads(bucket, '', true)) out.push(item.key);
  return out;
}
