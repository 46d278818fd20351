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

  it("refuses a rate-limited WorkspaceInfo synchronously, with the limit's answer, and counts refusals as offences", async () => {
    let sampled = 0;
    const cgroups = {
      cgroup: () => ({
        usage: async () => ((sampled += 1), { cpuUsageNs: 0, memoryWorkingSetBytes: 1 }),
        limits: async () => ({ memoryBytes: 1 }),
      }),
    } as never;
    const operations = new InWorkspaceOperations({
      ops: {} as NamespaceOps,
      cgroups,
      workspace: { workspaceId: 'ws-1', initPid: 1, cgroupPath: 'ws' },
      config: { cpuSampleMs: 0, penaltyThreshold: 3, penaltyCooldownMs: 60_000, penaltyMaxCooldownMs: 60_000 },
    });
    const suspended: string[] = [];
    const detach = operations.flood.attach({
      suspend: async () => void suspended.push('suspend'),
      resume: async () => undefined,
    });
    const info = createWorkspaceInfoService(operations);
    // The burst of four is served.
    for (let i = 0; i < 4; i++) expect(await call(info.workspaceInfo as never, {})).toHaveProperty('ok');
    const before = sampled;
    let answered: Outcome | undefined;
    info.workspaceInfo(
      { request: {}, getPath: () => '/iws.WorkspaceInfoService/WorkspaceInfo' } as never,
      (err) => (answered = { code: err?.code, details: err?.details }),
    );
    // Answered before the handler returned: no promise, no cgroup read.
    expect(answered).toEqual({
      code: status.RESOURCE_EXHAUSTED,
      details: 'WorkspaceInfo is rate limited (4 at once, then one per 1500 ms)',
    });
    expect(sampled).toBe(before);
    expect(operations.flood.suspended).toBe(false);
    for (let i = 0; i < 3; i++) await call(info.workspaceInfo as never, {});
    expect(operations.flood.suspended).toBe(true);
    await detach();
    expect(suspended).toEqual(['suspend']);
  });
});
