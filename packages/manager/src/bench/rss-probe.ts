/**
 * Benchmark helper, run as a child process with `--expose-gc`: starts a manager on the state dir given as the
 * first argument (already holding the records to load) and reports its resident memory after a full GC, as one
 * JSON line on stdout.
 */
import { join } from 'node:path';
import { startManager } from '../app.js';
import { resolveManagerConfig } from '../config.js';
import { createSilentLogger } from '../logger.js';

const stateDir = process.argv[2];
if (!stateDir) throw new Error('usage: rss-probe <stateDir>');

const started = performance.now();
const cpuAtStart = process.cpuUsage();
const running = await startManager({
  logger: createSilentLogger(),
  config: resolveManagerConfig({
    stateDir,
    workingArea: join(stateDir, 'workspaces-content'),
    grpc: { address: '127.0.0.1:0' },
    proxy: { address: '127.0.0.1:0' },
    metrics: { enabled: false },
    // Nothing here talks to the daemon: every record is stopped.
    daemon: { address: '127.0.0.1:1' },
    runtime: { kind: 'local', isolation: 'none', cgroups: 'off' },
    log: { level: 'silent' },
  }),
});
const loadMs = performance.now() - started;
// CPU time as well: on a shared machine the wall time says more about the neighbours than about the load.
const cpu = process.cpuUsage(cpuAtStart);
const loadCpuMs = (cpu.user + cpu.system) / 1000;
const gc = (globalThis as { gc?: () => void }).gc;
for (let i = 0; i < 3; i += 1) {
  gc?.();
  await new Promise((resolve) => setTimeout(resolve, 50));
}
const memory = process.memoryUsage();
console.log(
  JSON.stringify({
    workspaces: running.core.workspaceCount,
    rss: memory.rss,
    heapUsed: memory.heapUsed,
    loadMs,
    loadCpuMs,
  }),
);
await running.stop();
process.exit(0);
