// LocalRuntime as root: namespaces, cgroup limits (CPU, memory, pids) and mounting cgroups where none are.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chmod, chown, mkdir, readdir, readFile, readlink, stat, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';
import { describe, expect, it } from 'vitest';
import {
  base,
  contentDir,
  isRoot,
  newRuntime,
  nextEvent,
  shellImages,
  spec,
  useLocalRuntimeFixtures,
  waitForFile,
} from '../../test-support/local-runtime.js';
import { ptysPerWorkspace } from './sandbox-init.js';

useLocalRuntimeFixtures();

let cleanupServer: () => void = () => undefined;

describe.runIf(isRoot)('LocalRuntime: isolation as root', () => {
  it('runs the workspace in its own pid, mount and uts namespaces', async () => {
    const runtime = await newRuntime({
      images: shellImages({
        ns: 'echo "$PPID" > ids.txt; hostname > host.txt; ls /proc | grep -c "^[0-9]" > procs.txt; ls -A /run/netns | wc -l > netns.txt; { cat /proc/1/cmdline; echo "init=$?"; [ -d /proc/$$ ] && echo self=yes; } > proc1.tmp 2>/dev/null; mv proc1.tmp proc1.txt; exec sleep 600',
      }),
    });
    expect(runtime.isolation.namespaces).toBe(true);
    const dir = await contentDir();
    const s = spec({ contentDir: dir, image: 'ns', workspaceId: 'ws-own-host' });
    await runtime.start(s);
    // Its parent is the sandbox init, pid 1 of its own pid namespace.
    expect((await waitForFile(path.join(dir, 'ids.txt'))).trim()).toBe('1');
    expect((await waitForFile(path.join(dir, 'host.txt'))).trim()).toBe('ws-own-host');
    // The shell and ls (and grep): nothing of the host's process table is visible, nor is init (root), whose
    // command line names host paths and the host uid.
    expect(Number((await waitForFile(path.join(dir, 'procs.txt'))).trim())).toBeLessThan(5);
    expect((await waitForFile(path.join(dir, 'proc1.txt'))).trim().split('\n')).toEqual(['init=1', 'self=yes']);
    expect(os.hostname()).not.toBe('ws-own-host');
    // The host's /run/netns names every workspace (other owners' instance ids): it sees it empty.
    expect((await waitForFile(path.join(dir, 'netns.txt'))).trim()).toBe('0');
  });

  it('binds the in-workspace service directory read-only: its socket answers, nothing can be written there', async () => {
    const runtime = await newRuntime({
      images: shellImages({
        iws: 'python3 -c "import socket; c=socket.socket(socket.AF_UNIX); c.connect(\'/.workbay/s.sock\'); c.send(b\'hi\')" && echo connected > iws.tmp; { dd if=/dev/zero of=/.workbay/fill bs=1M count=1 2>&1 || echo "write=$?"; } | tail -1 >> iws.tmp; mv iws.tmp iws.txt; exec sleep 600',
      }),
    });
    const dir = await contentDir();
    // The daemon's directory for this workspace's socket: on the host's disk, not in the workspace's quota.
    const iwsDir = path.join(path.dirname(dir), '.iws', path.basename(dir));
    await mkdir(iwsDir, { recursive: true });
    const { uid } = await stat(dir);
    await chown(iwsDir, uid, uid);
    const received = new Promise<string>((resolve, reject) => {
      const server = createServer((socket) => socket.once('data', (data) => resolve(data.toString()))).listen(
        path.join(iwsDir, 's.sock'),
        () => chmod(path.join(iwsDir, 's.sock'), 0o666).catch(reject),
      );
      cleanupServer = () => server.close();
    });
    await runtime.start(spec({ contentDir: dir, image: 'iws' }));
    expect(await received).toBe('hi');
    const lines = (await waitForFile(path.join(dir, 'iws.txt'))).trim().split('\n');
    expect(lines[0]).toBe('connected');
    expect(lines[1]).toMatch(/Read-only file system|write=1/);
    expect(existsSync(path.join(iwsDir, 'fill'))).toBe(false);
    cleanupServer();
  });

  it("never runs root tools from the workspace's PATH, and gives it its own ipc and cgroup namespaces", async () => {
    // Content that plants every tool the root wrapper and init run, on a PATH that names it (absolutely, as the
    // workspace sees it, relatively, and by host path): any of them running writes a marker outside the content.
    const markers = path.join(base, `planted-${Date.now()}`);
    const dir = await contentDir();
    await mkdir(path.join(dir, 'bin'));
    for (const tool of ['nsenter', 'unshare', 'mount', 'setpriv', 'env', 'mv', 'printf', 'sh']) {
      await writeFile(
        path.join(dir, 'bin', tool),
        `#!/bin/sh\nmkdir -p ${markers}; id > ${markers}/${tool}\nexit 1\n`,
        {
          mode: 0o755,
        },
      );
    }
    const runtime = await newRuntime({
      images: shellImages({
        probe:
          'echo "$PATH" > path.txt; readlink /proc/self/ns/ipc > ipc.txt; cut -d: -f3 /proc/self/cgroup | sort -u > cgroup.txt; exec sleep 600',
      }),
    });
    const s = spec({ contentDir: dir, image: 'probe' });
    const workspacePath = `/workspace/bin:bin:${dir}/bin:/usr/bin:/bin`;
    await runtime.start({ ...s, env: { ...s.env, PATH: workspacePath, LD_PRELOAD: '/workspace/bin/none.so' } });
    // The workspace itself gets its environment, unchanged.
    expect((await waitForFile(path.join(dir, 'path.txt'))).trim()).toBe(workspacePath);
    expect((await waitForFile(path.join(dir, 'ipc.txt'))).trim()).not.toBe(await readlink('/proc/self/ns/ipc'));
    // Its cgroup namespace starts at its own cgroup: no host path shows.
    expect((await waitForFile(path.join(dir, 'cgroup.txt'))).trim()).toBe('/');
    await expect(stat(markers)).rejects.toThrow();
  });

  it("keeps the workspace's environment off every command line on the host, and gives the workspace exactly it", async () => {
    // Red team round 14 read every owner's env secrets as `nobody` from the root wrapper's, unshare's and the init's
    // /proc/<pid>/cmdline, which live as long as the workspace.
    const secret = `s3cr3t-${process.pid}-${Date.now()}`;
    const runtime = await newRuntime({
      images: shellImages({ envprobe: 'cat /proc/$$/environ > environ.bin; echo up > up.txt; exec sleep 600' }),
    });
    const dir = await contentDir();
    const s = spec({ contentDir: dir, image: 'envprobe' });
    // And as much as the API takes (1 MiB of text): hex carriers made it E2BIG (red team round 14b, R2).
    const large = Object.fromEntries(Array.from({ length: 32 }, (_, i) => [`LARGE_${i}`, `${i}`.padEnd(32_700, 'v')]));
    const given = { TOKEN: secret, 'odd.name-1': "it's a=b\nline two", EMPTY: '', ...large };
    await runtime.start({ ...s, env: { ...s.env, ...given } });
    await waitForFile(path.join(dir, 'up.txt'));
    const environ = Object.fromEntries(
      (await readFile(path.join(dir, 'environ.bin'), 'utf8'))
        .split('\0')
        .filter(Boolean)
        .map((pair) => [pair.slice(0, pair.indexOf('=')), pair.slice(pair.indexOf('=') + 1)]),
    );
    // Exactly its own variables (and the runtime's defaults: HOME, PATH, the ports it chose), nothing of the root
    // wrapper's (LC_ALL, the carriers).
    for (const [name, value] of Object.entries({ ...s.env, ...given })) expect(environ[name], name).toBe(value);
    const extra = Object.keys(environ).filter((name) => !(name in s.env) && !(name in given));
    expect(extra.sort()).toEqual(['HOME', 'PATH', 'PORT', 'WORKBAY_IDE_PORT']);
    const showing: string[] = [];
    for (const pid of await readdir('/proc')) {
      if (!/^\d+$/.test(pid)) continue;
      const cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
      if (cmdline.includes(secret)) showing.push(`${pid}: ${cmdline.replace(/\0/g, ' ').slice(0, 200)}`);
    }
    expect(showing).toEqual([]);
  });

  it('gives every world-writable host directory a private tmpfs: what one workspace writes there no other sees, and it dies with it', async () => {
    // The host's own: Debian keeps /run/lock world-writable (the red team's channel between two owners).
    expect((await stat('/run/lock')).mode & 0o002).toBe(0o002);
    const mark = `workbay-shared-${process.pid}-${Date.now()}`;
    const runtime = await newRuntime({
      images: shellImages({
        writer: `echo secret > /run/lock/${mark} && echo written > w.txt || echo refused > w.txt; exec sleep 600`,
        reader: `sleep 1; if [ -e /run/lock/${mark} ]; then echo seen; else echo unseen; fi > r.txt; exec sleep 600`,
      }),
    });
    const writerDir = await contentDir();
    const readerDir = await contentDir();
    await runtime.start(spec({ contentDir: writerDir, image: 'writer' }));
    expect((await waitForFile(path.join(writerDir, 'w.txt'))).trim()).toBe('written');
    await runtime.start(spec({ contentDir: readerDir, image: 'reader' }));
    expect((await waitForFile(path.join(readerDir, 'r.txt'))).trim()).toBe('unseen');
    // Not on the host either: it lived in the writer's own tmpfs.
    await expect(stat(path.join('/run/lock', mark))).rejects.toThrow();
  });

  it.runIf(existsSync('/usr/bin/python3'))(
    'gives every workspace pseudo-terminals of its own, at most ptysPerWorkspace: holding them all leaves its neighbour and the host theirs',
    async () => {
      // Opens terminals until refused and holds them; then writes how many it got.
      const hold = [
        'import os, time',
        'fds = []',
        'try:',
        '    while len(fds) < 10000: fds.append(os.openpty())',
        'except OSError as e: err = e.errno',
        "open('held.txt', 'w').write(f'{len(fds)} {err}\\n')",
        'time.sleep(600)',
      ].join('\n');
      const one = "import os; os.openpty(); open('one.txt', 'w').write('ok\\n')";
      const runtime = await newRuntime({
        images: shellImages({
          hog: '/usr/bin/python3 hold.py; exec sleep 600',
          neighbour:
            'ls /dev/pts | wc -l > seen.txt; /usr/bin/python3 one.py || echo refused > one.txt; exec sleep 600',
        }),
      });
      const hogDir = await contentDir();
      await writeFile(path.join(hogDir, 'hold.py'), hold);
      await runtime.start(spec({ contentDir: hogDir, image: 'hog' }));
      const [held, errno] = (await waitForFile(path.join(hogDir, 'held.txt'), 30_000)).trim().split(' ');
      expect(Number(held)).toBe(ptysPerWorkspace);
      expect(Number(errno)).toBe(28); // ENOSPC: its instance's max
      const neighbourDir = await contentDir();
      await writeFile(path.join(neighbourDir, 'one.py'), one);
      await runtime.start(spec({ contentDir: neighbourDir, image: 'neighbour' }));
      expect((await waitForFile(path.join(neighbourDir, 'one.txt'))).trim()).toBe('ok');
      // Its /dev/pts lists its own instance only (ptmx), not the hog's terminals.
      expect(Number((await waitForFile(path.join(neighbourDir, 'seen.txt'))).trim())).toBeLessThanOrEqual(2);
      // The host's instance is untouched.
      const host = spawnSync('/usr/bin/python3', ['-c', 'import os; os.openpty()']);
      expect(host.status).toBe(0);
    },
  );

  it('by default a workspace creates no namespace inside its own: no user namespace, so no network or mount one', async () => {
    const runtime = await newRuntime({
      images: shellImages({
        flat: [
          'cat /proc/sys/user/max_user_namespaces /proc/sys/user/max_net_namespaces /proc/sys/user/max_mnt_namespaces | tr "\\n" " " > limits.txt; echo >> limits.txt',
          '(unshare --user --map-root-user true) 2>/dev/null && echo made > user.txt || echo refused > user.txt',
          '(unshare --net true) 2>/dev/null && echo made > net.txt || echo refused > net.txt',
          'exec sleep 600',
        ].join('; '),
      }),
    });
    const dir = await contentDir();
    await runtime.start(spec({ contentDir: dir, image: 'flat' }));
    expect((await waitForFile(path.join(dir, 'limits.txt'))).trim()).toBe('0 0 0');
    expect((await waitForFile(path.join(dir, 'user.txt'))).trim()).toBe('refused');
    expect((await waitForFile(path.join(dir, 'net.txt'))).trim()).toBe('refused');
  });

  it('with nestedNamespaces: limited, limits the namespaces a workspace may nest, at a level it cannot raise', async () => {
    // 80 network namespaces held at once from a user namespace of its own (where it is root and sets its own limit
    // high): the workspace's level allows 64 in all.
    const runtime = await newRuntime({
      nestedNamespaces: 'limited',
      images: shellImages({
        nest: [
          'cat /proc/sys/user/max_net_namespaces > limit.txt',
          '(echo 100000 > /proc/sys/user/max_net_namespaces) 2>/dev/null && echo raised > raise.txt || echo refused > raise.txt',
          `unshare --user --map-root-user sh -c 'echo 100000 > /proc/sys/user/max_net_namespaces; i=0; while [ $i -lt 80 ]; do i=$((i + 1)); unshare --net sleep 30 2>>nest-err.txt & done; sleep 3; echo $((80 - $(grep -c "No space left" nest-err.txt))) > held.txt'`,
          'exec sleep 600',
        ].join('; '),
      }),
    });
    const dir = await contentDir();
    await runtime.start(spec({ contentDir: dir, image: 'nest' }));
    expect((await waitForFile(path.join(dir, 'limit.txt'))).trim()).toBe('64');
    expect((await waitForFile(path.join(dir, 'raise.txt'))).trim()).toBe('refused');
    const held = Number((await waitForFile(path.join(dir, 'held.txt'), 30_000)).trim());
    // The nested user namespace's own netns count is not one of them; the rest failed with ENOSPC.
    expect(held).toBeGreaterThan(0);
    expect(held).toBeLessThanOrEqual(64);
  });

  it('puts the workspace in a cgroup with the class limits and removes it afterwards', async () => {
    const runtime = await newRuntime({ images: shellImages({ sleeper: 'echo up > up.txt; exec sleep 600' }) });
    expect(runtime.isolation.cgroups).toBeDefined();
    const dir = await contentDir();
    const s = spec({
      contentDir: dir,
      image: 'sleeper',
      resources: { cpu: 0.5, memoryBytes: 96 * 1024 * 1024, pids: 64 },
    });
    const st = await runtime.start(s);
    await waitForFile(path.join(dir, 'up.txt'));
    expect(st.cgroupDirs.length).toBeGreaterThan(0);
    const files = await readLimits(st.cgroupDirs);
    if (runtime.isolation.cgroups!.version === 'v1') {
      expect(files['cpu.cfs_quota_us']).toBe('50000');
      expect(files['cpu.cfs_period_us']).toBe('100000');
      expect(files['memory.limit_in_bytes']).toBe(String(96 * 1024 * 1024));
    } else {
      expect(files['cpu.max']).toBe('50000 100000');
      expect(files['memory.max']).toBe(String(96 * 1024 * 1024));
    }
    expect(files['pids.max']).toBe('64');
    // The wrapper and everything below it are members.
    for (const dir of st.cgroupDirs) {
      const members = (await readFile(path.join(dir, 'cgroup.procs'), 'utf8')).trim().split('\n').map(Number);
      expect(members).toContain(st.pid);
      expect(members.length).toBeGreaterThanOrEqual(3);
    }
    await runtime.stop(s.instanceId, { gracePeriodMs: 1000 });
    for (const dir of st.cgroupDirs) await expect(stat(dir)).rejects.toThrow();
  });

  it('reports an OOM kill when a workspace exceeds its memory limit', async () => {
    const hog = `const a = []; for (;;) a.push(Buffer.alloc(1 << 20, 1));`;
    const runtime = await newRuntime({
      images: { hog: { command: [process.execPath, '-e', hog], readiness: { kind: 'none' } } },
    });
    const s = spec({ contentDir: await contentDir(), image: 'hog', resources: { memoryBytes: 64 * 1024 * 1024 } });
    const exited = nextEvent(runtime, 'exited', s.instanceId, 60_000);
    await runtime.start(s);
    const exit = await exited;
    expect(exit.state.exitCode).toBe(137);
    expect(exit.state.failure).toMatch(/^out of memory: the workspace exceeded its memory limit of 64 MiB/);
  });

  it('limits the number of processes', async () => {
    const runtime = await newRuntime({
      images: shellImages({ forks: 'i=0; while [ $i -lt 40 ]; do sleep 600 & i=$((i+1)); done; wait' }),
    });
    const s = spec({ contentDir: await contentDir(), image: 'forks', resources: { pids: 10 } });
    const exited = nextEvent(runtime, 'exited', s.instanceId);
    await runtime.start(s);
    // The shell gives up when fork fails; the failure carries its last words.
    const exit = await exited;
    expect(exit.state.failure).toMatch(/fork/i);
  });
});

