import { spawn } from 'node:child_process';
import type { ChildProcessWithoutNullStreams } from 'node:child_process';
import { chmod, chown, lstat, mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { InWorkspaceServiceService, WorkspaceInfoServiceService } from '@workbay/api';
import type { Cgroup } from '@workbay/nsinsider';
import { CgroupController } from '@workbay/nsinsider';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TestDaemon } from '../test-support/daemon-harness.js';
import { startTestDaemon } from '../test-support/daemon-harness.js';
import type { AsUser, ProbeCall, ProbeResult, WorkspaceProcess } from '../test-support/iws-probe.js';
import {
  asUser,
  probeCalls,
  probeConnect,
  shellAs,
  startWorkspaceProcess,
  writeProbe,
} from '../test-support/iws-probe.js';

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

/** The connection cap of these workspaces' sockets (the default is 64). */
const MAX_CONNECTIONS = 16;

// Workspace code that turns its `daemon.sock` into a tree, holds it as its cwd, and swaps each sub-directory with a
// link to a host directory (renameat2 RENAME_EXCHANGE) for as long as it runs: the red team's race against a
// path-based recursive removal by root.
const SWAPPER = `import ctypes, os, sys, time
libc = ctypes.CDLL(None, use_errno=True)
SYS_renameat2 = {'x86_64': 316, 'aarch64': 276}[os.uname().machine]
base, victim, n, secs = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
os.mkdir(base)
os.chdir(base)
for i in range(n):
    os.mkdir(f"x{i}")
    for j in range(20): open(f"x{i}/f{j}", "w").close()
    os.mkdir(f"x{i}/d")
    open(f"x{i}/d/g", "w").close()
    os.symlink(victim, f"l{i}")
print("ready", flush=True)
end = time.time() + secs
while time.time() < end:
    for i in range(n):
        libc.syscall(SYS_renameat2, -100, f"x{i}".encode(), -100, f"l{i}".encode(), 2)
print("done", flush=True)
`;

// Workspace code that makes a call, then opens many plain connections to its socket and reports how many the
// daemon closed; on a line on stdin, it calls again on the connection it already had.
const flooder = (grpcPath: string): string => `'use strict';
const grpc = require(${JSON.stringify(grpcPath)});
const net = require('node:net');
const [, , socket, n, path, hex] = process.argv;
const client = new grpc.Client('unix:' + socket, grpc.credentials.createInsecure());
const call = () => new Promise((resolve) => client.makeUnaryRequest(path, (b) => b, (b) => b, Buffer.from(hex, 'hex'),
  { deadline: Date.now() + 30000 }, (err) => resolve(err ? err.code : 0)));
(async () => {
  const first = await call();
  let closed = 0;
  await Promise.all(Array.from({ length: Number(n) }, () => new Promise((resolve) => {
    const s = net.connect(socket);
    s.resume();
    s.on('connect', resolve);
    s.on('error', () => resolve());
    s.on('close', () => { closed++; resolve(); });
  })));
  await new Promise((r) => setTimeout(r, 1000));
  console.log(JSON.stringify({ phase: 'flooded', first, closed }));
  process.stdin.once('data', async () => {
    const second = await call();
    console.log(JSON.stringify({ phase: 'done', second, closed }));
    process.exit(0);
  });
})();
`;

/** Resolves with the first line of the child's stdout that satisfies `match`. */
function lineOf(child: ChildProcessWithoutNullStreams, match: (line: string) => boolean, ms = 30_000): Promise<string> {
  return new Promise((resolve, reject) => {
    let buffer = '';
    const timer = setTimeout(() => reject(new Error(`no matching line in ${ms} ms: ${buffer}`)), ms);
    const onData = (b: Buffer): void => {
      buffer += b.toString();
      const line = buffer.split('\n').find((l) => match(l));
      if (line !== undefined) {
        clearTimeout(timer);
        child.stdout.off('data', onData);
        resolve(line);
      }
    };
    child.stdout.on('data', onData);
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`exited with ${code}: ${buffer}`));
    });
  });
}

