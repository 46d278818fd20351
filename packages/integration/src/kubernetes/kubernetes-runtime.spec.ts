/**
 * The kubernetes runtime against a real kube-apiserver (with etcd; no kubelet, no scheduler). The test plays the
 * kubelet the way the original's tests do: it patches pod status (Running/Ready, exits, OOM, pull errors,
 * eviction, node loss, admission rejection) and finishes deletions with `gracePeriodSeconds=0`. What a real server
 * cannot be made to do on demand (go silent mid-watch, answer a watch with 410) is covered by the fake server in
 * packages/manager/src/runtime/kubernetes/kubernetes-runtime.spec.ts.
 */
import { KubeConfig } from '@kubernetes/client-node';
import type { V1Pod, V1PodStatus } from '@kubernetes/client-node';
import { FailedPreconditionError, UnavailableError } from '@workbay/api';
import type { RuntimeEvent, RuntimeWorkspaceSpec } from '@workbay/api';
import { KubernetesRuntime, podName } from '@workbay/manager/kubernetes';
import type { KubernetesRuntimeConfigInput } from '@workbay/manager/kubernetes';
import { startKubernetesCluster } from '@workbay/testing';
import type { KubernetesTestCluster } from '@workbay/testing';
import { firstValueFrom } from 'rxjs';
import { filter, take } from 'rxjs/operators';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';

const namespace = 'ws-runtime';
let cluster: KubernetesTestCluster;
let kubeConfig: KubeConfig;
const runtimes: KubernetesRuntime[] = [];

beforeAll(async () => {
  cluster = await startKubernetesCluster();
  await cluster.apply([{ apiVersion: 'v1', kind: 'Namespace', metadata: { name: namespace } }]);
  kubeConfig = new KubeConfig();
  kubeConfig.loadFromString(cluster.kubeConfigYaml());
}, 120_000);
afterAll(async () => {
  await cluster?.stop();
});
afterEach(async () => {
  for (const r of runtimes.splice(0)) await r.close();
});

async function newRuntime(over: KubernetesRuntimeConfigInput = {}): Promise<KubernetesRuntime> {
  const runtime = await KubernetesRuntime.create({
    kubeConfig,
    config: {
      namespace,
      pollIntervalMs: 50,
      watchRetryMs: 50,
      stopTimeoutMs: 1_500,
      runAsUser: 33333,
      maxImagePullFailures: 2,
      maxPodRejections: 1,
      podRejectionBackoffMs: 0,
      defaultImage: { image: 'registry.example/workbay/manager:0.1.0', command: ['node', '/opt/dw.js'] },
      ...over,
    },
  });
  runtimes.push(runtime);
  return runtime;
}

let n = 0;
function spec(over: Partial<RuntimeWorkspaceSpec> = {}): RuntimeWorkspaceSpec {
  n++;
  const contentDir = `/var/lib/workbay/workspaces/0f8fad5b-${n}`;
  return {
    instanceId: `0f8fad5b-d9cb-469f-a165-7086772895${String(n).padStart(2, '0')}`,
    workspaceId: `ws-K8s-${n}`,
    owner: 'alice@example.com',
    image: 'ghcr.io/acme/ide:1',
    url: `http://ws-${n}.example`,
    headless: false,
    type: 'regular',
    contentDir,
    env: { WORKBAY_WORKSPACE_ID: `ws-k8s-${n}`, WORKBAY_REPO_ROOT: `${contentDir}/repo`, OTHER: '/elsewhere' },
    ports: [23000, 3000],
    className: 'g1-standard',
    resources: { cpu: 2, memoryBytes: 4 * 1024 ** 3, pids: 2048, diskBytes: 10 * 1024 ** 3 },
    nodeName: 'node-a',
    ...over,
  };
}

const podPath = (name: string): string => `/api/v1/namespaces/${namespace}/pods/${name}`;

async function readPod(name: string): Promise<V1Pod | undefined> {
  const r = await cluster.request<V1Pod>('GET', podPath(name));
  return r.status === 404 ? undefined : r.body;
}

