import type { ChildProcess } from 'node:child_process';
import { spawn } from 'node:child_process';
import { access, mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  createInWorkspaceClient,
  createWorkspaceInfoClient,
  FailedPreconditionError,
  fsShiftMethod,
  InvalidArgumentError,
  NotFoundError,
  ResourceExhaustedError,
  UnimplementedError,
} from '@workbay/api';
import type { InWorkspaceClient } from '@workbay/api';
import type { Cgroup } from '@workbay/nsinsider';
import { CgroupController, createNsinsiderOps } from '@workbay/nsinsider';
import type { NamespaceSandbox } from '@workbay/nsinsider/testing';
import { startNamespaceSandbox } from '@workbay/nsinsider/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { InWorkspaceOperations, kernelHasNfs } from './operations.js';
import type { IwsServerHandle } from './server.js';
import { listenIws } from './server.js';
import { createInWorkspaceService, createWorkspaceInfoService } from './service.js';

// Real everything: an unshare'd workspace, the nsinsider CLI under nsenter, cgroupfs, and gRPC over
// loopback TCP and a unix socket. Runs as root.

async function rejection(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (e) {
    return e;
  }
  throw new Error('expected a rejection');
}

/** Starts a process inside the sandbox (optionally in further new namespaces) and returns its pid there. */
async function startInside(
  sb: NamespaceSandbox,
  unshareFlags: string[],
): Promise<{ nsPid: number; proc: ChildProcess }> {
  const proc = spawn(
    'nsenter',
    [
      '--target',
      String(sb.pid),
      '--pid',
      '--mount',
      '--net',
      '--',
      'unshare',
      ...unshareFlags,
      '--',
      'sh',
      '-c',
      'echo $$; exec sleep 60',
    ],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  const nsPid = Number(
    await new Promise<string>((resolve) => proc.stdout!.once('data', (b: Buffer) => resolve(b.toString().trim()))),
  );
  return { nsPid, proc };
}

describe('InWorkspaceService over gRPC with real namespaces', () => {
  let sb: NamespaceSandbox;
  let cg: Cgroup;
  let scratch: string;
  let devDir: string;
  let tcp: IwsServerHandle;
  let unix: IwsServerHandle;
  let client: InWorkspaceClient;
  let unixClient: InWorkspaceClient;
  let wiped = 0;
  const extra: ChildProcess[] = [];

  beforeAll(async () => {
    sb = await startNamespaceSandbox();
    scratch = await mkdtemp(join(tmpdir(), 'iws-int-'));
    devDir = join(scratch, 'dev');
    // The workspace's /dev is a tmpfs of its own, so nothing lands in the host's /dev.
    await sb.check(['mkdir', '-p', devDir]);
    await sb.check(['mount', '-t', 'tmpfs', 'tmpfs', devDir]);

    const cgroups = await CgroupController.detect();
    cg = cgroups.cgroup(`workbay-iws-test-${process.pid}`);
    await cg.create();
    await cg.setCpuLimit({ quotaUs: 50_000, periodUs: 100_000 });
    await cg.setMemoryLimit(512 * 1024 * 1024);
    await cg.addProcess(sb.pid);

    const operations = new InWorkspaceOperations({
      ops: createNsinsiderOps(),
      cgroups,
      workspace: { workspaceId: 'ws-int', initPid: () => sb.pid, cgroupPath: cg.path },
      config: { devDir, vethCidr: '198.18.5.0/30', cpuSampleMs: 50, namespaceOps: true },
      wipeContent: async () => void wiped++,
    });
    const service = createInWorkspaceService(operations);
    tcp = await listenIws(service, { address: '127.0.0.1:0', workspaceInfo: createWorkspaceInfoService(operations) });
    unix = await listenIws(service, { socketPath: join(scratch, 'ws-int-daemon', 'daemon.sock') });
    client = createInWorkspaceClient(tcp.target);
    unixClient = createInWorkspaceClient(unix.target);
  });

  afterAll(async () => {
    client?.close();
    unixClient?.close();
    await tcp?.close();
    await unix?.close();
    for (const p of extra) p.kill('SIGKILL');
    await sb?.stop();
    if (cg) {
      await cg.kill().catch(() => undefined);
      await cg.remove();
    }
    if (scratch) await rm(scratch, { recursive: true, force: true });
  });

  it('serves on 127.0.0.1:0 and on a unix socket', async () => {
    expect(tcp.target).toMatch(/^127\.0\.0\.1:\d+$/);
    expect(tcp.port).toBeGreaterThan(0);
    expect(unix.target).toBe(`unix:${join(scratch, 'ws-int-daemon', 'daemon.sock')}`);
    const info = await unixClient.workspaceInfo({}, { timeoutMs: 10_000 });
    expect(info.resources?.cpu?.limit).toBe(500);
  });

  it('PrepareForUserNS populates the workspace /dev and moves it into the workspace cgroup, once', async () => {
    const res = await client.prepareForUserNs({ usernsPid: 0 }, { timeoutMs: 20_000 });
    expect(fsShiftMethod.fromProto(res.fsShift)).toBe('shiftfs');
    expect(res.persistentVolumeClaim).toBe(false);
    expect((await sb.check(['stat', '-c', '%F %t:%T %a %u', join(devDir, 'fuse')])).trim()).toBe(
      'character special file a:e5 666 33333',
    );
    expect(await cg.processes()).toEqual([]);
    expect(await cg.child('workspace').processes()).toEqual([sb.pid]);
    expect(await rejection(client.prepareForUserNs({ usernsPid: 0 }))).toBeInstanceOf(ResourceExhaustedError);
  });

  it('MountProc shows the workspace pids; UmountProc removes it', async () => {
    await client.mountProc({ target: '/proc', pid: 1 }, { timeoutMs: 20_000 });
    const pids = (await sb.check(['ls', '/proc'])).split('\n').filter((l) => /^\d+$/.test(l));
    expect(pids).toContain('1');
    expect(pids).not.toContain(String(process.pid));
    await client.umountProc({ target: '/proc', pid: 1 }, { timeoutMs: 20_000 });
    expect((await sb.check(['ls', '/proc'])).split('\n')).toContain(String(process.pid));
  });

  it('MountSysfs shows the workspace network; UmountSysfs removes it', async () => {
    const target = join(scratch, 'sys');
    // A mount point the workspace names must exist: root never runs `mkdir -p` along the workspace's links.
    await expect(client.mountSysfs({ target, pid: 1 }, { timeoutMs: 20_000 })).rejects.toThrow(/does not exist/);
    await expect(access(target)).rejects.toThrow();
    await mkdir(target);
    await client.mountSysfs({ target, pid: 1 }, { timeoutMs: 20_000 });
    expect((await sb.check(['ls', join(target, 'class', 'net')])).trim()).toBe('lo');
    await client.umountSysfs({ target, pid: 1 }, { timeoutMs: 20_000 });
    expect((await sb.check(['ls', target])).trim()).toBe('');
  });

  it('WriteIDMapping writes the map of a process in the workspace', async () => {
    const { nsPid, proc } = await startInside(sb, ['--user']);
    extra.push(proc);
    await client.writeIdMapping(
      {
        pid: nsPid,
        gid: false,
        mapping: [
          { containerId: 0, hostId: 33333, size: 1 },
          { containerId: 1, hostId: 100000, size: 65534 },
        ],
      },
      { timeoutMs: 10_000 },
    );
    const hostPid = Number(
      (await readFile(`/proc/${proc.pid}/task/${proc.pid}/children`, 'utf8').catch(() => '')).trim().split(/\s+/)[0] ||
        0,
    );
    // nsenter forks into the pid namespace; the unshare'd shell is its child.
    const status = await readFile(`/proc/${hostPid}/status`, 'utf8');
    expect(status).toMatch(new RegExp(`NSpid:\\s+${hostPid}\\s+${nsPid}\\n`));
    const map = (await readFile(`/proc/${hostPid}/uid_map`, 'utf8'))
      .trim()
      .split('\n')
      .map((l) => l.trim().split(/\s+/).join(' '));
    expect(map).toEqual(['0 33333 1', '1 100000 65534']);

    const bad = await rejection(
      client.writeIdMapping({ pid: nsPid, gid: true, mapping: [{ containerId: 0, hostId: 0, size: 1 }] }),
    );
    expect(bad).toBeInstanceOf(InvalidArgumentError);
    expect((bad as InvalidArgumentError).field).toBe('mapping[0].host_id');
    // The test process is not in the workspace: its pid means nothing there.
    const foreign = await rejection(
      client.writeIdMapping({ pid: 999_999, gid: false, mapping: [{ containerId: 0, hostId: 33333, size: 1 }] }),
    );
    expect(foreign).toBeInstanceOf(NotFoundError);
  });

  it('SetupPairVeths connects a nested network namespace to the workspace', async () => {
    const { nsPid, proc } = await startInside(sb, ['--net']);
    extra.push(proc);
    await client.setupPairVeths({ pid: nsPid }, { timeoutMs: 20_000 });
    const outer = await sb.check(['ip', '-o', '-4', 'addr', 'show', 'veth0'], ['net']);
    expect(outer).toContain('198.18.5.1/30');
    const innerHostPid = Number(
      (await readFile(`/proc/${proc.pid}/task/${proc.pid}/children`, 'utf8')).trim().split(/\s+/)[0],
    );
    const inner = await new Promise<string>((resolve, reject) => {
      const p = spawn('nsenter', ['--target', String(innerHostPid), '--net', '--', 'ip', '-o', '-4', 'route'], {
        stdio: ['ignore', 'pipe', 'inherit'],
      });
      let out = '';
      p.stdout.on('data', (b: Buffer) => (out += b.toString()));
      p.on('exit', (c) => (c === 0 ? resolve(out) : reject(new Error(`ip route exited ${c}`))));
    });
    expect(inner).toMatch(/default via 198\.18\.5\.1 dev eth0/);
    // The workspace's init shares its own network namespace: no pair for it.
    expect(await rejection(client.setupPairVeths({ pid: 1 }))).toBeInstanceOf(FailedPreconditionError);
  });

  it('WorkspaceInfo reports cgroup usage against the limits', async () => {
    const info = await client.workspaceInfo({}, { timeoutMs: 10_000 });
    expect(info.resources?.cpu).toEqual({ used: expect.any(Number), limit: 500 });
    expect(info.resources?.memory?.limit).toBe(512 * 1024 * 1024);
    expect(info.resources?.memory?.used).toBeGreaterThanOrEqual(0);
    const infoOnly = createWorkspaceInfoClient(tcp.target);
    try {
      const r = await infoOnly.workspaceInfo({}, { timeoutMs: 10_000 });
      expect(r.resources?.memory?.limit).toBe(512 * 1024 * 1024);
    } finally {
      infoOnly.close();
    }
  });

  it('EvacuateCGroup moves the workspace into workspace/user', async () => {
    await client.evacuateCGroup({}, { timeoutMs: 10_000 });
    expect(await cg.child('workspace').processes()).toEqual([]);
    expect(await cg.child('workspace').child('user').processes()).toContain(sb.pid);
  });

  it('MountNfs says plainly whether this kernel can do NFS', async () => {
    const e = await rejection(client.mountNfs({ source: 'server:/export', target: '/mnt', args: 'vers=4', pid: 1 }));
    if (await kernelHasNfs()) {
      expect(e).toBeInstanceOf(UnimplementedError);
    } else {
      expect(e).toBeInstanceOf(FailedPreconditionError);
      expect((e as Error).message).toMatch(/NFS is not supported on this kernel/);
    }
  });

  it('answers bad input with INVALID_ARGUMENT naming the field', async () => {
    const cases: Array<[Promise<unknown>, string]> = [
      [client.mountProc({ target: 'relative', pid: 1 }), 'target'],
      [client.mountSysfs({ target: '/sys', pid: 0 }), 'pid'],
      [client.writeIdMapping({ pid: 1, gid: false, mapping: [] }), 'mapping'],
      [client.mountNfs({ source: 'no-export', target: '/mnt', args: '', pid: 1 }), 'source'],
      [client.setupPairVeths({ pid: -2 }), 'pid'],
    ];
    for (const [p, field] of cases) {
      const e = await rejection(p);
      expect(e, String(e)).toBeInstanceOf(InvalidArgumentError);
      expect((e as InvalidArgumentError).field).toBe(field);
    }
  });

  it('Teardown unmounts what is left; WipingTeardown wipes', async () => {
    const target = join(scratch, 'sys2');
    await mkdir(target);
    await client.mountSysfs({ target, pid: 1 });
    expect((await sb.check(['ls', target])).trim()).not.toBe('');
    expect((await client.teardown({}, { timeoutMs: 20_000 })).success).toBe(true);
    expect((await sb.check(['ls', target])).trim()).toBe('');
    expect(await rejection(client.teardown({}))).toBeInstanceOf(ResourceExhaustedError);
    expect((await client.wipingTeardown({ doWipe: true }, { timeoutMs: 20_000 })).success).toBe(true);
    expect(wiped).toBe(1);
  });
});
