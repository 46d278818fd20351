import { spawn } from 'node:child_process';
import { chown, mkdtemp, readFile, rm, stat, writeFile, mkdir } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';
import { firstValueFrom, filter, take, timeout } from 'rxjs';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { AlreadyExistsError, FailedPreconditionError, PluginHost } from '@workbay/api';
import { listLinks } from '@workbay/nsinsider';
import type { RuntimeEvent, RuntimeWorkspaceSpec } from '@workbay/api';
import { LocalRuntime } from './local-runtime.js';
import type { LocalWorkspaceState } from './local-runtime.js';
import type { LocalRuntimeConfigInput } from './config.js';
import { localRuntimePlugin } from './plugin.js';
import { readProcStat } from './proc.js';

const isRoot = process.getuid?.() === 0;
let base: string;
let counter = 0;
const runtimes: LocalRuntime[] = [];

beforeAll(async () => {
  base = await mkdtemp(path.join(os.tmpdir(), 'workbay-local-rt-'));
});

afterAll(async () => {
  await rm(base, { recursive: true, force: true });
});

afterEach(async () => {
  // Stop whatever a test left running, then close its runtimes.
  for (const runtime of runtimes.splice(0)) {
    for (const state of await runtime.list()) await runtime.stop(state.instanceId, { gracePeriodMs: 0 });
    await runtime.close();
  }
});

async function newRuntime(config: LocalRuntimeConfigInput = {}): Promise<LocalRuntime> {
  const runtime = await LocalRuntime.create({ config: { stateDir: path.join(base, 'state'), ...config } });
  runtimes.push(runtime);
  return runtime;
}

/**
 * A content directory. As root it is owned by a workspace uid of its own, as the daemon's would be (the owner is the
 * workspace's host identity), so that isolated workspaces can write to it.
 */
async function contentDir(files: Record<string, string> = {}): Promise<string> {
  const dir = path.join(base, `content-${++counter}`);
  await mkdir(dir, { recursive: true });
  for (const [name, text] of Object.entries(files)) await writeFile(path.join(dir, name), text);
  if (isRoot) await chown(dir, 210_000 + counter, 210_000 + counter);
  return dir;
}

/** Where an isolated workspace sees its content. */
const cwdOf = (dir: string): string => (isRoot ? '/workspace' : dir);

function spec(overrides: Partial<RuntimeWorkspaceSpec> & { contentDir: string }): RuntimeWorkspaceSpec {
  const n = ++counter;
  return {
    instanceId: `inst-${n}`,
    workspaceId: `ws-${n}`,
    owner: 'owner-1',
    image: 'workbay/default',
    url: `http://ws-${n}.example`,
    headless: false,
    type: 'regular',
    env: { WORKBAY_WORKSPACE_ID: `ws-${n}` },
    ports: [0],
    className: 'default',
    resources: {},
    ...overrides,
  };
}

function nextEvent(
  runtime: LocalRuntime,
  type: RuntimeEvent['type'],
  instanceId: string,
  ms = 20_000,
): Promise<RuntimeEvent> {
  return firstValueFrom(
    runtime.events$.pipe(
      filter((e) => e.type === type && e.instanceId === instanceId),
      take(1),
      timeout(ms),
    ),
  );
}