/** The kubelet's status report (a merge patch of the status subresource). */
async function report(name: string, status: V1PodStatus): Promise<void> {
  const r = await cluster.request('PATCH', `${podPath(name)}/status`, { status });
  expect(r.status, JSON.stringify(r.body).slice(0, 300)).toBe(200);
}

const runningStatus: V1PodStatus = {
  phase: 'Running',
  podIP: '10.244.1.7',
  podIPs: [{ ip: '10.244.1.7' }],
  hostIP: '192.168.50.2',
  hostIPs: [{ ip: '192.168.50.2' }],
  conditions: [{ type: 'Ready', status: 'True' }],
  containerStatuses: [
    { name: 'workspace', ready: true, restartCount: 0, image: 'x', imageID: 'x', state: { running: {} } },
  ],
};

const terminated = (exitCode: number, reason: string, message?: string): V1PodStatus => ({
  phase: 'Failed',
  containerStatuses: [
    {
      name: 'workspace',
      ready: false,
      restartCount: 0,
      image: 'x',
      imageID: 'x',
      state: { terminated: { exitCode, reason, message, startedAt: new Date() } },
    },
  ],
});

const waitingFor = (reason: string, message: string): V1PodStatus => ({
  phase: 'Pending',
  containerStatuses: [
    {
      name: 'workspace',
      ready: false,
      restartCount: 0,
      image: 'x',
      imageID: '',
      state: { waiting: { reason, message } },
    },
  ],
});

/** What the kubelet does once the containers stopped: the final deletion. */
async function finishDeletion(name: string): Promise<void> {
  await until(async () => Boolean((await readPod(name))?.metadata?.deletionTimestamp));
  await cluster.request('DELETE', `${podPath(name)}?gracePeriodSeconds=0`);
}

async function until(check: () => Promise<boolean> | boolean, what = 'condition'): Promise<void> {
  for (let i = 0; i < 600; i++) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`${what} not reached`);
}

const next = (runtime: KubernetesRuntime, type: RuntimeEvent['type'], instanceId: string): Promise<RuntimeEvent> =>
  firstValueFrom(
    runtime.events$.pipe(
      filter((e) => e.type === type && e.instanceId === instanceId),
      take(1),
    ),
  );

