import { createServer } from 'node:net';
import { request as httpRequest } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startKubernetesCluster } from './cluster.js';
import type { KubernetesTestCluster } from './cluster.js';
import { startKubeletSimulator } from './kubelet.js';
import type { KubeletSimulator, KubeletSimulatorOptions } from './kubelet.js';
import type { SimPodObject } from './kubelet-status.js';

type Pod = SimPodObject & {
  status?: SimPodObject['status'] & {
    containerStatuses?: { name: string; state?: Record<string, { reason?: string; exitCode?: number }> }[];
  };
};

let cluster: KubernetesTestCluster;
let namespaces = 0;
const running: KubeletSimulator[] = [];
afterEach(async () => {
  await Promise.all(running.splice(0).map((kubelet) => kubelet.stop()));
});

beforeAll(async () => {
  cluster = await startKubernetesCluster();
});
afterAll(async () => {
  await cluster?.stop();
});

function workspacePod(name: string, ports: number[] = [23000]) {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: {
      name,
      labels: { 'app.kubernetes.io/managed-by': 'workbay', 'app.kubernetes.io/component': 'workspace' },
    },
    spec: {
      restartPolicy: 'Never',
      terminationGracePeriodSeconds: 30,
      containers: [
        { name: 'workspace', image: 'workbay/default', ports: ports.map((containerPort) => ({ containerPort })) },
      ],
    },
  };
}

/** A namespace and a simulator of its own per test (node names are cluster-wide, so they get a prefix too). */
async function setup(
  options: Partial<KubeletSimulatorOptions> = {},
): Promise<{ ns: string; kubelet: KubeletSimulator; nodes: string[] }> {
  const ns = `sim-${++namespaces}`;
  await cluster.apply([{ apiVersion: 'v1', kind: 'Namespace', metadata: { name: ns } }]);
  const nodes = [`${ns}-a`, `${ns}-b`];
  const kubelet = await startKubeletSimulator({ cluster, namespace: ns, nodes, ...options });
  running.push(kubelet);
  return { ns, kubelet, nodes };
}

async function createPod(ns: string, pod: object): Promise<Pod> {
  const res = await cluster.request<Pod>('POST', `/api/v1/namespaces/${ns}/pods`, pod);
  expect(res.status, JSON.stringify(res.body)).toBe(201);
  return res.body;
}

/** Polls the pod until `done` holds (or it is gone, when `done` accepts undefined); bounded, with the last state. */
async function waitForPod(ns: string, name: string, done: (pod: Pod | undefined) => boolean): Promise<Pod | undefined> {
  let last: Pod | undefined;
  for (let i = 0; i < 600; i++) {
    const res = await cluster.request<Pod>('GET', `/api/v1/namespaces/${ns}/pods/${name}`);
    last = res.status === 200 ? res.body : undefined;
    if (done(last)) return last;
    await sleep(50);
  }
  throw new Error(`pod ${ns}/${name} never reached the expected state; last: ${JSON.stringify(last?.status)}`);
}

const isReady = (pod: Pod | undefined): boolean =>
  pod?.status?.phase === 'Running' &&
  Boolean(pod.status.conditions?.some((c) => c.type === 'Ready' && c.status === 'True'));

