/**
 * `npm run bench` for Workbay on Kubernetes (built to dist/kubernetes/bench.js). One run of the harness (real
 * etcd + kube-apiserver, deploy/kubernetes applied, two `workbay up` replicas under the manager ServiceAccount, the
 * simulated kubelet with two nodes and a real daemon each) measures, beside a baseline from the same API server:
 *
 * 1. Workspaces per second to RUNNING: WORKBAY_BENCH_K8S_WORKSPACES (1,000) StartWorkspace calls to the leader,
 *    BENCH_K8S_CONCURRENCY (32) at a time, until every RUNNING arrived on a Subscribe stream; against the API
 *    server's own watch delivery: as many ConfigMaps created at the same concurrency until a watch received them all.
 * 2. Subscribe delay under that load: from the moment a pod was seen Running (a watch of this process) to RUNNING
 *    arriving on the leader's and on the follower's Subscribe stream, p50/p99 (goal p99 ≤ 1 s); against the API
 *    server's watch delay (ConfigMap create sent → its watch event arrived).
 *
 * No timed assertions: it prints rows like the other benches. BENCH_K8S_LOG (warn) sets the replicas' log level,
 * BENCH_K8S_WRITE_BACKLOG the leader's controlPlane.maxWriteBacklog;
 * BENCH_K8S_DUMP=<file> writes the per-workspace arrival times.
 */
import { writeFile } from 'node:fs/promises';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { startRequest } from '../security/harness.js';
import { startKubernetesHarness } from './harness.js';
import type { KubernetesHarness } from './harness.js';
import { UpdateRecorder, isPhase, sleep } from './kit.js';

function envInt(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value <= 0) throw new Error(`${name} must be a positive integer (got '${raw}')`);
  return value;
}

const workspaces = envInt('WORKBAY_BENCH_K8S_WORKSPACES', 1_000);
const concurrency = envInt('BENCH_K8S_CONCURRENCY', 32);

function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!;
}

const fmtMs = (ms: number): string => (ms >= 100 ? `${ms.toFixed(0)} ms` : `${ms.toFixed(2)} ms`);

/** One result line: the figure, the baseline measured in the same run, and their ratio. */
function report(name: string, figure: string, baseline: string, ratio: number): void {
  console.log(
    `${name.padEnd(58)} ${figure.padStart(14)}   baseline ${baseline.padStart(14)}   ratio ${ratio.toFixed(2)}x`,
  );
}

/** Runs `task(i)` for i < n with at most `limit` in flight. */
async function pool(n: number, limit: number, task: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < n) await task(next++);
  };
  await Promise.all(Array.from({ length: Math.min(limit, n) }, worker));
}

/** The API server alone: ConfigMaps created at the same concurrency, received by one watch. */
async function watchBaseline(h: KubernetesHarness): Promise<{ perSecond: number; delays: number[] }> {
  const ns = 'workbay';
  const path = `/api/v1/namespaces/${ns}/configmaps`;
  const listed = await h.cluster.request<{ metadata: { resourceVersion: string } }>('GET', `${path}?limit=1`);
  const sent = new Map<string, number>();
  const arrived = new Map<string, number>();
  const watch = h.cluster.watch<{ metadata?: { name?: string } }>(
    path,
    (event) => {
      const name = event.object.metadata?.name ?? '';
      if (event.type === 'ADDED' && name.startsWith('bench-') && !arrived.has(name)) arrived.set(name, Date.now());
    },
    { resourceVersion: listed.body.metadata.resourceVersion, labelSelector: 'workbay.dev/bench=watch' },
  );
  await sleep(200);
  const t0 = Date.now();
  await pool(workspaces, concurrency, async (i) => {
    const name = `bench-${i}`;
    sent.set(name, Date.now());
    const res = await h.cluster.request('POST', path, {
      apiVersion: 'v1',
      kind: 'ConfigMap',
      metadata: { name, labels: { 'workbay.dev/bench': 'watch' } },
      data: { index: String(i) },
    });
    if (res.status !== 201) throw new Error(`creating ConfigMap ${name}: ${res.status}`);
  });
  while (arrived.size < workspaces) await sleep(10);
  const elapsed = Math.max(...arrived.values()) - t0;
  watch.stop();
  const delays = [...arrived].map(([name, at]) => at - sent.get(name)!);
  return { perSecond: (workspaces / elapsed) * 1000, delays };
}

