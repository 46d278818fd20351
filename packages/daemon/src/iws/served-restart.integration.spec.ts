import { spawn } from 'node:child_process';
import { chmod, lstat, mkdir, readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { startTestDaemon } from '../test-support/daemon-harness.js';
import { asUser, probeCalls, shellAs } from '../test-support/iws-probe.js';
import { info, lineOf, memoryLimit, useServedWorkspaces } from '../test-support/iws-served.js';

// The real daemon serving the in-workspace service per workspace (see served.integration.spec.ts), restarted while
// workspace code has planted links or is racing root's cleanup of its socket directory. Runs as root.

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

describe('the daemon serves the in-workspace service on one socket per workspace', () => {
  const s = useServedWorkspaces();

  it('a restart serves live workspaces again in the directory they have mounted, never following planted links', async () => {
    const inode = (await stat(s.a.dir)).ino;
    await s.t.stop();
    await expect(lstat(s.a.socket)).rejects.toMatchObject({ code: 'ENOENT' });
    // While the daemon is down, A's code plants a link where the socket goes.
    const victim = join(s.scratch, 'victim');
    await writeFile(victim, 'keep', { mode: 0o644 });
    expect((await shellAs(s.a.inside(), `ln -s ${victim} ${join(s.a.mount, 'daemon.sock')}`)).code).toBe(0);

    s.t = await startTestDaemon({ root: s.t.root, overrides: s.overrides });
    expect((await stat(s.a.dir)).ino).toBe(inode);
    const socket = await lstat(s.a.socket);
    expect([socket.isSocket(), socket.mode & 0o7777, socket.uid]).toEqual([true, 0o600, s.a.uid]);
    const v = await lstat(victim);
    expect([v.isFile(), v.mode & 0o7777, v.uid, await readFile(victim, 'utf8')]).toEqual([true, 0o644, 0, 'keep']);
    // The running workspace's existing mount shows the new socket.
    s.clock += 1e9;
    const [again] = await probeCalls(s.probe, s.a.inside(), join(s.a.mount, 'daemon.sock'), [info]);
    expect(memoryLimit(again)).toBe(256 * 1024 * 1024);
    expect((await lstat(s.b.socket)).isSocket()).toBe(true);
  });

  it('a restart after daemon.sock became a tree of links to a host directory, swapped while root cleans up, deletes nothing of the host and serves again', async () => {
    const victim = join(s.scratch, 'victim-tree');
    await mkdir(join(victim, 'sub'), { recursive: true });
    for (let i = 0; i < 20; i++) await writeFile(join(victim, `f${i}`), 'keep');
    const expected = (await readdir(victim)).sort();
    const inode = (await stat(s.a.dir)).ino;
    const script = join(s.scratch, 'swapper.py');
    await writeFile(script, SWAPPER, { mode: 0o644 });
    await chmod(script, 0o644);

    await s.t.stop();
    const [file, args] = asUser(s.a.inside(), [
      '/usr/bin/python3',
      script,
      join(s.a.mount, 'daemon.sock'),
      victim,
      '8',
      '5',
    ]);
    const swapper = spawn(file, args, { stdio: ['pipe', 'pipe', 'inherit'] });
    try {
      await lineOf(swapper, (l) => l === 'ready');
      s.t = await startTestDaemon({ root: s.t.root, overrides: s.overrides });
      // The daemon moved the tree out of A's directory into its trash, and emptied it while A kept swapping in it.
      await lineOf(swapper, (l) => l === 'done');
    } finally {
      swapper.kill('SIGKILL');
    }
    expect((await readdir(victim)).sort()).toEqual(expected);
    for (let i = 0; i < 20; i++) expect(await readFile(join(victim, `f${i}`), 'utf8')).toBe('keep');
    // Served again in the directory A has mounted.
    expect((await stat(s.a.dir)).ino).toBe(inode);
    const socket = await lstat(s.a.socket);
    expect([socket.isSocket(), socket.mode & 0o7777, socket.uid]).toEqual([true, 0o600, s.a.uid]);
    s.clock += 1e9;
    const [again] = await probeCalls(s.probe, s.a.inside(), join(s.a.mount, 'daemon.sock'), [info]);
    expect(memoryLimit(again)).toBe(256 * 1024 * 1024);
    // With the workspace done swapping, the trash empties completely, and the host directory is still whole.
    await s.t.daemon.iws!.emptyTrash();
    const trash = join(s.t.workingArea, '.iws', '.trash');
    expect(await readdir(trash)).toEqual([]);
    const root = await lstat(trash);
    expect([root.mode & 0o7777, root.uid]).toEqual([0o700, 0]);
    expect((await readdir(victim)).sort()).toEqual(expected);
  });
});
