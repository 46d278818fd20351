import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, bench, describe } from 'vitest';
import { CgroupController } from './cgroup.js';
import type { Cgroup } from './cgroup.js';
import { runCommand } from './exec.js';
import { createNsinsiderOps } from './nsinsider-ops.js';
import type { NamespaceSandbox } from './testing.js';
import { startNamespaceSandbox } from './testing.js';

// What one namespace operation costs, against the floor it cannot beat: spawning the same node CLI
// without nsenter, and spawning a trivial binary. Needs root. BENCH_TIME_MS sets the time per case.
const time = Number(process.env.BENCH_TIME_MS ?? 2000);
const cliPath = fileURLToPath(new URL('../dist/bin.js', import.meta.url));
const ops = createNsinsiderOps({ cliPath });
let sb: NamespaceSandbox;
let cg: Cgroup;

beforeAll(async () => {
  sb = await startNamespaceSandbox();
  cg = (await CgroupController.detect()).cgroup(`workbay-bench-${process.pid}`);
  await cg.create();
});

afterAll(async () => {
  await sb?.stop();
  await cg?.remove();
});

describe('one namespace operation (spawn nsenter + node CLI)', () => {
  bench(
    'ops.setIpForwarding (nsenter --net, node CLI)',
    async () => {
      await ops.setIpForwarding({ pid: sb.pid, enabled: true });
    },
    { time },
  );
  bench(
    'ops.networkInfo (nsenter --net, node CLI, ip -j x2)',
    async () => {
      await ops.networkInfo({ pid: sb.pid });
    },
    { time },
  );
  bench(
    'baseline: node CLI start-up alone (no nsenter; rejects its args)',
    async () => {
      await runCommand(process.execPath, [cliPath, 'dump-network-info', '--json-args', '{"bogus":1}']);
    },
    { time },
  );
  bench(
    'baseline: spawn /bin/true',
    async () => {
      await runCommand('true', []);
    },
    { time },
  );
});

describe('cgroup reads (no spawn)', () => {
  bench(
    'cgroup.usage()',
    async () => {
      await cg.usage();
    },
    { time: time / 2 },
  );
  bench(
    'baseline: read /proc/self/stat',
    async () => {
      await readFile('/proc/self/stat', 'utf8');
    },
    { time: time / 2 },
  );
});
