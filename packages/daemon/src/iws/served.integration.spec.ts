import { chown, lstat, mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { InWorkspaceServiceService, WorkspaceInfoServiceService } from '@workbay/api';
import type { Cgroup } from '@workbay/nsinsider';
import { CgroupController } from '@workbay/nsinsider';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TestDaemon } from '../test-support/daemon-harness.js';
import { startTestDaemon } from '../test-support/daemon-harness.js';
import type { AsUser, ProbeCall, ProbeResult, WorkspaceProcess } from '../test-support/iws-probe.js';
import { probeCalls, probeConnect, shellAs, startWorkspaceProcess, writeProbe } from '../test-support/iws-probe.js';

// The real daemon serving the in-workspace service per workspace, attacked from real processes: workspace
// processes in their own pid and mount namespaces with their socket directory bind-mounted (as the local runtime
// does at /.workbay), running as the workspace's host uid, and strangers running as other uids. Runs as root.

const STRANGER = 45_999;
const status = { OK: 0, INVALID_ARGUMENT: 3, NOT_FOUND: 5, RESOURCE_EXHAUSTED: 8, FAILED_PRECONDITION: 9 } as const;

const info: ProbeCall = {
  path: WorkspaceInfoServiceService.workspaceInfo.path,
  request: WorkspaceInfoServiceService.workspaceInfo.requestSerialize({}),
};
const iwsInfo: ProbeCall = {
  path: InWorkspaceServiceService.workspaceInfo.path,
  request: InWorkspaceServiceService.workspaceInfo.requestSerialize({}),
};
const teardown: ProbeCall = {
  path: InWorkspaceServiceService.teardown.path,
  request: InWorkspaceServiceService.teardown.requestSerialize({}),
};
const mountProc = (target: string, pid: number): ProbeCall => ({
  path: InWorkspaceServiceService.mountProc.path,
  request: InWorkspaceServiceService.mountProc.requestSerialize({ target, pid }),
});
const umountProc = (target: string, pid: number): ProbeCall => ({
  path: InWorkspaceServiceService.umountProc.path,
  request: InWorkspaceServiceService.umountProc.requestSerialize({ target, pid }),
});

const codeOf = (r: ProbeResult | undefined): number => (r === undefined ? -1 : 'hex' in r ? status.OK : r.code);
const memoryLimit = (r: ProbeResult | undefined): number | undefined =>
  r && 'hex' in r
    ? WorkspaceInfoServiceService.workspaceInfo.responseDeserialize(Buffer.from(r.hex, 'hex')).resources?.memory?.limit
    : undefined;

interface Ws {
  readonly id: string;
  readonly uid: number;
  readonly gid: number;
  readonly dir: string;
  readonly socket: string;
  /** Where the workspace process sees its socket directory. */
  readonly mount: string;
  proc?: WorkspaceProcess;
  cgroup?: Cgroup;
  /** The workspace's uid inside its own mount namespace: what code in the workspace is. */
  readonly inside: () => AsUser;
}

