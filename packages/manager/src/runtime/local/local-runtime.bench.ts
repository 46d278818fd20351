import { spawn } from 'node:child_process';
import { chown, mkdir, mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { firstValueFrom, filter, take } from 'rxjs';
import { afterAll, beforeAll, bench, describe } from 'vitest';
import { LocalRuntime, defaultWorkspaceScript } from './local-runtime.js';
import { ephemeralPort } from './ports.js';

// What the local runtime adds to starting and stopping a workspace, against the floor: spawning the same
// default workspace with plain child_process.spawn and waiting for its port. As root the first case is an isolated
// workspace (user/net/pid/mount/uts namespaces, veth pair, cgroup), the second a trusted one (isolation: none, with
// a cgroup). BENCH_TIME_MS sets the time per case.
const time = Number(process.env.BENCH_TIME_MS ?? 3000);
let base: string;
let content: string;
let runtime: LocalRuntime;
let trusted: LocalRuntime;
let n = 0;
const isRoot = process.getuid?.() === 0;

beforeAll(async () => {
  base = await mkdtemp(path.join(os.tmpdir(), 'workbay-rt-bench-'));
  content = path.join(base, 'content');
  await mkdir(content);
  // The content owner is an isolated workspace's host identity, as the daemon would set it.
  if (isRoot) await chown(content, 200_999, 200_999);
  runtime = await LocalRuntime.create({ config: { stateDir: path.join(base, 'state'), readiness: { intervalMs: 5 } } });
  trusted = await LocalRuntime.create({
    config: { stateDir: path.join(base, 'trusted'), isolation: 'none', readiness: { intervalMs: 5 } },
  });
});

afterAll(async () => {
  await runtime?.close();
  await trusted?.close();
  await rm(base, { recursive: true, force: true });
});

async function waitForPort(port: number): Promise<void> {
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect({ host: '127.0.0.1', port }, () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 5));
  }
}

async function cycle(rt: LocalRuntime): Promise<void> {
  const instanceId = `bench-${++n}`;
  const ready = firstValueFrom(
    rt.events$.pipe(
      filter((e) => e.type === 'ready' && e.instanceId === instanceId),
      take(1),
    ),
  );
  await rt.start({
    instanceId,
    workspaceId: instanceId,
    owner: 'bench',
    image: 'workbay/default',
    url: '',
    headless: false,
    type: 'regular',
    contentDir: content,
    env: {},
    ports: [0],
    className: 'default',
    resources: { cpu: 1, memoryBytes: 512 * 1024 * 1024, pids: 256 },
  });
  await ready;
  await rt.stop(instanceId, { gracePeriodMs: 5000 });
}

describe('start a default workspace until its port answers, then stop it', () => {
  bench(
    `LocalRuntime start → ready → stop (${isRoot ? 'isolated: namespaces, veth, cgroup' : 'plain processes'})`,
    () => cycle(runtime),
    { time },
  );
  bench('LocalRuntime start → ready → stop (isolation: none, cgroup when root)', () => cycle(trusted), { time });
  bench(
    'baseline: spawn the same default workspace directly, wait for its port, SIGTERM it',
    async () => {
      const port = await ephemeralPort();
      const child = spawn(process.execPath, [defaultWorkspaceScript(), '--port', String(port)], {
        cwd: content,
        stdio: 'ignore',
      });
      const exited = new Promise((resolve) => child.once('exit', resolve));
      await waitForPort(port);
      child.kill('SIGTERM');
      await exited;
    },
    { time },
  );
});
