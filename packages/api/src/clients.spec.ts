/**
 * Round trips through real grpc-js servers on 127.0.0.1:0 (and a unix socket): the typed clients, the server
 * helpers and the error mapping working together.
 */
import { Server, ServerCredentials } from '@grpc/grpc-js';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { firstValueFrom, lastValueFrom, take, toArray } from 'rxjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createWorkspaceInfoClient, createWorkspaceManagerClient } from './clients.js';
import type { WorkspaceManagerClient } from './clients.js';
import {
  CancelledError,
  DeadlineExceededError,
  FailedPreconditionError,
  InternalError,
  InvalidArgumentError,
  NotFoundError,
  UnimplementedError,
  isWorkbayError,
} from './errors.js';
import { serverStreamHandler, unaryHandler } from './server.js';
import { WorkspaceInfoServiceService, WorkspaceManagerService, wsman } from './wire.js';
import type { WorkspaceInfoServiceServer, WorkspaceManagerServer } from './wire.js';

function bind(server: Server, address: string): Promise<number> {
  return new Promise((resolve, reject) =>
    server.bindAsync(address, ServerCredentials.createInsecure(), (error, port) =>
      error ? reject(error) : resolve(port),
    ),
  );
}

function shutdown(server: Server): Promise<void> {
  return new Promise((resolve) => server.tryShutdown(() => resolve()));
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener('abort', () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

const startedAt = new Date('2026-01-02T03:04:05.678Z');

function status(id: string, version: number, phase: wsman.WorkspacePhase): wsman.WorkspaceStatus {
  return wsman.WorkspaceStatus.fromPartial({
    id,
    statusVersion: version,
    phase,
    metadata: { owner: 'user-1', metaId: 'meta-1', startedAt, annotations: { team: 'a' } },
    conditions: { deployed: wsman.WorkspaceConditionBool.TRUE },
  });
}

describe('typed WorkspaceManager client against a grpc-js server', () => {
  const server = new Server();
  const internalErrors: unknown[] = [];
  const cancelledStreams: string[] = [];
  let client: WorkspaceManagerClient;
  let address: string;

  const allErrors: unknown[] = [];
  const onInternalError = (error: unknown): void => {
    internalErrors.push(error);
  };
  const onError = (error: unknown): void => {
    allErrors.push(error);
  };

  const impl: Partial<WorkspaceManagerServer> = {
    describeWorkspace: unaryHandler(
      async (request: wsman.DescribeWorkspaceRequest, call) => {
        if (request.id === '') throw new InvalidArgumentError('id', 'must not be empty');
        if (request.id === 'boom') throw new Error('ENOENT: /var/lib/workbay/internal/state.json');
        if (request.id === 'slow') {
          await sleep(5_000, abortOnCancel(call));
          return { lastActivity: '' };
        }
        if (request.id !== 'ws-1') throw new NotFoundError(`workspace ${request.id} does not exist`);
        const auth = call.metadata.get('authorization')[0];
        return { status: status('ws-1', 7, wsman.WorkspacePhase.RUNNING), lastActivity: String(auth ?? '') };
      },
      { onInternalError, onError },
    ),
    subscribe: serverStreamHandler<wsman.SubscribeRequest, wsman.SubscribeResponse>(
      async function* (request, { signal }): AsyncGenerator<wsman.SubscribeResponse> {
        const owner = request.mustMatch?.owner ?? '';
        if (owner === 'nobody') throw new FailedPreconditionError('no such owner');
        const from = request.resumeFromStatusVersion;
        const phases = [wsman.WorkspacePhase.PENDING, wsman.WorkspacePhase.CREATING, wsman.WorkspacePhase.RUNNING];
        for (const [i, phase] of phases.entries()) {
          yield { status: status('ws-1', from + i + 1, phase), header: { owner }, resyncRequired: from > 100 };
        }
        if (owner === 'fails-late') throw new NotFoundError('workspace vanished');
        if (owner === 'endless') {
          try {
            while (!signal.aborted) {
              await sleep(20, signal);
              yield { status: status('ws-1', 0, wsman.WorkspacePhase.RUNNING), header: {}, resyncRequired: false };
            }
          } finally {
            cancelledStreams.push(owner);
          }
        }
      },
      { onInternalError },
    ),
  };

  function abortOnCancel(call: { on(event: 'cancelled', listener: () => void): unknown }): AbortSignal {
    const controller = new AbortController();
    call.on('cancelled', () => controller.abort());
    return controller.signal;
  }

  beforeAll(async () => {
    server.addService(WorkspaceManagerService, impl as WorkspaceManagerServer);
    const port = await bind(server, '127.0.0.1:0');
    address = `127.0.0.1:${port}`;
    client = createWorkspaceManagerClient(address, { metadata: { authorization: 'Bearer t0ken' } });
    await client.waitForReady(Date.now() + 5_000);
  });

  afterAll(async () => {
    client.close();
    await shutdown(server);
  });

  it('makes a unary call and decodes the response', async () => {
    const response = await client.describeWorkspace({ id: 'ws-1' });
    expect(response.status?.id).toBe('ws-1');
    expect(response.status?.statusVersion).toBe(7);
    expect(response.status?.phase).toBe(wsman.WorkspacePhase.RUNNING);
    expect(response.status?.metadata?.startedAt).toEqual(startedAt);
    expect(response.status?.metadata?.annotations).toEqual({ team: 'a' });
    expect(response.status?.conditions?.deployed).toBe(wsman.WorkspaceConditionBool.TRUE);
    expect(response.lastActivity).toBe('Bearer t0ken');
  });

  it('rejects with NotFoundError for NOT_FOUND', async () => {
    const error = await client.describeWorkspace({ id: 'ws-404' }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(NotFoundError);
    expect(isWorkbayError(error, 'not-found')).toBe(true);
    expect((error as NotFoundError).message).toBe('workspace ws-404 does not exist');
    expect((error as NotFoundError).cause).toMatchObject({ code: 5 });
  });

  it('carries the field of an invalid argument', async () => {
    const error = await client.describeWorkspace({}).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(InvalidArgumentError);
    expect((error as InvalidArgumentError).field).toBe('id');
    expect((error as InvalidArgumentError).reason).toBe('must not be empty');
    // Domain errors reach onError (to log a cause their short message leaves out), not onInternalError.
    expect(allErrors).toContainEqual(expect.objectContaining({ field: 'id' }));
    expect(internalErrors).not.toContainEqual(expect.objectContaining({ field: 'id' }));
  });

  it('answers unknown server errors with INTERNAL and no details', async () => {
    const error = await client.describeWorkspace({ id: 'boom' }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(InternalError);
    expect((error as Error).message).toBe('internal error');
    expect((error as Error).message).not.toContain('/var/lib');
    expect(internalErrors.some((e) => e instanceof Error && e.message.includes('state.json'))).toBe(true);
  });

  it('maps an unimplemented method to UnimplementedError', async () => {
    await expect(client.describeCluster()).rejects.toBeInstanceOf(UnimplementedError);
  });

  it('fails a unary call that misses its deadline with DeadlineExceededError', async () => {
    const started = Date.now();
    await expect(client.describeWorkspace({ id: 'slow' }, { timeoutMs: 150 })).rejects.toBeInstanceOf(
      DeadlineExceededError,
    );
    expect(Date.now() - started).toBeLessThan(3_000);
    await expect(client.describeWorkspace({ id: 'slow' }, { deadline: Date.now() + 100 })).rejects.toBeInstanceOf(
      DeadlineExceededError,
    );
  });

  it('applies the client default timeout to unary calls', async () => {
    const quick = createWorkspaceManagerClient(address, { defaultTimeoutMs: 100 });
    try {
      await expect(quick.describeWorkspace({ id: 'slow' })).rejects.toBeInstanceOf(DeadlineExceededError);
    } finally {
      quick.close();
    }
  });

  it('cancels a unary call through an AbortSignal', async () => {
    const controller = new AbortController();
    const call = client.describeWorkspace({ id: 'slow' }, { signal: controller.signal });
    setTimeout(() => controller.abort(new Error('user gave up')), 50);
    const error = await call.catch((e: unknown) => e);
    expect(error).toBeInstanceOf(CancelledError);
    expect((error as CancelledError).cause).toMatchObject({ message: 'user gave up' });

    await expect(client.describeWorkspace({ id: 'ws-1' }, { signal: AbortSignal.abort() })).rejects.toBeInstanceOf(
      CancelledError,
    );
  });

  it('streams Subscribe as an async iterable', async () => {
    const received: wsman.SubscribeResponse[] = [];
    for await (const update of client.subscribe({ mustMatch: { owner: 'user-1' }, resumeFromStatusVersion: 10 })) {
      received.push(update);
    }
    expect(received.map((r) => r.status?.phase)).toEqual([
      wsman.WorkspacePhase.PENDING,
      wsman.WorkspacePhase.CREATING,
      wsman.WorkspacePhase.RUNNING,
    ]);
    expect(received.map((r) => r.status?.statusVersion)).toEqual([11, 12, 13]);
    expect(received[0]?.header).toEqual({ owner: 'user-1' });
    expect(received[0]?.resyncRequired).toBe(false);
    expect(received[0]?.status?.metadata?.startedAt).toEqual(startedAt);
  });

  it('streams Subscribe as an Observable (subscribe$)', async () => {
    const updates = await lastValueFrom(
      client.subscribe$({ mustMatch: { owner: 'user-1' }, resumeFromStatusVersion: 500 }).pipe(toArray()),
    );
    expect(updates).toHaveLength(3);
    expect(updates.every((u) => u.resyncRequired)).toBe(true);
    expect(updates.map((u) => u.status?.statusVersion)).toEqual([501, 502, 503]);
  });

  it('ends a stream with the mapped error after the messages sent before it', async () => {
    const received: number[] = [];
    const error = await (async () => {
      for await (const update of client.subscribe({ mustMatch: { owner: 'fails-late' } })) {
        received.push(update.status?.statusVersion ?? -1);
      }
    })().catch((e: unknown) => e);
    expect(received).toEqual([1, 2, 3]);
    expect(error).toBeInstanceOf(NotFoundError);

    await expect(lastValueFrom(client.subscribe$({ mustMatch: { owner: 'nobody' } }))).rejects.toBeInstanceOf(
      FailedPreconditionError,
    );
  });

  it('cancels the server side when the consumer stops early', async () => {
    let count = 0;
    for await (const _ of client.subscribe({ mustMatch: { owner: 'endless' } })) {
      if (++count === 5) break;
    }
    expect(count).toBe(5);
    const first = await firstValueFrom(client.subscribe$({ mustMatch: { owner: 'endless' } }).pipe(take(4), toArray()));
    expect(first).toHaveLength(4);
    await expect.poll(() => cancelledStreams.length, { timeout: 5_000 }).toBe(2);
  });

  it('fails a stream that misses its deadline with DeadlineExceededError', async () => {
    const stream = client.subscribe({ mustMatch: { owner: 'endless' } }, { timeoutMs: 200 });
    let count = 0;
    const error = await (async () => {
      for await (const _ of stream) count++;
    })().catch((e: unknown) => e);
    expect(error).toBeInstanceOf(DeadlineExceededError);
    expect(count).toBeGreaterThan(0);
  });

  it('cancels a stream through an AbortSignal or cancel()', async () => {
    const controller = new AbortController();
    let count = 0;
    const aborted = await (async () => {
      for await (const _ of client.subscribe({ mustMatch: { owner: 'endless' } }, { signal: controller.signal })) {
        if (++count === 2) controller.abort();
      }
    })().catch((e: unknown) => e);
    expect(aborted).toBeInstanceOf(CancelledError);

    const stream = client.subscribe({ mustMatch: { owner: 'endless' } });
    const cancelled = await (async () => {
      for await (const _ of stream) stream.cancel();
    })().catch((e: unknown) => e);
    expect(cancelled).toBeInstanceOf(CancelledError);
  });
});

describe('typed client over a unix socket', () => {
  const dir = mkdtempSync(join(tmpdir(), 'workbay-api-'));
  const socket = join(dir, 'info.sock');
  const server = new Server();

  beforeAll(async () => {
    const impl: WorkspaceInfoServiceServer = {
      workspaceInfo: unaryHandler(() => ({
        resources: { cpu: { used: 250, limit: 2000 }, memory: { used: 1, limit: 2 ** 40 } },
      })),
    };
    server.addService(WorkspaceInfoServiceService, impl);
    await bind(server, `unix://${socket}`);
  });

  afterAll(async () => {
    await shutdown(server);
    rmSync(dir, { recursive: true, force: true });
  });

  it('reaches the server and keeps int64 values exact up to 2^40', async () => {
    const client = createWorkspaceInfoClient(`unix://${socket}`, { defaultTimeoutMs: 5_000 });
    try {
      const info = await client.workspaceInfo();
      expect(info.resources?.cpu).toEqual({ used: 250, limit: 2000 });
      expect(info.resources?.memory?.limit).toBe(2 ** 40);
    } finally {
      client.close();
    }
  });
});