async function waitForFile(file: string, ms = 15_000): Promise<string> {
  const until = Date.now() + ms;
  for (;;) {
    const text = await readFile(file, 'utf8').catch(() => undefined);
    if (text !== undefined && text.endsWith('\n')) return text;
    if (Date.now() > until) throw new Error(`timed out waiting for ${file}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

const alive = async (pid: number): Promise<boolean> => {
  const st = await readProcStat(pid);
  return st !== undefined && st.state !== 'Z';
};

/** A shell workspace: `script` runs with cwd = content and the workspace env. */
const shellImages = (scripts: Record<string, string>): LocalRuntimeConfigInput['images'] =>
  Object.fromEntries(
    Object.entries(scripts).map(([image, script]) => [
      image,
      { command: ['/bin/sh', '-c', script], readiness: { kind: 'none' as const } },
    ]),
  );

describe('LocalRuntime: the default workspace', () => {
  it('starts, becomes ready, serves the workspace page over HTTP, and stops', async () => {
    const runtime = await newRuntime();
    const dir = await contentDir({ 'README.md': '# hello\n', 'main.go': 'package main\n' });
    const s = spec({ contentDir: dir, workspaceId: 'ws-default-1' });
    const ready = nextEvent(runtime, 'ready', s.instanceId);
    const started = await runtime.start(s);
    expect(started.status).toBe('starting');
    // Isolated, the workspace has an address of its own (its veth); otherwise it shares the host's loopback.
    if (isRoot) expect(started.host).toBe(started.net!.address);
    else expect(started.host).toBe('127.0.0.1');
    const event = await ready;
    expect(event.state.ready).toBe(true);
    expect(event.state.status).toBe('running');

    const { host, idePort: port } = event.state as LocalWorkspaceState;
    const html = await (await fetch(`http://${host}:${port}/`)).text();
    expect(html).toContain('ws-default-1');
    expect(html).toContain('README.md');
    expect(html).toContain('main.go');
    const info = (await (await fetch(`http://${host}:${port}/api/info`)).json()) as { contentDir: string };
    expect(info.contentDir).toBe(cwdOf(dir));

    const exited = nextEvent(runtime, 'exited', s.instanceId);
    await runtime.stop(s.instanceId, { gracePeriodMs: 10_000 });
    const exit = await exited;
    expect(exit.state.status).toBe('exited');
    expect(exit.state.failure).toBeUndefined();
    expect(await alive(started.pid!)).toBe(false);
    expect(await runtime.inspect(s.instanceId)).toBeUndefined();
    if (isRoot) {
      // Its address may already be another runtime's (tests share the machine): check its veth is gone instead.
      const links = await listLinks('wbv');
      expect(links.filter((l) => l.alias.endsWith(` ${s.instanceId}`))).toEqual([]);
    } else {
      await expect(fetch(`http://${host}:${port}/`)).rejects.toThrow();
    }
  });

  it('gives each workspace its own IDE port when they all ask for the same one (not isolated)', async () => {
    const runtime = await newRuntime({ isolation: 'none' });
    const wanted = await freePort();
    const a = spec({ contentDir: await contentDir(), ports: [wanted] });
    const b = spec({ contentDir: await contentDir(), ports: [wanted] });
    const readyA = nextEvent(runtime, 'ready', a.instanceId);
    const readyB = nextEvent(runtime, 'ready', b.instanceId);
    const [sa, sb] = await Promise.all([runtime.start(a), runtime.start(b)]);
    expect(new Set([sa.idePort, sb.idePort]).size).toBe(2);
    expect([sa.idePort, sb.idePort]).toContain(wanted);
    expect(sa.portMap[wanted]).toBe(sa.idePort);
    await Promise.all([readyA, readyB]);
    for (const st of [sa, sb]) {
      const info = (await (await fetch(`http://127.0.0.1:${st.idePort}/api/info`)).json()) as { instanceId: string };
      expect(info.instanceId).toBe(st.instanceId);
    }
  });
});

