import type { sendUnaryData, ServerUnaryCall } from '@grpc/grpc-js';
import { status } from '@grpc/grpc-js';
import type { NamespaceOps } from '@workbay/nsinsider';
import { describe, expect, it } from 'vitest';
import { InWorkspaceOperations } from './operations.js';
import { createInWorkspaceService, createWorkspaceInfoService } from './service.js';

// The gRPC edge without a network: handlers called as grpc-js calls them.

function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => (resolve = r));
  return { promise, resolve };
}

type Outcome = { code: number | undefined; details?: string } | { ok: unknown };

function call(
  handler: (call: ServerUnaryCall<unknown, unknown>, callback: sendUnaryData<unknown>) => void,
  request: unknown,
): Promise<Outcome> {
  return new Promise((resolve) =>
    handler(
      { request, getPath: () => '/iws.InWorkspaceService/Test' } as ServerUnaryCall<unknown, unknown>,
      (err, res) => resolve(err ? { code: err.code, details: err.details } : { ok: res }),
    ),
  );
}

describe('in-workspace service edge', () => {
  it("refuses calls beyond the workspace's in-flight limit before doing any work, and frees the slots", async () => {
    const release = deferred();
    let resolved = 0;
    const ops = {
      async resolveHostPid() {
        resolved += 1;
        await release.promise;
        return 4242;
      },
      // The daemon is in the host's pid namespace, the workspace in one of its own.
      namespaceId: async (req: { pid: number; kind: string }) =>
        req.pid === process.pid && req.kind === 'pid' ? 'pid:[host]' : 'mnt:[1]',
      mountProc: async () => undefined,
    } as unknown as NamespaceOps;
    const operations = new InWorkspaceOperations({
      ops,
      workspace: { workspaceId: 'ws-1', initPid: 4242 },
      config: { maxInFlight: 2, namespaceOps: true },
    });
    const iws = createInWorkspaceService(operations);
    const info = createWorkspaceInfoService(operations);
    const running = [
      call(iws.mountProc as never, { target: '/proc', pid: 1 }),
      call(iws.mountProc as never, { target: '/p2', pid: 1 }),
    ];
    while (resolved < 2) await new Promise((r) => setImmediate(r));
    // Both slots are taken: a third call of either service is refused at once, without touching the node.
    expect(await call(iws.mountProc as never, { target: '/p3', pid: 1 })).toMatchObject({
      code: status.RESOURCE_EXHAUSTED,
      details: expect.stringMatching(/2 in-workspace calls running/),
    });
    expect(await call(info.workspaceInfo as never, {})).toMatchObject({ code: status.RESOURCE_EXHAUSTED });
    expect(resolved).toBe(2);
    release.resolve();
    expect(await Promise.all(running)).toEqual([{ ok: {} }, { ok: {} }]);
    // Failed calls free their slot too.
    expect(await call(iws.mountProc as never, { target: 'relative', pid: 1 })).toMatchObject({
      code: status.INVALID_ARGUMENT,
    });
    expect(await call(iws.mountProc as never, { target: '/p4', pid: 1 })).toEqual({ ok: {} });
  });
});
