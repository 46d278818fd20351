/**
 * `npm run bench` for @workbay/manager. Each figure is printed beside a baseline measured in the same run:
 *
 * 1. Start latency (StartWorkspace until RUNNING is seen on Subscribe), p50/p95 over BENCH_STARTS (50) workspaces,
 *    with the real daemon and the local runtime, against spawning the same workspace process directly and
 *    waiting for its port.
 * 2. Subscribe fan-out: BENCH_EVENTS (200) status updates to BENCH_SUBSCRIBERS (1,000) subscribers in another
 *    process: delivered updates per second and p99 delay, against a bare grpc-js streaming server sending the same
 *    bytes to the same client. Then the same paced: BENCH_PACED_EVENTS (100) updates at BENCH_PACED_RATE (20,000)
 *    delivered updates/s over all subscribers (20 per second to each of 1,000), p50/p99 delay against the bare
 *    server paced alike.
 * 3. DescribeWorkspace under BENCH_CALLERS (200) concurrent callers (BENCH_CALLS 50 calls each): p50/p99, against a
 *    bare grpc-js unary server answering with the same bytes.
 * 4. Resident memory of a manager holding BENCH_RECORDS (10,000) workspace records, against an empty manager.
 * 5. Restart from a WORKBAY_BENCH_RESTART_BYTES (1 GiB) backup: StartWorkspace until RUNNING, against `tar -xf` of
 *    the same tree (bench/restart.ts).
 * 6. The manager's event loop stalled by one wrapper spawn in a manager of BENCH_SPAWN_BALLAST_MB (600) MB, through
 *    the runtime's spawner against `child_process.spawn` (bench/spawn-stall.ts).
 *
 * Sizes are environment variables; BENCH_ISOLATION (none|auto) sets the local runtime's isolation;
 * BENCH_MANAGER_BALLAST_MB makes the manager's process hold that much more memory, as on a busy node. BENCH_ONLY=start,
 * fanout, memory, restart or spawn runs only that row (1, 2, 4, 5 or 6), e.g. to compare a change without the minutes the
 * other rows take.
 */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createWorkspaceManagerClient, workspacePhase, wsman } from '@workbay/api';
import type { WorkspaceManagerClient } from '@workbay/api';
import { startEmbedded } from '../embedded.js';
import type { EmbeddedHandle } from '../embedded.js';
import { createSilentLogger } from '../logger.js';
import { defaultWorkspaceScript } from '../runtime/local/index.js';
import { benchRestart } from './restart.js';
import { benchRss } from './rss.js';
import { benchSpawnStall } from './spawn-stall.js';
import { envInt, fmtMs, percentile, report } from './stats.js';
import { loadClient, nextMessage, startBareServer, waitForPort } from './support.js';

const sizes = {
  starts: envInt('BENCH_STARTS', 50),
  subscribers: envInt('BENCH_SUBSCRIBERS', 1_000),
  events: envInt('BENCH_EVENTS', 200),
  // Paced fan-out: delivered updates per second over all subscribers, and how many updates are sent.
  pacedRate: envInt('BENCH_PACED_RATE', 20_000),
  pacedEvents: envInt('BENCH_PACED_EVENTS', 100),
  callers: envInt('BENCH_CALLERS', 200),
  calls: envInt('BENCH_CALLS', 50),
  records: envInt('BENCH_RECORDS', 10_000),
  restartBytes: envInt('WORKBAY_BENCH_RESTART_BYTES', 1024 ** 3),
  /** Memory the manager's process holds besides (a manager of a busy node); rows 1 to 5. */
  ballastMb: Number(process.env['BENCH_MANAGER_BALLAST_MB'] ?? 0),
};
/** Touched, as a manager's heap and buffers are (see bench/spawn-stall.ts). Kept until the process ends. */
const ballast = Array.from({ length: sizes.ballastMb }, (_, i) => Buffer.alloc(1024 * 1024, i));
const isolation = process.env['BENCH_ISOLATION'] === 'auto' ? 'auto' : 'none';
const only = process.env['BENCH_ONLY'] ?? '';
const rows = ['start', 'fanout', 'memory', 'restart', 'spawn'];
if (only !== '' && !rows.includes(only))
  throw new Error(`BENCH_ONLY must be one of ${rows.join(', ')} (got '${only.slice(0, 20)}')`);
const runs = (row: string): boolean => only === '' || only === row;