describe('KubernetesRuntime on a real API server', () => {
  it('creates a pod the API server accepts: labels, env as the container sees it, ports, limits, probe, node', async () => {
    const runtime = await newRuntime();
    const s = spec();
    const state = await runtime.start(s);
    expect(state).toMatchObject({ instanceId: s.instanceId, status: 'starting', podName: podName(s.instanceId) });
    const pod = (await readPod(podName(s.instanceId)))!;
    expect(pod.metadata!.labels).toMatchObject({
      'app.kubernetes.io/managed-by': 'workbay',
      'app.kubernetes.io/component': 'workspace',
      'workbay.dev/instance-id': s.instanceId,
      'workbay.dev/owner': 'alice-example.com',
    });
    expect(pod.spec!.nodeName).toBe('node-a');
    expect(pod.spec!.securityContext).toMatchObject({ runAsUser: 33333, runAsNonRoot: true });
    expect(pod.spec!.automountServiceAccountToken).toBe(false);
    // A lost node's pods are evicted after 60 s (not Kubernetes' 300 s): the eviction tells the runtime.
    expect(pod.spec!.tolerations).toEqual(
      expect.arrayContaining([
        { key: 'node.kubernetes.io/unreachable', operator: 'Exists', effect: 'NoExecute', tolerationSeconds: 60 },
        { key: 'node.kubernetes.io/not-ready', operator: 'Exists', effect: 'NoExecute', tolerationSeconds: 60 },
      ]),
    );
    const c = pod.spec!.containers[0]!;
    expect(c.image).toBe('ghcr.io/acme/ide:1');
    const env = Object.fromEntries(c.env!.map((e) => [e.name, e.value]));
    // The container sees the content at the mount path, not at the node's path.
    expect(env).toMatchObject({ WORKBAY_REPO_ROOT: '/workspace/repo', OTHER: '/elsewhere', PORT: '23000' });
    expect(c.ports!.map((p) => p.containerPort)).toEqual([23000, 3000]);
    expect(c.resources!.limits).toMatchObject({ cpu: '2', memory: String(4 * 1024 ** 3) });
    expect(c.readinessProbe!.tcpSocket!.port).toBe(23000);
    expect(pod.spec!.volumes![0]!.hostPath!.path).toBe(s.contentDir);
    await expect(runtime.start(s)).rejects.toMatchObject({ code: 'already-exists' });
  });

  it('maps the built-in default image to defaultImage, and refuses to send it unmapped', async () => {
    const runtime = await newRuntime();
    const s = spec({ image: 'workbay/default' });
    await runtime.start(s);
    const c = (await readPod(podName(s.instanceId)))!.spec!.containers[0]!;
    expect(c).toMatchObject({ image: 'registry.example/workbay/manager:0.1.0', command: ['node', '/opt/dw.js'] });

    const bare = await newRuntime({ defaultImage: undefined });
    const t = spec({ image: 'workbay/default' });
    const refused = bare.start(t);
    await expect(refused).rejects.toBeInstanceOf(FailedPreconditionError);
    await expect(refused).rejects.toThrow(/runtime\.kubernetes\.defaultImage/);
    expect(await readPod(podName(t.instanceId))).toBeUndefined();
  });

  it('reports ready with the pod name and the node IP; stops once the kubelet confirms', async () => {
    const runtime = await newRuntime();
    const s = spec();
    const name = podName(s.instanceId);
    const ready = next(runtime, 'ready', s.instanceId);
    await runtime.start(s);
    await report(name, runningStatus);
    expect((await ready).state).toMatchObject({
      status: 'running',
      ready: true,
      podName: name,
      nodeName: 'node-a',
      host: '10.244.1.7',
      nodeIp: '192.168.50.2',
    });
    expect(await runtime.inspect(s.instanceId)).toMatchObject({ status: 'running', nodeIp: '192.168.50.2' });
    expect((await runtime.list()).map((x) => x.instanceId)).toContain(s.instanceId);

    const exited = next(runtime, 'exited', s.instanceId);
    const stopped = runtime.stop(s.instanceId, { gracePeriodMs: 30_000 });
    await until(async () => (await readPod(name))?.metadata?.deletionGracePeriodSeconds === 30, 'graceful delete');
    await finishDeletion(name);
    await stopped;
    expect((await exited).state.failure).toBeUndefined();
    expect(await runtime.inspect(s.instanceId)).toBeUndefined();
    await runtime.stop(s.instanceId, { gracePeriodMs: 1000 });
  });

  it('instance ids that differ only in case or punctuation get pods of their own; a stop of one leaves the others (red team round 12, N2)', async () => {
    const runtime = await newRuntime();
    const alice = spec({ instanceId: 'a1' });
    await runtime.start(alice);
    await report(podName('a1'), runningStatus);
    const ids = ['A1', 'a.1', 'a_1', `a1${'x'.repeat(70)}`, `a1${'x'.repeat(70)}y`];
    const names = new Set([podName('a1'), ...ids.map(podName)]);
    expect(names.size).toBe(ids.length + 1);
    for (const instanceId of ids) {
      // Before mallory's pod exists: nothing of alice's is reported or stopped under his id.
      expect(await runtime.inspect(instanceId)).toBeUndefined();
      await runtime.stop(instanceId, { gracePeriodMs: 1000 });
      expect((await readPod(podName('a1')))?.metadata?.deletionTimestamp).toBeUndefined();
      const state = await runtime.start(spec({ instanceId, owner: 'mallory' }));
      expect(state.podName).toBe(podName(instanceId));
      expect((await readPod(podName(instanceId)))?.metadata?.annotations?.['workbay.dev/instance-id']).toBe(instanceId);
    }
    expect(await runtime.inspect('a1')).toMatchObject({ instanceId: 'a1', status: 'running' });
  });

  it('a stop the kubelet never confirms fails UNAVAILABLE after stopTimeoutMs and leaves the pod (never force-deleted)', async () => {
    const runtime = await newRuntime();
    const s = spec();
    const name = podName(s.instanceId);
    await runtime.start(s);
    await report(name, runningStatus);
    const failed = runtime.stop(s.instanceId, { gracePeriodMs: 0 });
    await expect(failed).rejects.toBeInstanceOf(UnavailableError);
    await expect(failed).rejects.toThrow(/did not confirm .* it was not force-deleted/);
    // Still there: even "grace 0" was sent as 1 s, so the API server kept the object for the kubelet to confirm.
    const pod = await readPod(name);
    expect(pod?.metadata?.deletionTimestamp).toBeTruthy();
    expect(pod?.metadata?.deletionGracePeriodSeconds).toBe(1);

    // Shutdown does not wait for a stop under way: closing the runtime ends it, and so does the caller's signal.
    const slow = await newRuntime({ stopTimeoutMs: 600_000 });
    const u = spec();
    await slow.start(u);
    const pending = slow.stop(u.instanceId, { gracePeriodMs: 5_000 });
    await until(async () => Boolean((await readPod(podName(u.instanceId)))?.metadata?.deletionTimestamp));
    await slow.close();
    await expect(pending).rejects.toThrow(/interrupted/);
    const other = await newRuntime({ stopTimeoutMs: 600_000 });
    const controller = new AbortController();
    const aborted = other.stop(u.instanceId, { gracePeriodMs: 5_000, signal: controller.signal });
    controller.abort();
    await expect(aborted).rejects.toThrow(/interrupted/);
    expect(await readPod(podName(u.instanceId))).toBeDefined();
  });

  it('a pod deleted from outside fails the workspace at once, while the pod is still terminating', async () => {
    const runtime = await newRuntime();
    const s = spec();
    const name = podName(s.instanceId);
    const ready = next(runtime, 'ready', s.instanceId);
    await runtime.start(s);
    await report(name, runningStatus);
    await ready;
    const exited = next(runtime, 'exited', s.instanceId);
    await cluster.request('DELETE', `${podPath(name)}?gracePeriodSeconds=1800`);
    const event = await exited;
    expect(event.state).toMatchObject({ status: 'exited', ready: false });
    expect(event.state.failure).toMatch(/was deleted by someone other than Workbay \(grace period 1800s\)/);
    expect((await readPod(name))?.metadata?.deletionTimestamp).toBeTruthy();
  });

  it('fails workspaces from the pod status: OOM, exit code, pull errors (counted), eviction, node loss, taint eviction', async () => {
    const runtime = await newRuntime();
    const [oom, exit, pull, evicted, lost, tainted] = [spec(), spec(), spec(), spec(), spec(), spec()];
    for (const x of [oom, exit, pull, evicted, lost, tainted]) await runtime.start(x);
    const exits = [oom, exit, pull, evicted, lost, tainted].map((x) => next(runtime, 'exited', x.instanceId));
    await report(podName(oom.instanceId), terminated(137, 'OOMKilled'));
    await report(podName(exit.instanceId), terminated(2, 'Error', 'boot\nno config'));
    // One failed pull, its back-off, then a second failed pull: two attempts reach maxImagePullFailures.
    await report(podName(pull.instanceId), waitingFor('ErrImagePull', 'manifest unknown'));
    await until(async () => (await runtime.inspect(pull.instanceId))?.status === 'starting');
    await report(podName(pull.instanceId), waitingFor('ImagePullBackOff', 'Back-off pulling image'));
    await report(podName(pull.instanceId), waitingFor('ErrImagePull', 'manifest unknown'));
    await report(podName(evicted.instanceId), {
      phase: 'Failed',
      reason: 'Evicted',
      message: 'The node was low on resource: memory.',
    });
    await report(podName(lost.instanceId), {
      ...runningStatus,
      conditions: [{ type: 'Ready', status: 'False', reason: 'NodeLost', message: 'Node is unresponsive' }],
    });
    // The node controller's eviction of a pod on a tainted node: a DisruptionTarget condition, then the deletion.
    await report(podName(tainted.instanceId), {
      ...runningStatus,
      conditions: [
        { type: 'Ready', status: 'False' },
        {
          type: 'DisruptionTarget',
          status: 'True',
          reason: 'DeletionByTaintManager',
          message: 'Taint manager: deleting due to NoExecute taint',
        },
      ],
    });
    await cluster.request('DELETE', `${podPath(podName(tainted.instanceId))}?gracePeriodSeconds=30`);
    const [eOom, eExit, ePull, eEvicted, eLost, eTainted] = await Promise.all(exits);
    expect(eOom!.state.failure).toMatch(/^out of memory/);
    expect(eExit!.state).toMatchObject({
      exitCode: 2,
      failure: 'the workspace container exited with code 2: no config',
    });
    expect(ePull!.state.failure).toBe('cannot pull image (2 attempts): manifest unknown');
    expect(eEvicted!.state.failure).toBe('the workspace pod was evicted: The node was low on resource: memory.');
    expect(eLost!.state.failure).toBe("the workspace's node node-a is unreachable: Node is unresponsive");
    expect(eTainted!.state.failure).toBe(
      "the workspace's node node-a is gone; the pod was deleted by the node controller (DeletionByTaintManager)",
    );
  });

  it('re-creates a pod the kubelet rejected, bounded by maxPodRejections', async () => {
    const runtime = await newRuntime();
    const s = spec();
    const name = podName(s.instanceId);
    await runtime.start(s);
    const first = (await readPod(name))!.metadata!.uid;
    const rejected: V1PodStatus = {
      phase: 'Failed',
      reason: 'OutOfcpu',
      message: "Pod was rejected: Node didn't have enough resource: cpu",
    };
    await report(name, rejected);
    await until(async () => {
      const pod = await readPod(name);
      return Boolean(pod && pod.metadata!.uid !== first && !pod.status?.reason);
    }, 're-created pod');
    const second = (await readPod(name))!;
    expect(second.metadata!.annotations!['workbay.dev/pod-rejections']).toBe('1');
    expect(second.spec!.nodeName).toBe('node-a');
    // Rejected again: maxPodRejections (1) is used up, the workspace fails.
    const exited = next(runtime, 'exited', s.instanceId);
    await report(name, rejected);
    expect((await exited).state.failure).toMatch(
      /kubelet rejected the workspace pod \(OutOfcpu\).*rejected 2 times; giving up/,
    );
  });

  it('a replica that does not lead leaves a rejected pod alone', async () => {
    const follower = await newRuntime({ maxPodRejections: 3 });
    follower.followLeader(() => false);
    const followerEvents: RuntimeEvent[] = [];
    follower.events$.subscribe((e) => followerEvents.push(e));
    const s = spec();
    const name = podName(s.instanceId);
    await follower.start(s);
    const uid = (await readPod(name))!.metadata!.uid;
    await report(name, { phase: 'Failed', reason: 'NodeAffinity', message: 'Predicate NodeAffinity failed' });
    // Another runtime that sees the same change acts as the leader; the follower's pod object stays the same.
    const leader = await newRuntime({ maxPodRejections: 3 });
    // A new pod, not the moment between the deletion and the re-creation (no pod at all: a CI run read that).
    await until(async () => {
      const pod = await readPod(name);
      return pod !== undefined && pod.metadata?.uid !== uid;
    }, 'leader re-created the pod');
    await leader.close();
    expect((await readPod(name))!.metadata!.annotations!['workbay.dev/pod-rejections']).toBe('1');
    // The follower neither acted nor reported the rejection as the workspace's end.
    expect(followerEvents.filter((e) => e.type === 'exited')).toEqual([]);
  });

  it('keeps watching across an API server restart', async () => {
    const runtime = await newRuntime();
    const s = spec();
    const name = podName(s.instanceId);
    await runtime.start(s);
    const streams = runtime.watchStats.streams;
    await cluster.restartApiServer();
    const ready = next(runtime, 'ready', s.instanceId);
    await report(name, runningStatus);
    expect((await ready).state).toMatchObject({ status: 'running', podName: name });
    expect(runtime.watchStats.streams).toBeGreaterThan(streams);
    // A second runtime (a new leader) finds the pod as it is.
    const second = await newRuntime();
    expect(await second.inspect(s.instanceId)).toMatchObject({ status: 'running', ready: true });
  });
});
