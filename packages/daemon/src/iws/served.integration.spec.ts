import { spawn } from 'node:child_process';
import { chmod, lstat, mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { InWorkspaceServiceService } from '@workbay/api';
import { describe, expect, it } from 'vitest';
import { asUser, probeCalls, probeConnect, shellAs } from '../test-support/iws-probe.js';
import {
  codeOf,
  info,
  iwsInfo,
  lineOf,
  MAX_CONNECTIONS,
  memoryLimit,
  mountProc,
  status,
  STRANGER,
  teardown,
  umountProc,
  useServedWorkspaces,
} from '../test-support/iws-served.js';

// The real daemon serving the in-workspace service per workspace, attacked from real processes: workspace
// processes in their own pid and mount namespaces with their socket directory bind-mounted (as the local runtime
// does at /.workbay), running as the workspace's host uid, and strangers running as other uids. Runs as root.
// Access, confinement and limits; restarts are in served-restart.integration.spec.ts, the shared setup in
// ../test-support/iws-served.ts.

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

const fdCount = async (): Promise<number> => (await readdir('/proc/self/fd')).length;

describe('the daemon serves the in-workspace service on one socket per workspace', () => {
  const s = useServedWorkspaces();

  it('InitWorkspace leaves a socket outside the content: directory 0700, socket 0600, both the workspace uid', async () => {
    expect(s.a.uid).not.toBe(0);
    expect(s.a.uid).not.toBe(s.b.uid);
    for (const ws of [s.a, s.b]) {
      const dir = await lstat(ws.dir);
      expect(dir.isDirectory()).toBe(true);
      expect([dir.mode & 0o7777, dir.uid, dir.gid]).toEqual([0o700, ws.uid, ws.gid]);
      const socket = await lstat(ws.socket);
      expect(socket.isSocket()).toBe(true);
      expect([socket.mode & 0o7777, socket.uid, socket.gid]).toEqual([0o600, ws.uid, ws.gid]);
    }
    // The folder of all sockets is root's alone: a socket is reached only through its workspace's mount.
    const root = await lstat(join(s.t.workingArea, '.iws'));
    expect([root.mode & 0o7777, root.uid]).toEqual([0o700, 0]);
  });

  it("the workspace's uid calls WorkspaceInfoService and the in-workspace service through its mount", async () => {
    const [viaInfo, viaIws, mounted, unmounted] = await probeCalls(
      s.probe,
      s.a.inside(),
      join(s.a.mount, 'daemon.sock'),
      [info, iwsInfo, mountProc('/proc', 1), umountProc('/proc', 1)],
    );
    expect(memoryLimit(viaInfo), JSON.stringify(viaInfo)).toBe(256 * 1024 * 1024);
    expect(memoryLimit(viaIws)).toBe(256 * 1024 * 1024);
    // pid 1 is the workspace's own init: resolved in its pid namespace, mounted in its mount namespace.
    expect([codeOf(mounted), codeOf(unmounted)]).toEqual([status.OK, status.OK]);
  });

  it("a socket reaches only its own workspace: another workspace's pids do not resolve", async () => {
    const [foreign] = await probeCalls(s.probe, s.a.inside(), join(s.a.mount, 'daemon.sock'), [
      mountProc('/proc', s.b.proc!.pid),
    ]);
    expect(codeOf(foreign)).toBe(status.NOT_FOUND);
    expect((foreign as { details: string }).details).toMatch(/not a process of workspace meta-ws-a/);
  });

  it('no other uid can connect: not through the mount, not by the host path, not to the bare socket', async () => {
    // A stranger inside A's mount namespace (a process A's code could not even create).
    expect(
      await probeConnect(
        s.probe,
        { uid: STRANGER, gid: STRANGER, mountNsOf: s.a.proc!.pid },
        join(s.a.mount, 'daemon.sock'),
      ),
    ).toEqual({ connected: false, error: 'EACCES' });
    // Workspace B's code aiming at A's socket by its host path, and a stranger doing the same.
    for (const user of [s.b.inside(), { uid: STRANGER, gid: STRANGER }]) {
      expect(await probeConnect(s.probe, user, s.a.socket)).toEqual({ connected: false, error: 'EACCES' });
    }
    // B's socket directory mounted where A's should be: the directory (0700, B's) keeps A out.
    const wrongMount = { uid: s.a.uid, gid: s.a.gid, bind: { source: s.b.dir, target: join(s.scratch, 'mnt-ws-a') } };
    expect(await probeConnect(s.probe, wrongMount, join(s.scratch, 'mnt-ws-a', 'daemon.sock'))).toEqual({
      connected: false,
      error: 'EACCES',
    });
    // The socket alone, bind-mounted onto a file anyone can reach: its 0600 mode still refuses the stranger.
    const bare = join(s.scratch, 'bare-socket');
    await writeFile(bare, '');
    const stranger = { uid: STRANGER, gid: STRANGER, bind: { source: s.a.socket, target: bare } };
    expect(await probeConnect(s.probe, stranger, bare)).toEqual({ connected: false, error: 'EACCES' });
    expect(await probeConnect(s.probe, { ...stranger, uid: s.a.uid, gid: s.a.gid }, bare)).toEqual({ connected: true });
  });

  it("applies the original's rate limits, per workspace", async () => {
    s.clock += 1e9; // a full bucket
    const burst = await probeCalls(s.probe, s.a.inside(), join(s.a.mount, 'daemon.sock'), [
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
    const [other] = await probeCalls(s.probe, s.b.inside(), join(s.b.mount, 'daemon.sock'), [info]);
    expect(codeOf(other)).toBe(status.OK);
  });

  it('bounds its input: an oversized request or target is refused with a short message, and the socket still serves', async () => {
    const [huge, long, fine] = await probeCalls(s.probe, s.a.inside(), join(s.a.mount, 'daemon.sock'), [
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
    const [r] = await probeCalls(s.probe, s.b.inside(), join(s.b.mount, 'daemon.sock'), [
      { path: wipe.path, request: wipe.requestSerialize({ doWipe: true }) },
    ]);
    expect(r && 'hex' in r ? wipe.responseDeserialize(Buffer.from(r.hex, 'hex')).success : r).toBe(false);
  });

  it('a workspace process in the host mount namespace gets no mounts made on the host', async () => {
    const c = await s.initWorkspace('ws-c', 41_003);
    await s.run(c, { isolated: false });
    const target = join(s.scratch, 'c-proc');
    await mkdir(target);
    const user = { uid: c.uid, gid: c.gid, bind: { source: c.dir, target: c.mount } };
    const [refused] = await probeCalls(s.probe, user, join(c.mount, 'daemon.sock'), [mountProc(target, c.proc!.pid)]);
    expect(codeOf(refused)).toBe(status.FAILED_PRECONDITION);
    expect((refused as { details: string }).details).toMatch(/not isolated/);
    expect(await readFile('/proc/self/mountinfo', 'utf8')).not.toContain(target);
  });

  it('housekeeping never takes .iws for an orphaned workspace', async () => {
    const { removed } = await s.t.daemon.service.housekeeping(Date.now() + 1e12);
    expect(removed).not.toContain('.iws');
    expect((await lstat(s.a.socket)).isSocket()).toBe(true);
  });

  it("caps a workspace socket's connections: the rest are closed at once, an existing channel still works, the daemon's descriptors stay bounded", async () => {
    const script = join(s.scratch, 'flood.cjs');
    await writeFile(script, flooder(createRequire(import.meta.url).resolve('@grpc/grpc-js')), { mode: 0o644 });
    await chmod(script, 0o644);
    s.clock += 1e9;
    const baseline = await fdCount();
    const flood = 400;
    const [file, args] = asUser(s.a.inside(), [
      process.execPath,
      script,
      join(s.a.mount, 'daemon.sock'),
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
      const [other] = await probeCalls(s.probe, s.b.inside(), join(s.b.mount, 'daemon.sock'), [info]);
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
    const kept = join(s.scratch, 'kept');
    await mkdir(kept);
    await writeFile(join(kept, 'file'), 'keep');
    expect((await shellAs(s.b.inside(), `ln -s ${kept} ${join(s.b.mount, 'escape')}`)).code).toBe(0);
    for (const ws of [s.a, s.b]) {
      await s.t.client.disposeWorkspace({ id: ws.id, backup: false });
      await expect(lstat(ws.dir)).rejects.toMatchObject({ code: 'ENOENT' });
    }
    expect(await readFile(join(kept, 'file'), 'utf8')).toBe('keep');
    expect(await probeConnect(s.probe, s.a.inside(), join(s.a.mount, 'daemon.sock'))).toMatchObject({
      connected: false,
    });
    expect(s.t.daemon.iws?.served).toEqual(['ws-c']);
  });
});
