import {
  AlreadyExistsError,
  DeadlineExceededError,
  FailedPreconditionError,
  InternalError,
  InvalidArgumentError,
  NotFoundError,
  ResourceExhaustedError,
  UnimplementedError,
} from '@workbay/api';
import type { CgroupLimits, CgroupUsage, NamespaceOps, WorkspaceCgroup } from '@workbay/nsinsider';
import { CgroupError, NsinsiderError, NsinsiderValidationError } from '@workbay/nsinsider';
import { describe, expect, it } from 'vitest';
import type { CgroupAccess, InWorkspaceServiceDeps } from './context.js';
import { toIwsError } from './error-mapping.js';
import { InWorkspaceOperations, kernelHasNfs } from './operations.js';
import { RateLimiter } from './rate-limit.js';

// Unit tests: a recording fake stands in for the namespace layer. The real one is exercised in
// iws.integration.spec.ts.
type Call = { method: string; req: unknown };

const INIT = 5000;

function fakeOps(overrides: Partial<NamespaceOps> = {}): { ops: NamespaceOps; calls: Call[] } {
  const calls: Call[] = [];
  const rec =
    <R>(method: string, result: R) =>
    async (req: unknown): Promise<R> => {
      calls.push({ method, req });
      return result;
    };
  const ops: NamespaceOps = {
    mountProc: rec('mountProc', undefined),
    mountSysfs: rec('mountSysfs', undefined),
    unmount: rec('unmount', undefined),
    makeShared: rec('makeShared', undefined),
    makeDeviceNode: rec('makeDeviceNode', { path: '/x', created: true }),
    prepareDev: rec('prepareDev', { created: [], existing: [] }),
    setupPairVeths: rec('setupPairVeths', {
      hostIfName: 'veth0',
      peerIfName: 'eth0',
      hostAddress: 'a',
      peerAddress: 'b',
      prefixLength: 30,
    }),
    setIpForwarding: rec('setIpForwarding', undefined),
    disableIpv6: rec('disableIpv6', undefined),
    setupConnectionLimit: rec('setupConnectionLimit', undefined),
    removeConnectionLimit: rec('removeConnectionLimit', true),
    connectionLimitStats: rec('connectionLimitStats', undefined),
    networkInfo: rec('networkInfo', { links: [], addresses: [], routes: [] }),
    async resolveHostPid(req) {
      calls.push({ method: 'resolveHostPid', req });
      // The workspace's pid namespace holds pids 1..100; pid n is host pid INIT + n - 1.
      if (req.nsPid > 100)
        throw new NsinsiderError('no such process', { op: 'resolve-host-pid', kind: 'not-found', code: 'ESRCH' });
      return INIT + req.nsPid - 1;
    },
    async namespaceId(req) {
      calls.push({ method: 'namespaceId', req });
      // The daemon's own namespaces are the host's; the workspace's pid 1 (INIT) is its sandbox init, root in the
      // host's user namespace.
      if (req.pid === process.pid) return `${req.kind}:[host]`;
      if (req.kind === 'user' && req.pid === INIT) return 'user:[host]';
      // Pid 2 of the workspace has its own network namespace; everything else shares the init's.
      return req.kind === 'net' && req.pid === INIT + 1 ? 'net:[2]' : `${req.kind}:[1]`;
    },
    writeIdMapping: rec('writeIdMapping', undefined),
    ...overrides,
  };
  return { ops, calls };
}

class FakeCgroup implements WorkspaceCgroup {
  evacuations: Array<{ name: string; options: unknown }> = [];
  children = new Map<string, FakeCgroup>();
  samples: CgroupUsage[] = [];
  limitsValue: CgroupLimits = { cpu: { quotaUs: 150_000, periodUs: 100_000 }, memoryBytes: 2 * 1024 ** 3, pids: null };
  constructor(readonly path: string) {}
  async usage(): Promise<CgroupUsage> {
    return this.samples.shift() ?? { cpuUsageNs: 0, memoryBytes: 0, memoryWorkingSetBytes: 0, pids: 0 };
  }
  async limits(): Promise<CgroupLimits> {
    return this.limitsValue;
  }
  async processes(): Promise<number[]> {
    return [];
  }
  async evacuateTo(name: string, options?: unknown): Promise<number> {
    this.evacuations.push({ name, options });
    return 1;
  }
  child(name: string): FakeCgroup {
    const c = this.children.get(name) ?? new FakeCgroup(`${this.path}/${name}`);
    this.children.set(name, c);
    return c;
  }
}