describe('LocalRuntime: process environment and lifecycle', () => {
  it('runs a mapped image with cwd = content and env = spec env plus PORT/WORKBAY_IDE_PORT', async () => {
    const runtime = await newRuntime({
      images: {
        'example.com/env:*': {
          command: [
            '/bin/sh',
            '-c',
            'env > env.txt; pwd > cwd.txt; echo "$1" > arg.txt; exec sleep 600',
            'sh',
            'port=${PORT}',
          ],
          readiness: { kind: 'none' },
        },
      },
    });
    const dir = await contentDir();
    const s = spec({
      contentDir: dir,
      image: 'example.com/env:v1',
      env: { GREETING: 'hello world', WORKBAY_OWNER: 'owner-1' },
    });
    const ready = nextEvent(runtime, 'ready', s.instanceId);
    const st = await runtime.start(s);
    await ready;
    const env = await waitForFile(path.join(dir, 'env.txt'));
    expect(env).toContain('GREETING=hello world\n');
    expect(env).toContain('WORKBAY_OWNER=owner-1\n');
    expect(env).toContain(`PORT=${st.idePort}\n`);
    expect(env).toContain(`WORKBAY_IDE_PORT=${st.idePort}\n`);
    expect((await waitForFile(path.join(dir, 'cwd.txt'))).trim()).toBe(cwdOf(dir));
    expect((await waitForFile(path.join(dir, 'arg.txt'))).trim()).toBe(`port=${st.idePort}`);
  });

  it('honours the grace period: a workspace that traps SIGTERM exits cleanly', async () => {
    const runtime = await newRuntime({
      images: shellImages({
        trapper: "trap 'echo clean > stopped.txt; exit 0' TERM; echo up > up.txt; while :; do sleep 0.05; done",
      }),
    });
    const dir = await contentDir();
    const s = spec({ contentDir: dir, image: 'trapper' });
    await runtime.start(s);
    await waitForFile(path.join(dir, 'up.txt'));
    const exited = nextEvent(runtime, 'exited', s.instanceId);
    await runtime.stop(s.instanceId, { gracePeriodMs: 30_000 });
    const exit = await exited;
    expect(await readFile(path.join(dir, 'stopped.txt'), 'utf8')).toBe('clean\n');
    expect(exit.state.exitCode).toBe(0);
    expect(exit.state.failure).toBeUndefined();
  });

  it('kills a workspace that ignores SIGTERM once the grace period is over, not before', async () => {
    const runtime = await newRuntime({
      images: shellImages({ stubborn: "trap '' TERM; echo up > up.txt; while :; do sleep 0.05; done" }),
    });
    const dir = await contentDir();
    const s = spec({ contentDir: dir, image: 'stubborn' });
    const st = await runtime.start(s);
    await waitForFile(path.join(dir, 'up.txt'));
    const exited = nextEvent(runtime, 'exited', s.instanceId);
    const began = Date.now();
    await runtime.stop(s.instanceId, { gracePeriodMs: 700 });
    expect(Date.now() - began).toBeGreaterThanOrEqual(650);
    const exit = await exited;
    expect(exit.state.failure).toBeUndefined(); // we asked for it
    expect(await alive(st.pid!)).toBe(false);
  });

  it('a later, shorter stop cuts the grace period short', async () => {
    const runtime = await newRuntime({
      images: shellImages({ stubborn: "trap '' TERM; echo up > up.txt; while :; do sleep 0.05; done" }),
    });
    const dir = await contentDir();
    const s = spec({ contentDir: dir, image: 'stubborn' });
    await runtime.start(s);
    await waitForFile(path.join(dir, 'up.txt'));
    const slow = runtime.stop(s.instanceId, { gracePeriodMs: 120_000 });
    await new Promise((r) => setTimeout(r, 100));
    await runtime.stop(s.instanceId, { gracePeriodMs: 0 });
    await slow;
    expect(await runtime.list()).toEqual([]);
  });

  it('reports a workspace that exits on its own with its exit code and last output line', async () => {
    const runtime = await newRuntime({ images: shellImages({ failing: 'echo "config file missing" >&2; exit 3' }) });
    const s = spec({ contentDir: await contentDir(), image: 'failing' });
    const exited = nextEvent(runtime, 'exited', s.instanceId);
    await runtime.start(s);
    const exit = await exited;
    expect(exit.state.exitCode).toBe(3);
    expect(exit.state.failure).toBe('the workspace process exited with code 3: config file missing');
    // It stays listed until stop() forgets it.
    expect((await runtime.inspect(s.instanceId))?.status).toBe('exited');
    await runtime.stop(s.instanceId, { gracePeriodMs: 1000 });
    expect(await runtime.inspect(s.instanceId)).toBeUndefined();
  });

  it('reports a command that does not exist', async () => {
    const runtime = await newRuntime({
      images: { nope: { command: ['/nonexistent/ide'], readiness: { kind: 'none' } } },
    });
    const s = spec({ contentDir: await contentDir(), image: 'nope' });
    const exited = nextEvent(runtime, 'exited', s.instanceId);
    await runtime.start(s);
    const exit = await exited;
    expect(exit.state.exitCode).toBe(127);
    expect(exit.state.failure).toMatch(
      /^the workspace command '\/nonexistent\/ide' could not be run \(exit code 127\)/,
    );
  });

  it('refuses a duplicate instance and a missing content directory', async () => {
    const runtime = await newRuntime({ images: shellImages({ sleeper: 'exec sleep 600' }) });
    const s = spec({ contentDir: await contentDir(), image: 'sleeper' });
    await runtime.start(s);
    await expect(runtime.start(s)).rejects.toBeInstanceOf(AlreadyExistsError);
    await expect(
      runtime.start(spec({ contentDir: path.join(base, 'missing'), image: 'sleeper' })),
    ).rejects.toBeInstanceOf(FailedPreconditionError);
    await expect(runtime.start(spec({ contentDir: base, instanceId: '../escape' }))).rejects.toThrow(/instanceId/);
  });

  it('takes background processes of the workspace down with it (no namespaces)', async () => {
    const runtime = await newRuntime({
      isolation: 'none',
      cgroups: 'off',
      images: shellImages({ forker: 'sleep 600 & echo $! > bg.txt; echo up > up.txt; wait' }),
    });
    const dir = await contentDir();
    const s = spec({ contentDir: dir, image: 'forker' });
    await runtime.start(s);
    await waitForFile(path.join(dir, 'up.txt'));
    const bg = Number((await waitForFile(path.join(dir, 'bg.txt'))).trim());
    expect(await alive(bg)).toBe(true);
    await runtime.stop(s.instanceId, { gracePeriodMs: 5_000 });
    expect(await alive(bg)).toBe(false);
  });
});