describe.runIf(isRoot)('cgroup mounting', () => {
  it('mounts the v1 controllers when a machine has no cgroup filesystem (in a private mount namespace)', async () => {
    // The runtime's cgroup code is @workbay/nsinsider's; run its built module in a clean mount namespace.
    const dist = createRequire(import.meta.url).resolve('@workbay/nsinsider');
    const script = [
      `import { mountCgroupsIfMissing, detectCgroupLayout } from ${JSON.stringify(dist)};`,
      'const before = await detectCgroupLayout().catch(() => null);',
      'await mountCgroupsIfMissing();',
      'const after = await detectCgroupLayout();',
      'console.log(JSON.stringify({ before, after }));',
    ].join('\n');
    // Everything happens in a new mount namespace: the host's cgroup mounts are untouched.
    const out = await new Promise<string>((resolve, reject) => {
      const child = spawn(
        'unshare',
        [
          '--mount',
          '--propagation',
          'private',
          '--',
          'sh',
          '-c',
          'umount -R /sys/fs/cgroup && exec "$0" --input-type=module -e "$1"',
          process.execPath,
          script,
        ],
        { stdio: ['ignore', 'pipe', 'pipe'] },
      );
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      child.on('close', (code) => (code === 0 ? resolve(stdout) : reject(new Error(`exit ${code}: ${stderr}`))));
    });
    const { before, after } = JSON.parse(out) as {
      before: unknown;
      after: { version: string; roots: Record<string, string> };
    };
    expect(before).toBeNull();
    expect(after.version).toBe('v1');
    expect(after.roots).toEqual({
      cpu: '/sys/fs/cgroup/cpu',
      cpuacct: '/sys/fs/cgroup/cpuacct',
      memory: '/sys/fs/cgroup/memory',
      pids: '/sys/fs/cgroup/pids',
      freezer: '/sys/fs/cgroup/freezer',
      blkio: '/sys/fs/cgroup/blkio',
    });
  });
});

async function readLimits(dirs: readonly string[]): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const dir of dirs) {
    for (const file of [
      'cpu.cfs_quota_us',
      'cpu.cfs_period_us',
      'memory.limit_in_bytes',
      'pids.max',
      'cpu.max',
      'memory.max',
    ]) {
      const text = await readFile(path.join(dir, file), 'utf8').catch(() => undefined);
      if (text !== undefined) out[file] = text.trim();
    }
  }
  return out;
}