function httpGet(host: string, port: number): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host, port, path: '/', timeout: 5_000, agent: false }, (res) => {
      let body = '';
      res.on('data', (chunk: Buffer) => (body += chunk.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

describe('startKubeletSimulator on a real API server', () => {
  it('binds unscheduled pods round-robin and runs them Running/Ready with distinct pod IPs', async () => {
    const env = await setup();
    await createPod(env.ns, workspacePod('ws-1'));
    await createPod(env.ns, workspacePod('ws-2'));
    const one = (await waitForPod(env.ns, 'ws-1', isReady))!;
    const two = (await waitForPod(env.ns, 'ws-2', isReady))!;
    expect(new Set([one.spec.nodeName, two.spec.nodeName])).toEqual(new Set(env.nodes));
    expect(one.status!.podIP).toMatch(/^127\.0\.\d+\.\d+$/);
    expect(one.status!.podIP).not.toBe(two.status!.podIP);
    expect(one.status!.hostIP).toBe('127.0.0.1');
    const types = one.status!.conditions!.filter((c) => c.status === 'True').map((c) => c.type);
    expect(types).toEqual(expect.arrayContaining(['PodScheduled', 'Initialized', 'ContainersReady', 'Ready']));
    expect(one.status!.containerStatuses![0]!.state).toHaveProperty('running');
    const nodes = await cluster.request<{ status: { conditions: { type: string; status: string }[] } }>(
      'GET',
      `/api/v1/nodes/${env.nodes[0]}`,
    );
    expect(nodes.body.status.conditions).toContainEqual(expect.objectContaining({ type: 'Ready', status: 'True' }));
    expect(
      env.kubelet
        .pods()
        .map((p) => p.name)
        .sort(),
    ).toEqual(['ws-1', 'ws-2']);
    expect(env.kubelet.errors()).toEqual([]);
  });

  it('finishes a graceful deletion: the pod ends terminated and the object is gone', async () => {
    const env = await setup();
    await createPod(env.ns, workspacePod('ws-del'));
    await waitForPod(env.ns, 'ws-del', isReady);
    const phases: string[] = [];
    let deleted!: () => void;
    const gone = new Promise<void>((resolve) => (deleted = resolve));
    const watch = cluster.watch<Pod>(`/api/v1/namespaces/${env.ns}/pods`, (e) => {
      if (e.type === 'MODIFIED') phases.push(e.object.status?.phase ?? '');
      if (e.type === 'DELETED') deleted();
    });
    const res = await cluster.request('DELETE', `/api/v1/namespaces/${env.ns}/pods/ws-del`, { gracePeriodSeconds: 30 });
    expect(res.status).toBe(200);
    await gone;
    watch.stop();
    expect(phases).toContain('Succeeded');
    expect(env.kubelet.errors()).toEqual([]);
  });

  it('leaves a deletion unconfirmed with confirmDeletions: false', async () => {
    const env = await setup({ confirmDeletions: false });
    await createPod(env.ns, workspacePod('ws-stuck'));
    await waitForPod(env.ns, 'ws-stuck', isReady);
    await cluster.request('DELETE', `/api/v1/namespaces/${env.ns}/pods/ws-stuck`, { gracePeriodSeconds: 30 });
    // Another pod's full lifecycle proves the simulator kept working meanwhile.
    await createPod(env.ns, workspacePod('ws-other'));
    await waitForPod(env.ns, 'ws-other', isReady);
    const stuck = await waitForPod(env.ns, 'ws-stuck', (pod) => Boolean(pod?.metadata.deletionTimestamp));
    expect(stuck!.status!.phase).toBe('Running');
  });

  it('injects OOMKilled, Error, image pull errors and eviction', async () => {
    const env = await setup();
    for (const name of ['ws-oom', 'ws-err', 'ws-pull', 'ws-evict']) await createPod(env.ns, workspacePod(name));
    for (const name of ['ws-oom', 'ws-err', 'ws-pull', 'ws-evict']) await waitForPod(env.ns, name, isReady);
    await env.kubelet.failPod('ws-oom', { reason: 'OOMKilled' });
    await env.kubelet.failPod('ws-err', { reason: 'Error', exitCode: 3 });
    await env.kubelet.imagePullError('ws-pull');
    await env.kubelet.evict('ws-evict');
    const get = async (name: string) =>
      (await cluster.request<Pod>('GET', `/api/v1/namespaces/${env.ns}/pods/${name}`)).body;
    const oom = await get('ws-oom');
    expect(oom.status!.phase).toBe('Failed');
    expect(oom.status!.containerStatuses![0]!.state!['terminated']).toMatchObject({
      reason: 'OOMKilled',
      exitCode: 137,
    });
    const err = await get('ws-err');
    expect(err.status!.containerStatuses![0]!.state!['terminated']).toMatchObject({ reason: 'Error', exitCode: 3 });
    const pull = await get('ws-pull');
    expect(pull.status!.phase).toBe('Pending');
    expect(pull.status!.containerStatuses![0]!.state!['waiting']).toMatchObject({ reason: 'ErrImagePull' });
    const evicted = await get('ws-evict');
    expect(evicted.status).toMatchObject({ phase: 'Failed', reason: 'Evicted' });
    expect(evicted.status!.conditions).toContainEqual(
      expect.objectContaining({ type: 'DisruptionTarget', status: 'True' }),
    );
    // A failed pod deleted later is still cleaned up.
    await cluster.request('DELETE', `/api/v1/namespaces/${env.ns}/pods/ws-oom`, { gracePeriodSeconds: 30 });
    await waitForPod(env.ns, 'ws-oom', (pod) => pod === undefined);
    await expect(env.kubelet.failPod('no-such-pod', { reason: 'Error' })).rejects.toThrow(/no workspace pod/);
    expect(env.kubelet.errors()).toEqual([]);
  });

  it('cycles ErrImagePull and ImagePullBackOff for an image the nodes cannot pull, never Running', async () => {
    const env = await setup({ imagePullFailure: (image) => (image.startsWith('nope/') ? 'ErrImagePull' : undefined) });
    const reasons: string[] = [];
    let thirdAttempt!: () => void;
    const attempts = new Promise<void>((resolve) => (thirdAttempt = resolve));
    const watch = cluster.watch<Pod>(`/api/v1/namespaces/${env.ns}/pods`, (e) => {
      const pod = e.object;
      reasons.push(
        pod.status?.phase === 'Running'
          ? 'Running'
          : (pod.status?.containerStatuses?.[0]?.state?.['waiting']?.reason ?? ''),
      );
      if (reasons.filter((r) => r === 'ErrImagePull').length === 3) thirdAttempt();
    });
    const pod = workspacePod('ws-nope');
    await createPod(env.ns, {
      ...pod,
      spec: { ...pod.spec, containers: [{ ...pod.spec.containers[0], image: 'nope/image:1' }] },
    });
    await attempts;
    watch.stop();
    const seen = reasons.filter((r) => r === 'ErrImagePull' || r === 'ImagePullBackOff');
    expect(seen.slice(0, 5)).toEqual([
      'ErrImagePull',
      'ImagePullBackOff',
      'ErrImagePull',
      'ImagePullBackOff',
      'ErrImagePull',
    ]);
    expect(reasons).not.toContain('Running');
    await cluster.request('DELETE', `/api/v1/namespaces/${env.ns}/pods/ws-nope`, { gracePeriodSeconds: 30 });
    await waitForPod(env.ns, 'ws-nope', (p) => p === undefined);
    expect(env.kubelet.errors()).toEqual([]);
  });

  it('runs a daemon per node, loses a node (pods deleted, daemon stopped) and brings it back', async () => {
    const daemons: { node: string; stopped: boolean }[] = [];
    const env = await setup({
      startDaemon: async (node) => {
        const server = createServer((socket) => socket.end());
        await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
        const entry = { node, stopped: false };
        daemons.push(entry);
        return {
          host: '127.0.0.1',
          port: (server.address() as { port: number }).port,
          stop: async () => {
            entry.stopped = true;
            await new Promise<void>((resolve) => server.close(() => resolve()));
          },
        };
      },
    });
    const [a, b] = env.nodes as [string, string];
    const daemonPod = async (node: string) =>
      (await cluster.request<Pod>('GET', `/api/v1/namespaces/${env.ns}/pods/workbay-daemon-${node}`)).body;
    const podA = await daemonPod(a);
    expect(podA.metadata.labels).toMatchObject({ 'app.kubernetes.io/name': 'workbay-daemon' });
    expect(podA.spec.nodeName).toBe(a);
    expect(podA.spec.containers[0]!.ports).toEqual([
      { name: 'grpc', containerPort: env.kubelet.daemon(a)!.port, protocol: 'TCP' },
    ]);
    expect(isReady(podA)).toBe(true);
    expect(podA.status!.podIP).toBe('127.0.0.1');

    await createPod(env.ns, { ...workspacePod('ws-a'), spec: { ...workspacePod('ws-a').spec, nodeName: a } });
    await waitForPod(env.ns, 'ws-a', isReady);
    await env.kubelet.loseNode(a);
    await waitForPod(env.ns, 'ws-a', (pod) => pod === undefined);
    expect(daemons.find((d) => d.node === a)!.stopped).toBe(true);
    expect(env.kubelet.daemon(a)).toBeUndefined();
    expect(isReady(await daemonPod(a))).toBe(false);
    const node = await cluster.request<{
      spec: { taints: { key: string }[] };
      status: { conditions: { type: string; status: string }[] };
    }>('GET', `/api/v1/nodes/${a}`);
    expect(node.body.status.conditions).toContainEqual(expect.objectContaining({ type: 'Ready', status: 'Unknown' }));
    expect(node.body.spec.taints.map((t) => t.key)).toContain('node.kubernetes.io/unreachable');
    // Nothing is scheduled to the lost node.
    for (const name of ['ws-n1', 'ws-n2']) await createPod(env.ns, workspacePod(name));
    for (const name of ['ws-n1', 'ws-n2']) expect((await waitForPod(env.ns, name, isReady))!.spec.nodeName).toBe(b);

    await env.kubelet.setNodeReady(a);
    expect(isReady(await daemonPod(a))).toBe(true);
    expect((await daemonPod(a)).spec.containers[0]!.ports![0]!.containerPort).toBe(env.kubelet.daemon(a)!.port);
    await createPod(env.ns, { ...workspacePod('ws-back'), spec: { ...workspacePod('ws-back').spec, nodeName: a } });
    await waitForPod(env.ns, 'ws-back', isReady);
    await env.kubelet.stop();
    expect(daemons.every((d) => d.stopped)).toBe(true);
    expect(env.kubelet.errors()).toEqual([]);
  });

  it('serves every container port on the pod IP with serveWorkspaces, until the pod is deleted', async () => {
    const env = await setup({ serveWorkspaces: true });
    await createPod(env.ns, workspacePod('ws-web', [23000, 3000]));
    const pod = (await waitForPod(env.ns, 'ws-web', isReady))!;
    const ip = pod.status!.podIP!;
    expect(await httpGet(ip, 23000)).toEqual({ status: 200, body: 'ws-web' });
    expect(await httpGet(ip, 3000)).toEqual({ status: 200, body: 'ws-web' });
    await cluster.request('DELETE', `/api/v1/namespaces/${env.ns}/pods/ws-web`, { gracePeriodSeconds: 30 });
    await waitForPod(env.ns, 'ws-web', (p) => p === undefined);
    await expect(httpGet(ip, 3000)).rejects.toThrow(/ECONNREFUSED/);
  });

  it('reports ContainerCreating first with readyDelayMs', async () => {
    const env = await setup({ readyDelayMs: 300 });
    const seen: string[] = [];
    const watch = cluster.watch<Pod>(`/api/v1/namespaces/${env.ns}/pods`, (e) => {
      const waiting = e.object.status?.containerStatuses?.[0]?.state?.['waiting']?.reason;
      seen.push(waiting ? `${e.object.status?.phase}/${waiting}` : (e.object.status?.phase ?? ''));
    });
    await createPod(env.ns, workspacePod('ws-slow'));
    await waitForPod(env.ns, 'ws-slow', isReady);
    // The pod is read ready by a GET, which can come before the watch delivers the same change.
    await expect.poll(() => seen.includes('Running'), { timeout: 10_000 }).toBe(true);
    watch.stop();
    expect(seen.indexOf('Pending/ContainerCreating')).toBeGreaterThanOrEqual(0);
    expect(seen.indexOf('Pending/ContainerCreating')).toBeLessThan(seen.indexOf('Running'));
  });

  it('keeps working across an API server restart (watch resumed or relisted)', async () => {
    const env = await setup();
    await createPod(env.ns, workspacePod('ws-before'));
    await waitForPod(env.ns, 'ws-before', isReady);
    const watchesBefore = env.kubelet.watchStats.watches;
    await cluster.restartApiServer();
    await createPod(env.ns, workspacePod('ws-after'));
    await waitForPod(env.ns, 'ws-after', isReady);
    expect(env.kubelet.watchStats.watches).toBeGreaterThan(watchesBefore);
    await cluster.request('DELETE', `/api/v1/namespaces/${env.ns}/pods/ws-before`, { gracePeriodSeconds: 30 });
    await waitForPod(env.ns, 'ws-before', (pod) => pod === undefined);
    expect(env.kubelet.errors()).toEqual([]);
  });
});