describe.runIf(isRoot)('LocalRuntime: isolation as root', () => {
  it('runs the workspace in its own pid, mount and uts namespaces', async () => {
    const runtime = await newRuntime({
      images: shellImages({
        ns: 'echo "$PPID" > ids.txt; hostname > host.txt; ls /proc | grep -c "^[0-9]" > procs.txt; exec sleep 600',
      }),
    });
    expect(runtime.isolation.namespaces).toBe(true);
    const dir = await contentDir();
    const s = spec({ contentDir: dir, image: 'ns', workspaceId: 'ws-own-host' });
    await runtime.start(s);
    // Its parent is the sandbox init, pid 1 of its own pid namespace.
    expect((await waitForFile(path.join(dir, 'ids.txt'))).trim()).toBe('1');
    expect((await waitForFile(path.join(dir, 'host.txt'))).trim()).toBe('ws-own-host');
    // init, the shell and ls (and grep): nothing of the host's process table is visible.
    expect(Number((await waitForFile(path.join(dir, 'procs.txt'))).trim())).toBeLessThan(6);
    expect(os.hostname()).not.toBe('ws-own-host');
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
    });
  });
});

describe('LocalRuntime: re-adoption after a restart', () => {
  it('a new runtime instance finds running workspaces, reports their exit and can stop them', async () => {
    const stateDir = path.join(base, `state-adopt-${++counter}`);
    const images = shellImages({
      waiter: 'echo up > up.txt; while [ ! -f quit ]; do sleep 0.05; done; exit 4',
      sleeper: 'echo up > up.txt; exec sleep 600',
    });
    const first = await LocalRuntime.create({ config: { stateDir, images } });
    const dirA = await contentDir();
    const dirB = await contentDir();
    const a = spec({ contentDir: dirA, image: 'waiter' });
    const b = spec({ contentDir: dirB, image: 'sleeper' });
    const readyA = nextEvent(first, 'ready', a.instanceId);
    const stA = await first.start(a);
    const stB = await first.start(b);
    await waitForFile(path.join(dirA, 'up.txt'));
    await waitForFile(path.join(dirB, 'up.txt'));
    await readyA;
    await first.close();

    const second = await LocalRuntime.create({ config: { stateDir, images, exitPollIntervalMs: 50 } });
    runtimes.push(second);
    const listed = await second.list();
    expect(listed.map((s) => s.instanceId).sort()).toEqual([a.instanceId, b.instanceId].sort());
    expect(listed.find((s) => s.instanceId === a.instanceId)).toMatchObject({
      pid: stA.pid,
      status: 'running',
      ready: true,
    });

    // A exits on its own: the adopted-process watcher reports it with the code the wrapper recorded.
    const exited = nextEvent(second, 'exited', a.instanceId);
    await writeFile(path.join(dirA, 'quit'), '');
    const exit = await exited;
    expect(exit.state.exitCode).toBe(4);
    expect(exit.state.failure).toMatch(/exited with code 4/);

    // B is stopped through the new instance.
    await second.stop(b.instanceId, { gracePeriodMs: 5_000 });
    expect(await alive(stB.pid!)).toBe(false);
    expect((await second.list()).map((s) => s.instanceId)).toEqual([a.instanceId]);
  });

  it('reports a workspace that exited while no runtime watched it', async () => {
    const stateDir = path.join(base, `state-gone-${++counter}`);
    const images = shellImages({ waiter: 'echo up > up.txt; while [ ! -f quit ]; do sleep 0.05; done; exit 0' });
    const first = await LocalRuntime.create({ config: { stateDir, images } });
    const dir = await contentDir();
    const s = spec({ contentDir: dir, image: 'waiter' });
    const st = await first.start(s);
    await waitForFile(path.join(dir, 'up.txt'));
    await first.close();
    await writeFile(path.join(dir, 'quit'), '');
    while (await alive(st.pid!)) await new Promise((r) => setTimeout(r, 20));

    const second = await LocalRuntime.create({ config: { stateDir, images } });
    runtimes.push(second);
    expect(await second.inspect(s.instanceId)).toMatchObject({ status: 'exited', exitCode: 0 });
  });

  it('does not mistake a reused pid for the workspace, and never signals it', async () => {
    const stateDir = path.join(base, `state-reuse-${++counter}`);
    const runtime0 = await LocalRuntime.create({ config: { stateDir } });
    await runtime0.close();
    // An unrelated process, recorded as if it were a workspace started at another time.
    const stranger = spawn('sleep', ['600'], { detached: true, stdio: 'ignore' });
    stranger.unref();
    const realStart = (await readProcStat(stranger.pid!))!.startTime;
    const record = {
      version: 1,
      instanceId: 'reused-1',
      workspaceId: 'ws-reused',
      owner: 'o',
      image: 'x',
      className: 'default',
      command: ['x'],
      pid: stranger.pid,
      pgid: stranger.pid,
      startTime: String(Number(realStart) - 12345),
      namespaced: false,
      host: '127.0.0.1',
      idePort: 1,
      portMap: {},
      nodeName: 'n',
      startedAt: new Date().toISOString(),
      readiness: { kind: 'none', path: '/', intervalMs: 100, probeTimeoutMs: 1000 },
      ready: true,
      stopRequested: false,
    };
    await writeFile(path.join(stateDir, 'instances', 'reused-1.json'), JSON.stringify(record));
    try {
      const runtime = await LocalRuntime.create({ config: { stateDir } });
      runtimes.push(runtime);
      const state = await runtime.inspect('reused-1');
      expect(state?.status).toBe('exited');
      expect(state?.failure).toMatch(/exit status is unknown/);
      await runtime.stop('reused-1', { gracePeriodMs: 0 });
      expect(await alive(stranger.pid!)).toBe(true);
    } finally {
      stranger.kill('SIGKILL');
    }
  });
});

describe('localRuntimePlugin', () => {
  it('registers the local runtime kind and validates its config naming the bad key', async () => {
    const host = new PluginHost().use(localRuntimePlugin);
    expect(host.runtimeKinds()).toEqual(['local']);
    await expect(
      host.createRuntime('local', { stateDir: path.join(base, 'p'), isolaton: 'none' }),
    ).rejects.toMatchObject({
      field: 'runtime.local.isolaton',
    });
    await expect(host.createRuntime('local', { readiness: { kind: 'udp' } })).rejects.toMatchObject({
      field: 'runtime.local.readiness.kind',
    });
    const runtime = await host.createRuntime('local', {
      stateDir: path.join(base, 'p2'),
      isolation: 'none',
      cgroups: 'off',
    });
    expect(runtime.kind).toBe('local');
    await runtime.close();
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

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const server = net.createServer().listen(0, '127.0.0.1', () => {
      const port = (server.address() as net.AddressInfo).port;
      server.close(() => resolve(port));
    });
  });
}