/** The API server's own count and mean latency of the writes per resource (from its /metrics). */
function apiServerWrites(metrics: string): string {
  const rows: string[] = [];
  const re = /^apiserver_request_duration_seconds_(sum|count)\{([^}]*)\} (\S+)$/gm;
  const totals = new Map<string, { sum: number; count: number }>();
  for (const m of metrics.matchAll(re)) {
    const labels = Object.fromEntries([...m[2]!.matchAll(/(\w+)="([^"]*)"/g)].map((l) => [l[1], l[2]]));
    if (!['POST', 'PUT', 'PATCH', 'DELETE'].includes(labels['verb'] ?? '')) continue;
    const key = `${labels['verb']} ${labels['resource']}${labels['subresource'] ? '/' + labels['subresource'] : ''}`;
    const t = totals.get(key) ?? { sum: 0, count: 0 };
    if (m[1] === 'sum') t.sum += Number(m[3]);
    else t.count += Number(m[3]);
    totals.set(key, t);
  }
  for (const [key, t] of [...totals].sort((a, b) => b[1].count - a[1].count)) {
    if (t.count >= 10) rows.push(`${key}: ${t.count} (mean ${((t.sum / t.count) * 1000).toFixed(0)} ms)`);
  }
  return `(API server writes: ${rows.join('; ')})`;
}