function fakeCgroups(): { access: CgroupAccess; root: FakeCgroup } {
  const root = new FakeCgroup('workbay/ws-1');
  return { root, access: { cgroup: (p: string) => (p === root.path ? root : new FakeCgroup(p)) } };
}

function make(deps: Partial<InWorkspaceServiceDeps> = {}): {
  svc: InWorkspaceOperations;
  calls: Call[];
  root: FakeCgroup;
} {
  const { ops, calls } = fakeOps();
  const { access, root } = fakeCgroups();
  const { config, ...rest } = deps;
  const svc = new InWorkspaceOperations({
    ops,
    cgroups: access,
    workspace: { workspaceId: 'ws-1', initPid: INIT, cgroupPath: 'workbay/ws-1' },
    nfsSupported: async () => false,
    ...rest,
    config: { cpuSampleMs: 1, namespaceOps: true, ...config },
  });
  return { svc, calls, root };
}

async function rejection(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (e) {
    return e;
  }
  throw new Error('expected a rejection');
}

async function expectInvalid(p: Promise<unknown>, field: string): Promise<void> {
  const e = await rejection(p);
  expect(e, String(e)).toBeInstanceOf(InvalidArgumentError);
  expect((e as InvalidArgumentError).field).toBe(field);
}

describe('InWorkspaceOperations (fake namespace layer)', () => {
  it('PrepareForUserNS prepares /dev in the workspace, moves it into the workspace cgroup, once', async () => {
    const { svc, calls, root } = make({ config: { devDir: '/tmp/dev', devOwner: { uid: 1, gid: 2 }, cpuSampleMs: 1 } });
    expect(await svc.prepareForUserNs({ usernsPid: 0 })).toEqual({ fsShift: 'shiftfs', persistentVolumeClaim: false });
    expect(calls.find((c) => c.method === 'prepareDev')?.req).toEqual({
      pid: INIT,
      devDir: '/tmp/dev',
      uid: 1,
      gid: 2,
    });
    expect(root.evacuations).toEqual([{ name: 'workspace', options: undefined }]);
    await expect(svc.prepareForUserNs({ usernsPid: 0 })).rejects.toBeInstanceOf(ResourceExhaustedError);
  });

  it('PrepareForUserNS checks the userns pid belongs to the workspace', async () => {
    const { svc } = make();
    await expectInvalid(svc.prepareForUserNs({ usernsPid: -1 }), 'userns_pid');
    await expect(svc.prepareForUserNs({ usernsPid: 4000 })).rejects.toBeInstanceOf(NotFoundError);
  });

  it('WriteIDMapping validates sizes, ranges and overlaps, naming the wire field', async () => {
    const { svc, calls } = make();
    const ok = [
      { containerId: 0, hostId: 33333, size: 1 },
      { containerId: 1, hostId: 100000, size: 65534 },
    ];
    await expectInvalid(svc.writeIdMapping({ pid: 0, gid: false, mappings: ok }), 'pid');
    await expectInvalid(svc.writeIdMapping({ pid: 2, gid: false, mappings: [] }), 'mapping');
    await expectInvalid(
      svc.writeIdMapping({ pid: 2, gid: false, mappings: [{ containerId: 0, hostId: 33333, size: 0 }] }),
      'mapping[0].size',
    );
    // Root may map to 33333 only as container id 0, one id.
    await expectInvalid(
      svc.writeIdMapping({ pid: 2, gid: false, mappings: [{ containerId: 5, hostId: 33333, size: 1 }] }),
      'mapping[0].host_id',
    );
    await expectInvalid(
      svc.writeIdMapping({ pid: 2, gid: false, mappings: [{ containerId: 0, hostId: 0, size: 1 }] }),
      'mapping[0].host_id',
    );
    // Runs past the end of the user range.
    await expectInvalid(
      svc.writeIdMapping({ pid: 2, gid: false, mappings: [{ containerId: 1, hostId: 160000, size: 20000 }] }),
      'mapping[0].host_id',
    );
    await expectInvalid(
      svc.writeIdMapping({
        pid: 2,
        gid: false,
        mappings: [
          { containerId: 0, hostId: 100000, size: 10 },
          { containerId: 5, hostId: 100020, size: 10 },
        ],
      }),
      'mapping[1].container_id',
    );
    expect(calls.filter((c) => c.method === 'writeIdMapping')).toEqual([]);

    await svc.writeIdMapping({ pid: 2, gid: true, mappings: ok });
    expect(calls.find((c) => c.method === 'writeIdMapping')?.req).toEqual({ pid: INIT + 1, kind: 'gid', mappings: ok });
    // A pid outside the workspace's pid namespace.
    await expect(svc.writeIdMapping({ pid: 4242, gid: false, mappings: ok })).rejects.toBeInstanceOf(NotFoundError);
  });

  it('WriteIDMapping is rate limited: burst 4, then one per 2.5 s', async () => {
    let now = 1_000_000;
    const { svc } = make({ now: () => now });
    const m = [{ containerId: 0, hostId: 33333, size: 1 }];
    for (let i = 0; i < 4; i++) await svc.writeIdMapping({ pid: 2, gid: false, mappings: m });
    await expect(svc.writeIdMapping({ pid: 2, gid: false, mappings: m })).rejects.toBeInstanceOf(
      ResourceExhaustedError,
    );
    now += 2500;
    await svc.writeIdMapping({ pid: 2, gid: false, mappings: m });
    await expect(svc.writeIdMapping({ pid: 2, gid: false, mappings: m })).rejects.toBeInstanceOf(
      ResourceExhaustedError,
    );
  });

  it('maps a second id-map write (EPERM) to FAILED_PRECONDITION', async () => {
    const { ops } = fakeOps({
      writeIdMapping: async () => {
        throw new NsinsiderError('already written', { op: 'write-id-mapping', kind: 'failed', code: 'EPERM' });
      },
    });
    const { svc } = make({ ops });
    await expect(
      svc.writeIdMapping({ pid: 1, gid: false, mappings: [{ containerId: 0, hostId: 33333, size: 1 }] }),
    ).rejects.toBeInstanceOf(FailedPreconditionError);
  });

  it('EvacuateCGroup moves the workspace into workspace/user, once, and needs a cgroup', async () => {
    const { svc, root } = make({ config: { cgroupDelegateTo: { uid: 33333, gid: 33333 }, cpuSampleMs: 1 } });
    await svc.evacuateCgroup();
    expect(root.evacuations).toEqual([{ name: 'workspace', options: undefined }]);
    expect(root.child('workspace').evacuations).toEqual([
      { name: 'user', options: { chownUid: 33333, chownGid: 33333 } },
    ]);
    await expect(svc.evacuateCgroup()).rejects.toBeInstanceOf(ResourceExhaustedError);

    const none = make({ workspace: { workspaceId: 'ws-2', initPid: INIT } }).svc;
    await expect(none.evacuateCgroup()).rejects.toThrow(/has no cgroup/);
  });

  it('MountProc/MountSysfs validate, translate the pid and track mounts for teardown', async () => {
    const { svc, calls } = make();
    await expectInvalid(svc.mountProc({ target: 'proc', pid: 1 }), 'target');
    await expectInvalid(svc.mountProc({ target: '/a/../proc', pid: 1 }), 'target');
    // Covering the workspace's root or system directories would break every later call in its namespaces.
    await expectInvalid(svc.mountProc({ target: '/', pid: 1 }), 'target');
    await expectInvalid(svc.mountSysfs({ target: '/usr/lib', pid: 1 }), 'target');
    await expectInvalid(svc.mountSysfs({ target: '/sys', pid: -3 }), 'pid');
    await svc.mountProc({ target: '/proc', pid: 1 });
    await svc.mountSysfs({ target: '/sys', pid: 2 });
    expect(calls.find((c) => c.method === 'mountProc')?.req).toEqual({
      pid: INIT,
      target: '/proc',
      createTarget: false,
    });
    // Through the sandbox init (pid 1), whichever workspace process the request named.
    expect(calls.find((c) => c.method === 'mountSysfs')?.req).toEqual({
      pid: INIT,
      target: '/sys',
      createTarget: false,
    });
    expect(svc.activeMounts.map((m) => m.target)).toEqual(['/proc', '/sys']);
    await expect(svc.mountProc({ target: '/proc', pid: 1 })).rejects.toBeInstanceOf(FailedPreconditionError);
    await svc.umountProc({ target: '/proc', pid: 1 });
    expect(svc.activeMounts.map((m) => m.target)).toEqual(['/sys']);
    expect(await svc.teardown()).toBe(true);
    expect(calls.filter((c) => c.method === 'unmount').map((c) => c.req)).toEqual([
      { pid: INIT, target: '/proc' },
      // Teardown acts through the workspace's process as it is now, never a pid recorded earlier (pid reuse).
      { pid: INIT, target: '/sys', lazy: true },
    ]);
    expect(svc.activeMounts).toEqual([]);
    await expect(svc.teardown()).rejects.toBeInstanceOf(ResourceExhaustedError);
  });

  it('WipingTeardown carries on past failures, reports them, and wipes when asked', async () => {
    let wiped = 0;
    const { ops } = fakeOps({
      unmount: async () => {
        throw new NsinsiderError('busy', { op: 'unmount', kind: 'failed', code: 'EBUSY' });
      },
    });
    const { svc } = make({ ops, wipeContent: async () => void wiped++ });
    await svc.mountProc({ target: '/proc', pid: 1 });
    expect(await svc.wipingTeardown({ doWipe: true })).toBe(false);
    expect(wiped).toBe(1);
    const clean = make({ wipeContent: async () => void wiped++ }).svc;
    expect(await clean.wipingTeardown({ doWipe: false })).toBe(true);
    expect(wiped).toBe(1);
  });

  it('MountNfs and UmountNfs answer honestly: unsupported kernel, or not implemented', async () => {
    const { svc } = make();
    await expectInvalid(svc.mountNfs({ source: 'nocolon', target: '/mnt', args: '', pid: 1 }), 'source');
    await expectInvalid(svc.mountNfs({ source: 'srv:/export', target: 'mnt', args: '', pid: 1 }), 'target');
    const e = await rejection(svc.mountNfs({ source: 'srv:/export', target: '/mnt', args: 'vers=4', pid: 1 }));
    expect(e).toBeInstanceOf(FailedPreconditionError);
    expect((e as Error).message).toMatch(/NFS is not supported on this kernel/);
    await expect(svc.umountNfs({ target: '/mnt', pid: 1 })).rejects.toBeInstanceOf(FailedPreconditionError);
    const withNfs = make({ nfsSupported: async () => true }).svc;
    await expect(withNfs.mountNfs({ source: 'srv:/export', target: '/mnt', args: '', pid: 1 })).rejects.toBeInstanceOf(
      UnimplementedError,
    );
  });

  it('SetupPairVeths needs a pid with its own network namespace', async () => {
    const { svc, calls } = make({ config: { vethCidr: '198.18.9.0/30', cpuSampleMs: 1 } });
    await expect(svc.setupPairVeths({ pid: 1 })).rejects.toThrow(/shares the workspace's network namespace/);
    await svc.setupPairVeths({ pid: 2 });
    expect(calls.find((c) => c.method === 'setupPairVeths')?.req).toEqual({
      outerPid: INIT,
      targetPid: INIT + 1,
      cidr: '198.18.9.0/30',
    });
    await expectInvalid(svc.setupPairVeths({ pid: 0 }), 'pid');
    await expect(svc.setupPairVeths({ pid: 500 })).rejects.toBeInstanceOf(NotFoundError);
  });

  it('maps an existing pair to ALREADY_EXISTS', async () => {
    const { ops } = fakeOps({
      setupPairVeths: async () => {
        throw new NsinsiderError('exists', { op: 'setup-pair-veths', kind: 'failed', code: 'EEXIST' });
      },
    });
    await expect(make({ ops }).svc.setupPairVeths({ pid: 2 })).rejects.toBeInstanceOf(AlreadyExistsError);
  });

  it('WorkspaceInfo computes millicores and bytes from the cgroup, machine totals when unlimited', async () => {
    const { svc, root } = make({ machine: { cpus: 4, memoryBytes: 8 * 1024 ** 3 } });
    root.samples = [
      { cpuUsageNs: 0, memoryBytes: 0, memoryWorkingSetBytes: 0, pids: 1 },
      { cpuUsageNs: 1e15, memoryBytes: 600, memoryWorkingSetBytes: 500, pids: 1 },
    ];
    const info = await svc.workspaceInfo();
    expect(info.cpu.limitMillicores).toBe(1500);
    expect(info.cpu.usedMillicores).toBeGreaterThan(0);
    expect(info.memory).toEqual({ usedBytes: 500, limitBytes: 2 * 1024 ** 3 });
    root.limitsValue = { cpu: null, memoryBytes: null, pids: null };
    const unlimited = await svc.workspaceInfo();
    expect(unlimited.cpu.limitMillicores).toBe(4000);
    expect(unlimited.memory.limitBytes).toBe(8 * 1024 ** 3);
  });

  it('acts through the sandbox init, never a process the workspace runs, and only in a sandbox', async () => {
    // Red-team round 2: a named process exec'd itself into a namespace of its own between the check and the tools.
    const { svc, calls } = make();
    await svc.mountProc({ target: '/p', pid: 7 });
    expect(calls.find((c) => c.method === 'mountProc')?.req).toMatchObject({ pid: INIT });
    // No pid namespace of its own (an unisolated workspace): nothing to act in.
    const base = fakeOps().ops;
    const unisolated = make({
      ops: { ...base, namespaceId: async (req) => (req.kind === 'pid' ? 'pid:[host]' : base.namespaceId(req)) },
    });
    expect(String(await rejection(unisolated.svc.mountProc({ target: '/p', pid: 7 })))).toMatch(
      /no sandbox of its own/,
    );
  });

  it('unmounts only what it mounted, of the same kind', async () => {
    // Red-team round 2: UmountProc of /tmp (or of the tmpfs hiding other workspaces) bared the host's.
    const { svc, calls } = make();
    for (const target of ['/tmp', '/proc']) {
      const refused = await rejection(svc.umountProc({ target, pid: 1 }));
      expect(refused).toBeInstanceOf(FailedPreconditionError);
    }
    await svc.mountSysfs({ target: '/sys', pid: 1 });
    expect(await rejection(svc.umountProc({ target: '/sys', pid: 1 }))).toBeInstanceOf(FailedPreconditionError);
    expect(calls.filter((c) => c.method === 'unmount')).toEqual([]);
    await svc.umountSysfs({ target: '/sys', pid: 1 });
    expect(calls.filter((c) => c.method === 'unmount')).toHaveLength(1);
  });

  it('serves no namespace operation unless the node turns them on', async () => {
    const { svc, calls, root } = make({ config: { namespaceOps: false } });
    for (const attempt of [
      // Round 11 T1: a workspace that moved itself into a child cgroup left v1's TCP and IO caps behind.
      svc.evacuateCgroup(),
      svc.mountProc({ target: '/proc', pid: 1 }),
      svc.umountSysfs({ target: '/sys', pid: 1 }),
      svc.prepareForUserNs({ usernsPid: 0 }),
      svc.writeIdMapping({ pid: 1, gid: false, mappings: [{ containerId: 0, hostId: 33333, size: 1 }] }),
      svc.setupPairVeths({ pid: 2 }),
    ]) {
      expect(String(await rejection(attempt))).toMatch(/namespace operations are turned off/);
    }
    expect(calls.filter((c) => c.method !== 'namespaceId')).toEqual([]);
    expect(root.evacuations).toEqual([]);
  });

  it('acts only on processes of the workspace user in its own mount namespace', async () => {
    // Pid 3 made a mount namespace of its own (an unprivileged user namespace may mount its own /usr/bin there).
    const base = fakeOps().ops;
    const ownMountNs = make({
      ops: {
        ...base,
        namespaceId: async (req) => (req.kind === 'mount' && req.pid === INIT + 2 ? 'mnt:[9]' : base.namespaceId(req)),
      },
    });
    const refused = await rejection(ownMountNs.svc.mountProc({ target: '/p', pid: 3 }));
    expect(refused).toBeInstanceOf(FailedPreconditionError);
    expect(String(refused)).toMatch(/mount namespace of its own/);
    expect(ownMountNs.calls.some((c) => c.method === 'mountProc')).toBe(false);
    // A process of another uid (here this test process, root, standing for a root helper in the pid namespace).
    // Host pid 1 (root) stands for a root helper sitting in the workspace's pid and mount namespaces.
    const rootHelper = make({
      ops: { ...base, resolveHostPid: async (req) => (req.nsPid === 1 ? INIT : 1) },
      workspace: { workspaceId: 'ws-1', initPid: INIT, uid: 4_000_000 },
    });
    expect(String(await rejection(rootHelper.svc.setupPairVeths({ pid: 5 })))).toMatch(/does not run as the workspace/);
  });

  it('needs a running workspace process', async () => {
    const { svc } = make({ workspace: { workspaceId: 'ws-3', initPid: () => undefined } });
    await expect(svc.mountProc({ target: '/proc', pid: 1 })).rejects.toThrow(/has no running process/);
  });
});

describe('toIwsError', () => {
  it('maps nsinsider failures to domain errors', () => {
    const err = (kind: ConstructorParameters<typeof NsinsiderError>[1]['kind'], code?: string) =>
      toIwsError(new NsinsiderError('x', { op: 'op', kind, code }), 'What');
    expect(err('not-found')).toBeInstanceOf(NotFoundError);
    expect(err('unsupported')).toBeInstanceOf(FailedPreconditionError);
    expect(err('timeout')).toBeInstanceOf(DeadlineExceededError);
    expect(err('failed', 'EEXIST')).toBeInstanceOf(AlreadyExistsError);
    expect(err('failed', 'ENOTMOUNTED')).toBeInstanceOf(FailedPreconditionError);
    expect(err('failed', 'EIO')).toBeInstanceOf(InternalError);
    const v = toIwsError(new NsinsiderValidationError('write-id-mapping', 'mappings[2].hostId', 'bad'), 'W');
    expect(v).toBeInstanceOf(InvalidArgumentError);
    expect((v as InvalidArgumentError).field).toBe('mapping[2].host_id');
    expect(toIwsError(new CgroupError('gone', { op: 'usage', path: 'a', code: 'ENOENT' }), 'W')).toBeInstanceOf(
      NotFoundError,
    );
    const same = new NotFoundError('x');
    expect(toIwsError(same, 'W')).toBe(same);
  });

  it("answers the workspace with the failure's kind and code, never the tools' output or the node's layout", () => {
    const stderr = 'nsenter: cannot open /proc/48213/ns/mnt: /var/lib/workbay/ws-7/secret';
    const failures = [
      new NsinsiderError(`mount-proc: nsenter --target 48213 --mount failed (exit 1): ${stderr}`, {
        op: 'mount-proc',
        kind: 'failed',
        code: 'EIO',
        stderr,
      }),
      new NsinsiderError(`mount-proc: ${stderr}`, { op: 'mount-proc', kind: 'protocol', stderr }),
      new NsinsiderError(`mount-proc: ${stderr}`, { op: 'mount-proc', kind: 'spawn', code: `E${'X'.repeat(400)}` }),
      new CgroupError('write /sys/fs/cgroup/memory/workbay/ws-7/memory.limit_in_bytes: EBUSY', {
        op: 'set-memory',
        path: 'workbay/ws-7',
        code: 'EBUSY',
      }),
      new Error(`ENOENT: no such file or directory, open '/proc/48213/status'`),
    ];
    for (const failure of failures) {
      const answer = toIwsError(failure, 'MountProc');
      expect(answer.message).toMatch(/^MountProc: /);
      expect(answer.message).not.toMatch(/48213|\/var\/lib|\/proc|\/sys|nsenter|secret|ws-7|XXXX/);
      expect(answer.message.length).toBeLessThan(100);
      // The operator's log still gets everything (the service logs the cause).
      expect(answer.cause).toBe(failure);
    }
  });
});

describe('RateLimiter', () => {
  it('allows once-only methods once and refills interval buckets', () => {
    let now = 0;
    const rl = new RateLimiter({ A: { burst: 1, intervalMs: Infinity }, B: { burst: 2, intervalMs: 100 } }, () => now);
    rl.take('A');
    expect(() => rl.take('A')).toThrow(/only once/);
    rl.take('B');
    rl.take('B');
    expect(() => rl.take('B')).toThrow(ResourceExhaustedError);
    now = 150;
    rl.take('B');
    rl.take('free');
    const off = new RateLimiter({ A: { burst: 1, intervalMs: Infinity } }, () => 0, false);
    off.take('A');
    off.take('A');
  });
});

describe('kernelHasNfs', () => {
  it('reads /proc/filesystems', async () => {
    const text = await import('node:fs/promises').then((fs) => fs.readFile('/proc/filesystems', 'utf8'));
    expect(await kernelHasNfs()).toBe(/\bnfs4?\n/.test(`${text}\n`));
    expect(await kernelHasNfs('/nonexistent')).toBe(false);
  });
});
