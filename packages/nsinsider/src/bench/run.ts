/**
 * `npm run bench` for @workbay/nsinsider: what one namespace operation costs, as p50/p99 over many runs, beside the
 * floor it cannot beat, measured in the same run: a raw spawn of `true`, and `nsenter --net -- true`. The CLI mode
 * (a Node start-up per operation, the way operations ran before) is measured too. Needs root.
 *
 * NSINSIDER_BENCH_RUNS sets the runs per row (default 200; the CLI mode and the masked proc mount take a fifth).
 */
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { CgroupController } from '../cgroup.js';
import { runCommand } from '../exec.js';
import { createNsinsiderOps } from '../nsinsider-ops.js';
import { startNamespaceSandbox } from '../testing.js';

const runs = Math.max(10, Number(process.env['NSINSIDER_BENCH_RUNS'] ?? 200));
const cliPath = fileURLToPath(new URL('../bin.js', import.meta.url));

interface Stats {
  p50: number;
  p99: number;
}

async function measure(n: number, fn: () => Promise<unknown>): Promise<Stats> {
  // A few unmeasured runs first: page cache, lazy module loading.
  for (let i = 0; i < 3; i++) await fn();
  const times: number[] = [];
  for (let i = 0; i < n; i++) {
    const started = performance.now();
    await fn();
    times.push(performance.now() - started);
  }
  times.sort((a, b) => a - b);
  const at = (q: number): number => times[Math.min(times.length - 1, Math.ceil(q * times.length) - 1)] as number;
  return { p50: at(0.5), p99: at(0.99) };
}

const ms = (v: number): string => `${v.toFixed(2)} ms`;

function row(name: string, s: Stats, baselineName: string, base: Stats): void {
  console.log(
    `${name.padEnd(52)} p50 ${ms(s.p50).padStart(10)}  p99 ${ms(s.p99).padStart(10)}   ` +
      `baseline ${baselineName}: p50 ${ms(base.p50)} p99 ${ms(base.p99)}   ratio p50 ${(s.p50 / base.p50).toFixed(2)}`,
  );
}

async function checked(argv: string[], input?: string): Promise<void> {
  const r = await runCommand(argv[0] as string, argv.slice(1), input === undefined ? {} : { input });
  if (r.exitCode !== 0) throw new Error(`${argv.join(' ')} exited ${r.exitCode}: ${r.stderr.trim()}`);
}

async function main(): Promise<void> {
  console.log(`@workbay/nsinsider bench (runs=${runs}; the CLI mode and the masked proc mount: ${runs / 5})`);
  const sb = await startNamespaceSandbox();
  const cg = (await CgroupController.detect()).cgroup(`workbay-bench-${process.pid}`);
  try {
    await cg.create();
    // A private tmpfs in the sandbox for the mount rows.
    const dir = `/tmp/nsinsider-bench-${process.pid}`;
    await sb.check(['mkdir', '-p', dir]);
    await sb.check(['mount', '-t', 'tmpfs', 'tmpfs', dir]);

    const ops = createNsinsiderOps();
    const viaCli = createNsinsiderOps({ cliPath });
    const spawnTrue = await measure(runs, () => checked(['true']));
    const nsenterTrue = await measure(runs, () =>
      checked(['nsenter', '--target', String(sb.pid), '--net', '--', 'true']),
    );
    row('baseline: spawn true', spawnTrue, 'spawn true', spawnTrue);
    row('baseline: nsenter --net -- true', nsenterTrue, 'spawn true', spawnTrue);
    row(
      'ops.setIpForwarding (nsenter --net tee)',
      await measure(runs, () => ops.setIpForwarding({ pid: sb.pid, enabled: true })),
      'spawn true',
      spawnTrue,
    );
    row(
      'ops.networkInfo (nsenter --net ip -j -batch)',
      await measure(runs, () => ops.networkInfo({ pid: sb.pid })),
      'spawn true',
      spawnTrue,
    );
    row(
      'ops.setupConnectionLimit (nsenter --net nft -f)',
      await measure(runs, () => ops.setupConnectionLimit({ pid: sb.pid, limitPerMinute: 60, bucketSize: 10 })),
      'spawn true',
      spawnTrue,
    );
    // The same script setupConnectionLimit sends: nft's own start-up and cache fill are most of its cost.
    const limitScript = [
      'table inet workbay {}',
      'delete table inet workbay',
      'table inet workbay {',
      '  counter ws-connection-drop-stats {}',
      '  chain ratelimit {',
      '    type filter hook postrouting priority filter; policy accept;',
      '    ct state new limit rate over 60/minute burst 10 packets counter name "ws-connection-drop-stats" drop',
      '  }',
      '}',
      '',
    ].join('\n');
    row(
      'baseline: nsenter --net -- nft -f - (same script)',
      await measure(runs, () =>
        checked(['nsenter', '--target', String(sb.pid), '--net', '--', 'nft', '-f', '-'], limitScript),
      ),
      'spawn true',
      spawnTrue,
    );
    row(
      'ops.makeShared (nsenter --mount --pid mount)',
      await measure(runs, () => ops.makeShared({ pid: sb.pid, target: dir })),
      'spawn true',
      spawnTrue,
    );
    row(
      'ops.mountProc masked + unmount (about 20 mounts in two rounds, 2 ops)',
      await measure(runs / 5, async () => {
        await ops.mountProc({ pid: sb.pid, target: `${dir}/proc` });
        await ops.unmount({ pid: sb.pid, target: `${dir}/proc` });
      }),
      'spawn true',
      spawnTrue,
    );
    row(
      'CLI mode: setIpForwarding (nsenter node CLI)',
      await measure(runs / 5, () => viaCli.setIpForwarding({ pid: sb.pid, enabled: true })),
      'spawn true',
      spawnTrue,
    );
    const statRead = await measure(runs, () => readFile('/proc/self/stat', 'utf8'));
    row('cgroup.usage() (no spawn)', await measure(runs, () => cg.usage()), 'read /proc/self/stat', statRead);
  } finally {
    await sb.stop();
    await cg.remove().catch(() => undefined);
  }
}

await main();
