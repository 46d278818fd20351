/**
 * Row 6 of the manager bench: how long a workspace start's spawn stops the manager's event loop, in a manager that
 * holds BENCH_SPAWN_BALLAST_MB (600) MB, against `child_process.spawn` from the same process (the baseline: what the
 * runtime did before the spawner). The loop's stall is the longest delay a 1 ms timer sees while one spawn is under
 * way (`monitorEventLoopDelay`); the spawn's own time is until the process exists. BENCH_SPAWNS (20) of each,
 * alternating; p50 and max.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { silentLogger } from '@workbay/api';
import { WrapperSpawner } from '../runtime/local/spawner.js';
import { envInt, fmtMs, percentile, report } from './stats.js';

/** Runs `body` and returns the longest event-loop delay seen meanwhile, and how long `body` took. */
async function stallOf(body: () => Promise<void>): Promise<{ stallMs: number; tookMs: number }> {
  const monitor = monitorEventLoopDelay({ resolution: 1 });
  monitor.enable();
  // The monitor's first sample comes a resolution after enabling: let it start before the spawn.
  await new Promise((resolve) => setTimeout(resolve, 5));
  const started = performance.now();
  await body();
  const tookMs = performance.now() - started;
  // One more turn of its timer, so a stall at the very end is sampled too.
  await new Promise((resolve) => setTimeout(resolve, 3));
  monitor.disable();
  // The delay beyond the timer's own resolution, in ms.
  return { stallMs: Math.max(0, monitor.max / 1e6 - 1), tookMs };
}

export async function benchSpawnStall(dir: string): Promise<void> {
  const ballastMb = envInt('BENCH_SPAWN_BALLAST_MB', 600);
  const spawns = envInt('BENCH_SPAWNS', 20);
  // Touched memory, as a manager's heap and buffers are: a fork copies the page tables of what is mapped.
  const ballast: Buffer[] = [];
  for (let i = 0; i < ballastMb; i += 1) ballast.push(Buffer.alloc(1024 * 1024, i));
  const rssMb = Math.round(process.memoryUsage().rss / 1024 ** 2);
  const scratch = await mkdtemp(join(dir, 'spawn-'));
  const spawner = new WrapperSpawner(silentLogger);
  const invocation = { file: '/bin/true', args: [], env: { PATH: '/usr/bin:/bin' } };
  const ours = { stall: [] as number[], took: [] as number[] };
  const raw = { stall: [] as number[], took: [] as number[] };
  try {
    // The helper starts with the runtime, not at a workspace's start: one spawn first, not measured.
    await spawner.spawn(invocation, { cwd: '/', logFile: join(scratch, 'warm.log') });
    for (let i = 0; i < spawns; i += 1) {
      const s = await stallOf(async () => {
        await spawner.spawn(invocation, { cwd: '/', logFile: join(scratch, `${i}.log`) });
      });
      ours.stall.push(s.stallMs);
      ours.took.push(s.tookMs);
      const r = await stallOf(async () => {
        const child = spawn(invocation.file, invocation.args, {
          env: invocation.env,
          detached: true,
          stdio: 'ignore',
        });
        await new Promise<void>((resolve, reject) => {
          child.once('spawn', resolve);
          child.once('error', reject);
        });
      });
      raw.stall.push(r.stallMs);
      raw.took.push(r.tookMs);
    }
  } finally {
    spawner.close();
    await rm(scratch, { recursive: true, force: true });
  }
  const label = `manager at ${rssMb} MB`;
  const p50 = (values: number[]): number => percentile(values, 50);
  const max = (values: number[]): number => Math.max(...values);
  report(
    `spawn: event loop stalled, p50 (${label})`,
    fmtMs(p50(ours.stall)),
    fmtMs(p50(raw.stall)),
    p50(ours.stall) / p50(raw.stall),
  );
  report(
    `spawn: event loop stalled, max`,
    fmtMs(max(ours.stall)),
    fmtMs(max(raw.stall)),
    max(ours.stall) / max(raw.stall),
  );
  report(
    `spawn: until the process exists, p50`,
    fmtMs(p50(ours.took)),
    fmtMs(p50(raw.took)),
    p50(ours.took) / p50(raw.took),
  );
  ballast.length = 0;
}