async function benchStartLatency(handle: EmbeddedHandle, client: WorkspaceManagerClient): Promise<string[]> {
  const seen = new Map<string, () => void>();
  const stream = client.subscribe({});
  void (async () => {
    try {
      for await (const update of stream) {
        const status = update.status;
        if (status && workspacePhase.fromProto(status.phase) === 'running') seen.get(status.id)?.();
      }
    } catch {
      // Cancelled at the end.
    }
  })();
  await new Promise((resolve) => setTimeout(resolve, 200));
  // The same process the runtime runs for this image, spawned the same way (small env, own process group,
  // cwd a content directory), and ready when its port accepts connections. Manager starts and direct spawns
  // alternate, so that a busy machine weighs on both alike.
  const ids: string[] = [];
  const latencies: number[] = [];
  const baseline: number[] = [];
  const children: ChildProcess[] = [];
  const cwd = await mkdtemp(join(tmpdir(), 'workbay-bench-spawn-'));
  for (let i = 0; i < sizes.starts; i += 1) {
    const id = `bench-${i}`;
    const running = new Promise<void>((resolve) => seen.set(id, resolve));
    const t0 = performance.now();
    await client.startWorkspace(
      wsman.StartWorkspaceRequest.fromPartial({
        id,
        metadata: { owner: 'bench', metaId: `bench-meta-${i}` },
        spec: {
          workspaceImage: 'workbay/default',
          workspaceLocation: 'project',
          initializer: { spec: { $case: 'empty', value: {} } },
        },
      }),
    );
    await running;
    latencies.push(performance.now() - t0);
    ids.push(id);

    const port = 33_000 + i;
    const t1 = performance.now();
    const child = spawn(process.execPath, [defaultWorkspaceScript(), '--port', String(port), '--host', '127.0.0.1'], {
      stdio: 'ignore',
      cwd,
      detached: true,
      env: { PATH: process.env['PATH'] ?? '/usr/bin:/bin', PORT: String(port) },
    });
    children.push(child);
    await waitForPort(port);
    baseline.push(performance.now() - t1);
  }
  stream.cancel();
  for (const child of children) child.kill('SIGKILL');
  await rm(cwd, { recursive: true, force: true });

  const p50 = percentile(latencies, 50);
  const p95 = percentile(latencies, 95);
  const b50 = percentile(baseline, 50);
  const b95 = percentile(baseline, 95);
  report(`start latency p50 (${sizes.starts} workspaces, real daemon)`, fmtMs(p50), fmtMs(b50), p50 / b50);
  report(`start latency p95`, fmtMs(p95), fmtMs(b95), p95 / b95);
  void handle;
  return ids;
}

interface Arrivals {
  readonly arrivals: number[][];
  readonly errors: number;
}

async function measureFanOut(
  address: string,
  path: string,
  request: Buffer,
  emit: (index: number) => void,
  events = sizes.events,
  /** Milliseconds between two updates; 0 sends one per event-loop turn (a burst). */
  intervalMs = 0,
): Promise<{ perSecond: number; p99: number; p50: number; errors: number }> {
  const child = loadClient();
  const ready = nextMessage<{ ready: boolean }>(child, 'ready');
  child.send({
    kind: 'subscribe',
    address,
    path,
    request: request.toString('base64'),
    subscribers: sizes.subscribers,
    channels: 10,
    expected: events,
  });
  // The manager sends a stream's response headers with its first update: prime the streams until all are open.
  const primer = setInterval(() => emit(-1), 50);
  await ready;
  clearInterval(primer);
  const quiet = nextMessage<{ quiet: boolean }>(child, 'quiet');
  child.send({ kind: 'quiet' });
  await quiet;
  const reset = nextMessage<{ reset: boolean }>(child, 'reset');
  child.send({ kind: 'reset' });
  await reset;
  const result = nextMessage<Arrivals>(child, 'arrivals');
  const sendTimes: number[] = [];
  const start = performance.now();
  for (let i = 0; i < events; i += 1) {
    if (intervalMs > 0) {
      // Paced against the schedule (not the previous send), so a late timer does not lower the rate.
      const wait = start + i * intervalMs - performance.now();
      if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
    }
    sendTimes.push(Date.now());
    emit(i);
    // One update per event-loop turn, so the server's I/O interleaves as under real traffic.
    if (intervalMs === 0) await new Promise((resolve) => setImmediate(resolve));
  }
  const timeout = setTimeout(() => child.send({ kind: 'finish' }), 60_000);
  const { arrivals, errors } = await result;
  clearTimeout(timeout);
  const delays: number[] = [];
  let last = 0;
  arrivals.forEach((row, i) => {
    for (const t of row) {
      // Rows are sparse (holes arrive as null over IPC).
      if (typeof t !== 'number') continue;
      // A late primer update would make more rows than updates sent: not a measured update.
      if (i >= sendTimes.length) continue;
      delays.push(t - sendTimes[i]!);
      if (t > last) last = t;
    }
  });
  const perSecond = delays.length / (Math.max(1, last - sendTimes[0]!) / 1000);
  return { perSecond, p99: percentile(delays, 99), p50: percentile(delays, 50), errors };
}

