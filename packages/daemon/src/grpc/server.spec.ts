import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { InvalidArgumentError, createWorkspaceContentClient, silentLogger } from '@workbay/api';
import type { StartedGrpcServer, WorkspaceContentClient } from '@workbay/api';
import type { WorkspaceContentService } from '../content-service.js';
import { createContentServiceImplementation, startContentServer } from './server.js';

// What a hostile workspace or repository can make the layers below put into an error: credentials from a URL,
// megabytes of stderr, a lone UTF-16 surrogate, a field path built from a non-ASCII key of unbounded length.
const hostile = {
  waitForInit: (): never => {
    throw new Error(`git clone https://alice:s3cret-pass@git.example/repo failed: ${'x'.repeat(200_000)}\ud800`);
  },
  takeSnapshot: (): never => {
    throw new InvalidArgumentError(`annotations.ключ${'k'.repeat(5_000)}`, `bad value '${'v'.repeat(10_000)}'`);
  },
} as unknown as WorkspaceContentService;

describe('daemon gRPC edge: every error leaves bounded, redacted and encodable', () => {
  let server: StartedGrpcServer;
  let client: WorkspaceContentClient;
  beforeAll(async () => {
    server = await startContentServer(
      '127.0.0.1:0',
      createContentServiceImplementation(hostile, silentLogger),
      undefined,
    );
    client = createWorkspaceContentClient(server.address, { defaultTimeoutMs: 10_000 });
  });
  afterAll(async () => {
    client?.close();
    await server?.stop(1_000);
  });

  it('cuts a huge message with credentials and a lone surrogate, and the call still answers', async () => {
    const error = (await client.waitForInit({ id: 'ws-1' }).catch((e: unknown) => e)) as Error;
    expect(error).toBeInstanceOf(Error);
    expect(error.message).not.toContain('s3cret-pass');
    expect(error.message.length).toBeLessThanOrEqual(1_100);
    // The server keeps serving after it.
    expect(await client.isWorkspaceExists({ id: 'ws-1' }).catch(() => 'answered')).toBeDefined();
  });

  it('sends a field path as short printable ASCII and an invalid argument message under 256 characters', async () => {
    const error = (await client
      .takeSnapshot({ id: 'ws-1', returnImmediately: false })
      .catch((e: unknown) => e)) as InvalidArgumentError;
    expect(error).toBeInstanceOf(InvalidArgumentError);
    expect(error.field.length).toBeLessThanOrEqual(256);
    expect(error.field).toMatch(/^[\x20-\x7e]*$/);
    // What travelled as the status details (the client prefixes the field again when it rebuilds the error).
    expect(error.reason.length).toBeLessThanOrEqual(256);
  });
});