describe('the daemon serves the in-workspace service on one socket per workspace', () => {
  let t: TestDaemon;
  let scratch: string;
  let probe: string;
  let cgroups: CgroupController;
  let parent: Cgroup;
  let clock = 0;
  const overrides = { iws: { config: { cpuSampleMs: 10, namespaceOps: true }, now: () => clock } };
  const all: Ws[] = [];

  async function initWorkspace(id: string, uid: number): Promise<Ws> {
    // The content directory's owner is the workspace's host identity. Until the daemon allocates one itself the
    // test hands it out; a daemon that allocates overrides it, and the test follows whatever owner it finds.
    const content = join(t.workingArea, id);
    await mkdir(content, { recursive: true });
    await chown(content, uid, uid);
    await t.client.initWorkspace({
      id,
      metadata: { owner: 'alice', metaId: `meta-${id}` },
      initializer: { spec: { $case: 'empty', value: {} } },
    });
    const owner = await stat(content);
    const dir = join(t.workingArea, '.iws', id);
    const mount = join(scratch, `mnt-${id}`);
    await mkdir(mount);
    const ws: Ws = {
      id,
      uid: owner.uid,
      gid: owner.gid,
      dir,
      socket: join(dir, 'daemon.sock'),
      mount,
      inside: () => ({ uid: ws.uid, gid: ws.gid, mountNsOf: ws.proc!.pid }),
    };
    all.push(ws);
    return ws;
  }

  /** Starts the workspace's process (after InitWorkspace, as the runtime does) in a cgroup named by its id. */
  async function run(ws: Ws, options: { isolated?: boolean } = {}): Promise<void> {
    ws.proc = await startWorkspaceProcess({
      uid: ws.uid,
      gid: ws.gid,
      iwsDir: ws.dir,
      mountPoint: ws.mount,
      ...(options.isolated === false ? { isolated: false } : {}),
    });
    ws.cgroup = parent.child(ws.id);
    await ws.cgroup.create();
    await ws.cgroup.setMemoryLimit(256 * 1024 * 1024);
    await ws.cgroup.addProcess(ws.proc.pid);
  }

  let a: Ws;
  let b: Ws;

  beforeAll(async () => {
    scratch = await mkdtemp(join(tmpdir(), 'iws-served-'));
    probe = await writeProbe(scratch);
    cgroups = await CgroupController.detect();
    parent = cgroups.cgroup(`workbay-iws-served-${process.pid}`);
    await parent.create();
    t = await startTestDaemon({ overrides });
    a = await initWorkspace('ws-a', 41_001);
    b = await initWorkspace('ws-b', 41_002);
    await run(a);
    await run(b);
  });

  afterAll(async () => {
    for (const ws of all) ws.proc?.kill();
    for (const ws of all) {
      await ws.cgroup?.kill().catch(() => undefined);
      await ws.cgroup?.remove().catch(() => undefined);
    }
    await parent?.remove().catch(() => undefined);
    await t?.cleanup();
    if (scratch) await rm(scratch, { recursive: true, force: true });
  });

  it('InitWorkspace leaves a socket outside the content: directory 0700, socket 0600, both the workspace uid', async () => {
    expect(a.uid).not.toBe(0);
    expect(a.uid).not.toBe(b.uid);
    for (const ws of [a, b]) {
      const dir = await lstat(ws.dir);
      expect(dir.isDirectory()).toBe(true);
      expect([dir.mode & 0o7777, dir.uid, dir.gid]).toEqual([0o700, ws.uid, ws.gid]);
      const socket = await lstat(ws.socket);
      expect(socket.isSocket()).toBe(true);
      expect([socket.mode & 0o7777, socket.uid, socket.gid]).toEqual([0o600, ws.uid, ws.gid]);
    }
    // The folder of all sockets is root's alone: a socket is reached only through its workspace's mount.
    const root = await lstat(join(t.workingArea, '.iws'));
    expect([root.mode & 0o7777, root.uid]).toEqual([0o700, 0]);
  });

  it("the workspace's uid calls WorkspaceInfoService and the in-workspace service through its mount", async () => {
    const [viaInfo, viaIws, mounted, unmounted] = await probeCalls(probe, a.inside(), join(a.mount, 'daemon.sock'), [
      info,
      iwsInfo,
      mountProc('/proc', 1),
      umountProc('/proc', 1),
    ]);
    expect(memoryLimit(viaInfo), JSON.stringify(viaInfo)).toBe(256 * 1024 * 1024);
    expect(memoryLimit(viaIws)).toBe(256 * 1024 * 1024);
    // pid 1 is the workspace's own init: resolved in its pid namespace, mounted in its mount namespace.
    expect([codeOf(mounted), codeOf(unmounted)]).toEqual([status.OK, status.OK]);
  });

  it("a socket reaches only its own workspace: another workspace's pids do not resolve", async () => {
    const [foreign] = await probeCalls(probe, a.inside(), join(a.mount, 'daemon.sock'), [
      mountProc('/proc', b.proc!.pid),
    ]);
    expect(codeOf(foreign)).toBe(status.NOT_FOUND);
    expect((foreign as { details: string }).details).toMatch(/not a process of workspace meta-ws-a/);
  });

  it('no other uid can connect: not through the mount, not by the host path, not to the bare socket', async () => {
    // A stranger inside A's mount namespace (a process A's code could not even create).
    expect(
      await probeConnect(probe, { uid: STRANGER, gid: STRANGER, mountNsOf: a.proc!.pid }, join(a.mount, 'daemon.sock')),
    ).toEqual({ connected: false, error: 'EACCES' });
    // Workspace B's code aiming at A's socket by its host path, and a stranger doing the same.
    for (const user of [b.inside(), { uid: STRANGER, gid: STRANGER }]) {
      expect(await probeConnect(probe, user, a.socket)).toEqual({ connected: false, error: 'EACCES' });
    }
    // B's socket directory mounted where A's should be: the directory (0700, B's) keeps A out.
    const wrongMount = { uid: a.uid, gid: a.gid, bind: { source: b.dir, target: join(scratch, 'mnt-ws-a') } };
    expect(await probeConnect(probe, wrongMount, join(scratch, 'mnt-ws-a', 'daemon.sock'))).toEqual({
      connected: false,
      error: 'EACCES',
    });
    // The socket alone, bind-mounted onto a file anyone can reach: its 0600 mode still refuses the stranger.
    const bare = join(scratch, 'bare-socket');
    await writeFile(bare, '');
    const stranger = { uid: STRANGER, gid: STRANGER, bind: { source: a.socket, target: bare } };
    expect(await probeConnect(probe, stranger, bare)).toEqual({ connected: false, error: 'EACCES' });
    expect(await probeConnect(probe, { ...stranger, uid: a.uid, gid: a.gid }, bare)).toEqual({ connected: true });
  });

  it("applies the original's rate limits, per workspace", async () => {
    clock += 1e9; // a full bucket
    const burst = await probeCalls(probe, a.inside(), join(a.mount, 'daemon.sock'), [
      info,
      iwsInfo,
      info,
      iwsInfo,
      info,
      teardown,
      teardown,
    ]);
    expect(burst.map(codeOf)).toEqual([
      status.OK,
      status.OK,
      status.OK,
      status.OK,
      status.RESOURCE_EXHAUSTED,
      status.OK,
      status.RESOURCE_EXHAUSTED,
    ]);
    // B's buckets are its own.
    const [other] = await probeCalls(probe, b.inside(), join(b.mount, 'daemon.sock'), [info]);
    expect(codeOf(other)).toBe(status.OK);
  });

  it('bounds its input: an oversized request or target is refused with a short message, and the socket still serves', async () => {
    const [huge, long, fine] = await probeCalls(probe, a.inside(), join(a.mount, 'daemon.sock'), [
      mountProc(`/${'x'.repeat(100_000)}`, 1),
      mountProc(`/${'x'.repeat(5000)}`, 1),
      umountProc('/never-mounted', 1),
    ]);
    expect(codeOf(huge)).toBe(status.RESOURCE_EXHAUSTED);
    expect(codeOf(long)).toBe(status.INVALID_ARGUMENT);
    expect((long as { details: string }).details.length).toBeLessThan(200);
    expect(codeOf(fine)).not.toBe(-1);
  });

  it('WipingTeardown with do_wipe does not claim a wipe the daemon cannot do', async () => {
    const wipe = InWorkspaceServiceService.wipingTeardown;
    const [r] = await probeCalls(probe, b.inside(), join(b.mount, 'daemon.sock'), [
      { path: wipe.path, request: wipe.requestSerialize({ doWipe: true }) },
    ]);
    expect(r && 'hex' in r ? wipe.responseDeserialize(Buffer.from(r.hex, 'hex')).success : r).toBe(false);
  });

  it('a workspace process in the host mount namespace gets no mounts made on the host', async () => {
    const c = await initWorkspace('ws-c', 41_003);
    await run(c, { isolated: false });
    const target = join(scratch, 'c-proc');
    await mkdir(target);
    const user = { uid: c.uid, gid: c.gid, bind: { source: c.dir, target: c.mount } };
    const [refused] = await probeCalls(probe, user, join(c.mount, 'daemon.sock'), [mountProc(target, c.proc!.pid)]);
    expect(codeOf(refused)).toBe(status.FAILED_PRECONDITION);
    expect((refused as { details: string }).details).toMatch(/not isolated/);
    expect(await readFile('/proc/self/mountinfo', 'utf8')).not.toContain(target);
  });

  it('housekeeping never takes .iws for an orphaned workspace', async () => {
    const { removed } = await t.daemon.service.housekeeping(Date.now() + 1e12);
    expect(removed).not.toContain('.iws');
    expect((await lstat(a.socket)).isSocket()).toBe(true);
  });

  it('a restart serves live workspaces again in the directory they have mounted, never following planted links', async () => {
    const inode = (await stat(a.dir)).ino;
    await t.stop();
    await expect(lstat(a.socket)).rejects.toMatchObject({ code: 'ENOENT' });
    // While the daemon is down, A's code plants a link where the socket goes.
    const victim = join(scratch, 'victim');
    await writeFile(victim, 'keep', { mode: 0o644 });
    expect((await shellAs(a.inside(), `ln -s ${victim} ${join(a.mount, 'daemon.sock')}`)).code).toBe(0);

    t = await startTestDaemon({ root: t.root, overrides });
    expect((await stat(a.dir)).ino).toBe(inode);
    const socket = await lstat(a.socket);
    expect([socket.isSocket(), socket.mode & 0o7777, socket.uid]).toEqual([true, 0o600, a.uid]);
    const v = await lstat(victim);
    expect([v.isFile(), v.mode & 0o7777, v.uid, await readFile(victim, 'utf8')]).toEqual([true, 0o644, 0, 'keep']);
    // The running workspace's existing mount shows the new socket.
    clock += 1e9;
    const [again] = await probeCalls(probe, a.inside(), join(a.mount, 'daemon.sock'), [info]);
    expect(memoryLimit(again)).toBe(256 * 1024 * 1024);
    expect((await lstat(b.socket)).isSocket()).toBe(true);
  });

  it('DisposeWorkspace removes the socket with its directory, and nothing a workspace linked to', async () => {
    const kept = join(scratch, 'kept');
    await mkdir(kept);
    await writeFile(join(kept, 'file'), 'keep');
    expect((await shellAs(b.inside(), `ln -s ${kept} ${join(b.mount, 'escape')}`)).code).toBe(0);
    for (const ws of [a, b]) {
      await t.client.disposeWorkspace({ id: ws.id, backup: false });
      await expect(lstat(ws.dir)).rejects.toMatchObject({ code: 'ENOENT' });
    }
    expect(await readFile(join(kept, 'file'), 'utf8')).toBe('keep');
    expect(await probeConnect(probe, a.inside(), join(a.mount, 'daemon.sock'))).toMatchObject({ connected: false });
    expect(t.daemon.iws?.served).toEqual(['ws-c']);
  });
});