async function main(): Promise<void> {
  console.log(
    `Workbay on Kubernetes: ${workspaces} workspaces, ${concurrency} concurrent starts, 2 replicas, 2 simulated nodes`,
  );
  // The shipped lease timing (15 s, renewed every 5 s): the short test lease would not survive 2 saturated cores.
  const h = await startKubernetesHarness({
    replicas: 2,
    logLevel: process.env['BENCH_K8S_LOG'] ?? 'warn',
    leaseDurationSeconds: 15,
    renewIntervalMs: 5_000,
    maxWriteBacklog: process.env['BENCH_K8S_WRITE_BACKLOG'] ? envInt('BENCH_K8S_WRITE_BACKLOG', 8) : undefined,
    // Every workspace here is one owner's: the node's throughput is measured, not one owner's fair share of it.
    manager: { maxConcurrentStartsPerOwner: 25 },
  });
  try {
    const leader = await h.waitForLeader();
    const follower = h.replicas.find((r) => r !== leader)!;
    const baseline = await watchBaseline(h);

    const onLeader = new UpdateRecorder(leader.client, { mustMatch: { owner: 'bench', metaId: '', annotations: {} } });
    const onFollower = new UpdateRecorder(follower.client, {
      mustMatch: { owner: 'bench', metaId: '', annotations: {} },
    });
    // Both streams are live once they delivered a workspace started after they were opened.
    await leader.client.startWorkspace(startRequest({ id: 'bench-warmup', owner: 'bench' }));
    await onLeader.waitFor('bench-warmup', isPhase('running'));
    await onFollower.waitFor('bench-warmup', isPhase('running'));

    const ids = Array.from({ length: workspaces }, (_, i) => `bench-${i}`);
    // This process's own event loop delay: the part of a Subscribe delay that is the client's, not the manager's.
    const loopDelay = monitorEventLoopDelay({ resolution: 10 });
    loopDelay.enable();
    const t0 = Date.now();
    await pool(workspaces, concurrency, async (i) => {
      await leader.client.startWorkspace(startRequest({ id: ids[i]!, owner: 'bench' }));
    });
    const runningAt = (recorder: UpdateRecorder, id: string): number | undefined => recorder.firstAt(id, 'running');
    const deadline = Date.now() + Math.max(600_000, workspaces * 600);
    for (;;) {
      const missing = ids.filter((id) => runningAt(onLeader, id) === undefined);
      if (missing.length === 0) break;
      if (Date.now() > deadline) throw new Error(`${missing.length} workspaces never reached RUNNING`);
      const failed = missing.filter((id) => onLeader.firstAt(id, 'stopped') !== undefined);
      if (failed.length) throw new Error(`workspaces failed: ${failed.slice(0, 5).join(', ')}`);
      await sleep(100);
    }
    const elapsed = Math.max(...ids.map((id) => runningAt(onLeader, id)!)) - t0;
    loopDelay.disable();
    const perSecond = (workspaces / elapsed) * 1000;
    while (ids.some((id) => runningAt(onFollower, id) === undefined) && Date.now() < deadline) await sleep(100);

    const delays = (recorder: UpdateRecorder): number[] =>
      ids.flatMap((id) => {
        const pod = h.pods.runningSeenAt(`ws-${id}`);
        const seen = runningAt(recorder, id);
        return pod !== undefined && seen !== undefined ? [Math.max(0, seen - pod)] : [];
      });
    const dump = process.env['BENCH_K8S_DUMP'];
    if (dump) {
      // Per workspace: when this process saw its pod Running and RUNNING on each stream (for finding the delay).
      const rows = ids.map((id) => ({
        id,
        pod: h.pods.runningSeenAt(`ws-${id}`),
        leader: runningAt(onLeader, id),
        follower: runningAt(onFollower, id),
      }));
      await writeFile(dump, JSON.stringify(rows));
    }
    const leaderDelays = delays(onLeader);
    const followerDelays = delays(onFollower);
    const b50 = percentile(baseline.delays, 50);
    const b99 = percentile(baseline.delays, 99);
    report(
      `workspaces to RUNNING/s (${workspaces}, simulated kubelet)`,
      `${perSecond.toFixed(1)}/s`,
      `${baseline.perSecond.toFixed(1)}/s`,
      perSecond / baseline.perSecond,
    );
    for (const [where, values] of [
      ['leader', leaderDelays],
      ['follower', followerDelays],
    ] as const) {
      const p50 = percentile(values, 50);
      const p99 = percentile(values, 99);
      report(`Subscribe delay p50 (pod Running → RUNNING, ${where})`, fmtMs(p50), fmtMs(b50), p50 / b50);
      report(`Subscribe delay p99 (${where}; goal ≤ 1 s)`, fmtMs(p99), fmtMs(b99), p99 / b99);
    }
    console.log(
      `(the bench client's own event loop delay meanwhile: p99 ${fmtMs(loopDelay.percentile(99) / 1e6)}, ` +
        `max ${fmtMs(loopDelay.max / 1e6)})`,
    );
    for (const [where, replica] of [
      ['leader', leader],
      ['follower', follower],
    ] as const) {
      const metrics = await fetch(`http://${replica.metricsAddress}/metrics`).then((r) => r.text());
      const lag = /^\w*nodejs_eventloop_lag_p99_seconds (\S+)$/m.exec(metrics)?.[1];
      const cpu = /^\w*process_cpu_seconds_total (\S+)$/m.exec(metrics)?.[1];
      console.log(`(${where} replica: event loop lag p99 ${lag ?? '?'} s, CPU ${cpu ?? '?'} s since it started)`);
    }
    console.log(
      `(baseline: the API server's own watch delivery, ${workspaces} ConfigMaps created ${concurrency} at a time; ` +
        `delays measured ${leaderDelays.length}/${followerDelays.length} of ${workspaces})`,
    );
    const metrics = (await h.cluster.request<string>('GET', '/metrics')).body;
    console.log(apiServerWrites(typeof metrics === 'string' ? metrics : JSON.stringify(metrics)));
    onLeader.close();
    onFollower.close();
  } finally {
    await h.close();
  }
}

main().then(
  () => process.exit(0),
  (error: unknown) => {
    console.error(error);
    process.exit(1);
  },
);