const fdCount = async (): Promise<number> => (await readdir('/proc/self/fd')).length;

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
  const overrides = {
    iws: { config: { cpuSampleMs: 10, namespaceOps: true, maxConnections: MAX_CONNECTIONS }, now: () => clock },
  };
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

  it('a restart after daemon.sock became a tree of links to a host directory, swapped while root cleans up, deletes nothing of the host and serves again', async () => {
    const victim = join(scratch, 'victim-tree');
    await mkdir(join(victim, 'sub'), { recursive: true });
    for (let i = 0; i < 20; i++) await writeFile(join(victim, `f${i}`), 'keep');
    const expected = (await readdir(victim)).sort();
    const inode = (await stat(a.dir)).ino;
    const script = join(scratch, 'swapper.py');
    await writeFile(script, SWAPPER, { mode: 0o644 });
    await chmod(script, 0o644);

    await t.stop();
    const [file, args] = asUser(a.inside(), [
      '/usr/bin/python3',
      script,
      join(a.mount, 'daemon.sock'),
      victim,
      '8',
      '5',
    ]);
    const swapper = spawn(file, args, { stdio: ['pipe', 'pipe', 'inherit'] });
    try {
      await lineOf(swapper, (l) => l === 'ready');
      t = await startTestDaemon({ root: t.root, overrides });
      // The daemon moved the tree out of A's directory into its trash, and emptied it while A kept swapping in it.
      await lineOf(swapper, (l) => l === 'done');
    } finally {
      swapper.kill('SIGKILL');
    }
    expect((await readdir(victim)).sort()).toEqual(expected);
    for (let i = 0; i < 20; i++) expect(await readFile(join(victim, `f${i}`), 'utf8')).toBe('keep');
    // Served again in the directory A has mounted.
    expect((await stat(a.dir)).ino).toBe(inode);
    const socket = await lstat(a.socket);
    expect([socket.isSocket(), socket.mode & 0o7777, socket.uid]).toEqual([true, 0o600, a.uid]);
    clock += 1e9;
    const [again] = await probeCalls(probe, a.inside(), join(a.mount, 'daemon.sock'), [info]);
    expect(memoryLimit(again)).toBe(256 * 1024 * 1024);
    // With the workspace done swapping, the trash empties completely, and the host directory is still whole.
    await t.daemon.iws!.emptyTrash();
    const trash = join(t.workingArea, '.iws', '.trash');
    expect(await readdir(trash)).toEqual([]);
    const root = await lstat(trash);
    expect([root.mode & 0o7777, root.uid]).toEqual([0o700, 0]);
    expect((await readdir(victim)).sort()).toEqual(expected);
  });

  it("caps a workspace socket's connections: the rest are closed at once, an existing channel still works, the daemon's descriptors stay bounded", async () => {
    const script = join(scratch, 'flood.cjs');
    await writeFile(script, flooder(createRequire(import.meta.url).resolve('@grpc/grpc-js')), { mode: 0o644 });
    await chmod(script, 0o644);
    clock += 1e9;
    const baseline = await fdCount();
    const flood = 400;
    const [file, args] = asUser(a.inside(), [
      process.execPath,
      script,
      join(a.mount, 'daemon.sock'),
      String(flood),
      info.path,
      info.request.toString('hex'),
    ]);
    const child = spawn(file, args, { stdio: ['pipe', 'pipe', 'inherit'] });
    try {
      const flooded = JSON.parse(await lineOf(child, (l) => l.includes('"flooded"'))) as {
        first: number;
        closed: number;
      };
      expect(flooded.first).toBe(status.OK);
      // The channel holds one of the connections: at most MAX_CONNECTIONS - 1 of the plain ones stay open.
      expect(flooded.closed).toBeGreaterThanOrEqual(flood - (MAX_CONNECTIONS - 1));
      expect((await fdCount()) - baseline).toBeLessThanOrEqual(MAX_CONNECTIONS + 8);
      // A neighbour is served meanwhile.
      const [other] = await probeCalls(probe, b.inside(), join(b.mount, 'daemon.sock'), [info]);
      expect(codeOf(other)).toBe(status.OK);
      child.stdin.write('again\n');
      const done = JSON.parse(await lineOf(child, (l) => l.includes('"done"'))) as { second: number };
      expect(done.second).toBe(status.OK);
    } finally {
      child.kill('SIGKILL');
    }
    // The workspace's connections die with it; the daemon is back to its baseline.
    for (let i = 0; i < 50 && (await fdCount()) > baseline + 4; i++) await new Promise((r) => setTimeout(r, 100));
    expect(await fdCount()).toBeLessThanOrEqual(baseline + 4);
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