async function benchFanOut(handle: EmbeddedHandle, client: WorkspaceManagerClient): Promise<void> {
  const id = 'bench-fanout';
  await client.startWorkspace(
    wsman.StartWorkspaceRequest.fromPartial({
      id,
      metadata: { owner: 'fanout', metaId: 'bench-fanout-meta' },
      spec: {
        workspaceImage: 'workbay/default',
        workspaceLocation: 'project',
        initializer: { spec: { $case: 'empty', value: {} } },
      },
    }),
  );
  for (;;) {
    const phase = workspacePhase.fromProto((await client.describeWorkspace({ id })).status!.phase);
    if (phase === 'running') break;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  const core = handle.manager.core;
  const request = Buffer.from(
    wsman.SubscribeRequest.encode({
      mustMatch: { owner: 'fanout', metaId: '', annotations: {} },
      resumeFromStatusVersion: 0,
    }).finish(),
  );
  // On the leader the change is made before the promise is returned (nothing to wait for).
  const toggle = (i: number): void =>
    void core.controlPort(id, i % 2 === 0, { port: 4000, visibility: 'private', protocol: 'http' });
  const dropsBefore = (await handle.manager.metrics.droppedSubscribersTotal.get()).values[0]?.value ?? 0;
  const managed = await measureFanOut(handle.managerAddress, '/wsman.WorkspaceManager/Subscribe', request, toggle);
  // Paced: updates at a steady rate (delivered updates per second over all subscribers), the load the
  // issue's goal is stated for; what matters there is the delay, not the throughput.
  const pacedInterval = (1000 * sizes.subscribers) / sizes.pacedRate;
  const paced = await measureFanOut(
    handle.managerAddress,
    '/wsman.WorkspaceManager/Subscribe',
    request,
    toggle,
    sizes.pacedEvents,
    pacedInterval,
  );
  const drops = ((await handle.manager.metrics.droppedSubscribersTotal.get()).values[0]?.value ?? 0) - dropsBefore;

  // The same bytes the manager sent, from a bare server.
  const { status } = await client.describeWorkspace({ id });
  const bytes = Buffer.from(wsman.SubscribeResponse.encode({ status, header: {}, resyncRequired: false }).finish());
  const bare = await startBareServer(Buffer.alloc(0));
  const broadcast = (): void => {
    for (const stream of bare.streams) stream.write(bytes);
  };
  const baseline = await measureFanOut(bare.address, '/bench.Bare/Subscribe', Buffer.alloc(0), broadcast);
  const pacedBaseline = await measureFanOut(
    bare.address,
    '/bench.Bare/Subscribe',
    Buffer.alloc(0),
    broadcast,
    sizes.pacedEvents,
    pacedInterval,
  );
  bare.close();

  const label = `${sizes.subscribers} subscribers x ${sizes.events} updates`;
  report(
    `Subscribe fan-out: delivered updates/s (${label})`,
    `${managed.perSecond.toFixed(0)}/s`,
    `${baseline.perSecond.toFixed(0)}/s`,
    managed.perSecond / baseline.perSecond,
  );
  report('Subscribe fan-out: p50 delay', fmtMs(managed.p50), fmtMs(baseline.p50), managed.p50 / baseline.p50);
  report('Subscribe fan-out: p99 delay', fmtMs(managed.p99), fmtMs(baseline.p99), managed.p99 / baseline.p99);
  const pacedLabel = `${sizes.subscribers} subscribers, paced at ${sizes.pacedRate} updates/s`;
  report(
    `Subscribe paced (${pacedLabel}): p50 delay`,
    fmtMs(paced.p50),
    fmtMs(pacedBaseline.p50),
    paced.p50 / pacedBaseline.p50,
  );
  report('Subscribe paced: p99 delay', fmtMs(paced.p99), fmtMs(pacedBaseline.p99), paced.p99 / pacedBaseline.p99);
  report(
    'Subscribe paced: delivered updates/s',
    `${paced.perSecond.toFixed(0)}/s`,
    `${pacedBaseline.perSecond.toFixed(0)}/s`,
    paced.perSecond / pacedBaseline.perSecond,
  );
  if (drops > 0 || managed.errors > 0 || paced.errors > 0)
    console.log(`  (subscribers cut off as too slow: ${drops}; stream errors: ${managed.errors + paced.errors})`);
  await client.stopWorkspace({ id, policy: wsman.StopWorkspacePolicy.ABORT });
}

async function measureUnary(
  address: string,
  path: string,
  request: Buffer,
): Promise<{ p50: number; p99: number; perSecond: number }> {
  const child = loadClient();
  const result = nextMessage<{ latencies: number[]; wallMs: number }>(child, 'latencies');
  child.send({
    kind: 'unary',
    address,
    path,
    request: request.toString('base64'),
    callers: sizes.callers,
    callsPerCaller: sizes.calls,
  });
  const { latencies, wallMs } = await result;
  return {
    p50: percentile(latencies, 50),
    p99: percentile(latencies, 99),
    perSecond: latencies.length / (wallMs / 1000),
  };
}

async function benchDescribe(handle: EmbeddedHandle, client: WorkspaceManagerClient, id: string): Promise<void> {
  const request = Buffer.from(wsman.DescribeWorkspaceRequest.encode({ id }).finish());
  const managed = await measureUnary(handle.managerAddress, '/wsman.WorkspaceManager/DescribeWorkspace', request);
  const answer = Buffer.from(wsman.DescribeWorkspaceResponse.encode(await client.describeWorkspace({ id })).finish());
  const bare = await startBareServer(answer);
  const baseline = await measureUnary(bare.address, '/bench.Bare/Echo', request);
  bare.close();
  const label = `${sizes.callers} concurrent callers`;
  report(`DescribeWorkspace p50 (${label})`, fmtMs(managed.p50), fmtMs(baseline.p50), managed.p50 / baseline.p50);
  report('DescribeWorkspace p99', fmtMs(managed.p99), fmtMs(baseline.p99), managed.p99 / baseline.p99);
  report(
    'DescribeWorkspace calls/s',
    `${managed.perSecond.toFixed(0)}/s`,
    `${baseline.perSecond.toFixed(0)}/s`,
    managed.perSecond / baseline.perSecond,
  );
}

async function main(): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'workbay-manager-bench-'));
  if (only === 'spawn') {
    console.log('@workbay/manager bench (spawn row only)');
    await benchSpawnStall(dir);
    await rm(dir, { recursive: true, force: true });
    return;
  }
  if (only === 'memory') {
    console.log(`@workbay/manager bench (memory row only): ${sizes.records} records`);
    await benchRss(dir, sizes.records);
    await rm(dir, { recursive: true, force: true });
    return;
  }
  const daemonConfig = join(dir, 'daemon.yaml');
  await writeFile(daemonConfig, 'quota: { mode: none }\ndiskGuard: { minFree: 0 }\nlog: { level: silent }\n');
  console.log(
    `@workbay/manager bench: ${sizes.starts} starts, ${sizes.subscribers} subscribers x ${sizes.events} updates, ` +
      `${sizes.callers} callers x ${sizes.calls} calls, ${sizes.records} records, ` +
      `restart from ${Math.round(sizes.restartBytes / 1024 ** 2)} MiB; local runtime isolation: ${isolation}` +
      (ballast.length > 0 ? `; manager at ${Math.round(process.memoryUsage().rss / 1024 ** 2)} MB` : '') +
      (only === '' ? '' : ` (${only} row only)`),
  );
  const handle = await startEmbedded({
    logger: createSilentLogger(),
    overrides: {
      stateDir: join(dir, 'manager'),
      workingArea: join(dir, 'workspaces'),
      grpc: { address: '127.0.0.1:0' },
      proxy: { address: '127.0.0.1:0' },
      metrics: { address: '127.0.0.1:0' },
      idePorts: { from: 34_000, to: 34_999 },
      daemon: {
        address: '127.0.0.1:0',
        httpAddress: 'off',
        storageRoot: join(dir, 'storage'),
        configPath: daemonConfig,
        output: 'ignore',
      },
      runtime: {
        kind: 'local',
        isolation,
        cgroups: isolation === 'none' ? 'off' : 'auto',
        readiness: { intervalMs: 10 },
      },
      subscribe: { bufferSize: envInt('BENCH_SUBSCRIBE_BUFFER', 1_000) },
      log: { level: 'silent' },
    },
  });
  const client = createWorkspaceManagerClient(handle.managerAddress, { defaultTimeoutMs: 60_000 });
  try {
    const ids = runs('start') ? await benchStartLatency(handle, client) : [];
    if (runs('fanout')) await benchFanOut(handle, client);
    if (only === '') await benchDescribe(handle, client, ids[0]!);
    if (runs('restart')) await benchRestart(handle, client, dir, sizes.restartBytes);
  } finally {
    client.close();
    for (const r of handle.manager.core.listWorkspaces()) {
      await handle.manager.runtime.stop(r.id, { gracePeriodMs: 0 }).catch(() => undefined);
    }
    await handle.stop();
  }
  if (only === '') await benchRss(dir, sizes.records);
  // Last: it fills this process with ballast.
  if (only === '') await benchSpawnStall(dir);
  await rm(dir, { recursive: true, force: true });
}

await main();
process.exit(0);
