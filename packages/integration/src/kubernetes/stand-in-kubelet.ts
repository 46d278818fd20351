/**
 * TEST ONLY: a small kubelet (and scheduler) for the Kubernetes integration specs, used while `@workbay/testing`
 * has no `startKubeletSimulator` (the harness prefers that one when it exists). It registers one daemon pod per
 * simulated node (label `app.kubernetes.io/name=workbay-daemon`, container port `grpc`), binds unbound workspace
 * pods to the node with the fewest pods, makes bound pods Running/Ready with a distinct loopback pod IP (serving
 * HTTP on every container port when asked), and finishes deletions (`gracePeriodSeconds=0`), as a kubelet does.
 * It re-lists and re-watches whenever its watch ends, so it survives an API server restart.
 */
import { createServer } from 'node:http';
import type { Server } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import type { KubernetesObject, KubernetesTestCluster, KubernetesWatch } from '@workbay/testing';

export interface StandInKubeletOptions {
  readonly cluster: KubernetesTestCluster;
  readonly namespace: string;
  /** Node name → the gRPC address (`127.0.0.1:<port>`) of that node's real daemon. */
  readonly daemons: ReadonlyMap<string, string>;
  /** Serve HTTP on podIP:containerPort for every workspace pod (the proxy tests need it; the bench does not). */
  readonly serveWorkspaces?: boolean;
  /** How long a bound pod stays Pending before it runs (an image pull, say); default 0. */
  readonly startDelayMs?: number;
}

export interface StandInKubelet {
  readonly nodes: readonly string[];
  /** How many times each pod name was made Running (a pod created twice counts twice). */
  readonly runningCounts: ReadonlyMap<string, number>;
  stop(): Promise<void>;
}

interface Pod extends KubernetesObject {
  spec?: { nodeName?: string; containers?: { name: string; image?: string; ports?: { containerPort: number }[] }[] };
  status?: { phase?: string; podIP?: string };
}

const workspaceSelector = 'app.kubernetes.io/managed-by=workbay,app.kubernetes.io/component=workspace';

export async function startStandInKubelet(options: StandInKubeletOptions): Promise<StandInKubelet> {
  const { cluster, namespace } = options;
  const nodes = [...options.daemons.keys()];
  const podsPath = `/api/v1/namespaces/${namespace}/pods`;
  const servers = new Map<string, Server[]>();
  const handled = new Map<string, string>(); // pod uid → what was done last ('bound' | 'running' | 'deleted')
  const runningCounts = new Map<string, number>();
  const load = new Map(nodes.map((n) => [n, 0]));
  let nextIp = 0;
  let stopped = false;
  let watch: KubernetesWatch | undefined;

  for (const [node, address] of options.daemons) {
    const port = Number(address.slice(address.lastIndexOf(':') + 1));
    const name = `workbay-daemon-${node}`;
    await cluster.request('POST', podsPath, {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name, labels: { 'app.kubernetes.io/name': 'workbay-daemon' } },
      spec: {
        nodeName: node,
        containers: [{ name: 'daemon', image: 'workbay/daemon:test', ports: [{ name: 'grpc', containerPort: port }] }],
      },
    });
    await patchRunning(name, '127.0.0.1');
  }

  async function patchRunning(name: string, ip: string): Promise<void> {
    const now = new Date().toISOString();
    const condition = (type: string) => ({ type, status: 'True', lastTransitionTime: now });
    const res = await cluster.request('PATCH', `${podsPath}/${name}/status`, {
      status: {
        phase: 'Running',
        podIP: ip,
        podIPs: [{ ip }],
        hostIP: '127.0.0.1',
        startTime: now,
        conditions: ['PodScheduled', 'Initialized', 'ContainersReady', 'Ready'].map(condition),
        containerStatuses: [
          {
            name: 'workspace',
            image: 'test',
            imageID: '',
            ready: true,
            started: true,
            restartCount: 0,
            state: { running: { startedAt: now } },
          },
        ],
      },
    });
    if (res.status >= 300 && res.status !== 404) throw new Error(`status of ${name}: ${res.status}`);
  }

  async function serve(pod: Pod, ip: string): Promise<void> {
    const name = pod.metadata!.name!;
    const list: Server[] = [];
    for (const port of (pod.spec?.containers ?? []).flatMap((c) => c.ports ?? [])) {
      const server = createServer((req, res) => {
        res.setHeader('content-type', 'application/json');
        res.end(JSON.stringify({ pod: name, node: pod.spec?.nodeName, port: port.containerPort, url: req.url }));
      });
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(port.containerPort, ip, () => resolve());
      });
      list.push(server);
    }
    servers.set(name, list);
  }

  function unserve(name: string): void {
    for (const server of servers.get(name) ?? []) {
      server.closeAllConnections();
      server.close();
    }
    servers.delete(name);
  }

  async function handle(pod: Pod): Promise<void> {
    const name = pod.metadata?.name ?? '';
    const uid = pod.metadata?.uid ?? '';
    if (pod.metadata?.deletionTimestamp) {
      if (handled.get(uid) === 'deleted') return;
      handled.set(uid, 'deleted');
      unserve(name);
      const node = pod.spec?.nodeName;
      if (node && load.has(node)) load.set(node, load.get(node)! - 1);
      await cluster.request('DELETE', `${podsPath}/${name}`, {
        apiVersion: 'v1',
        kind: 'DeleteOptions',
        gracePeriodSeconds: 0,
        preconditions: { uid },
      });
      return;
    }
    const node = pod.spec?.nodeName;
    if (!node) {
      if (handled.get(uid) === 'bound') return;
      handled.set(uid, 'bound');
      const target = [...load].sort((a, b) => a[1] - b[1] || a[0].localeCompare(b[0]))[0]![0];
      load.set(target, load.get(target)! + 1);
      await cluster.request('POST', `${podsPath}/${name}/binding`, {
        apiVersion: 'v1',
        kind: 'Binding',
        metadata: { name },
        target: { apiVersion: 'v1', kind: 'Node', name: target },
      });
      return;
    }
    if (!load.has(node) || pod.status?.phase === 'Running' || handled.get(uid) === 'running') return;
    if (handled.get(uid) !== 'bound') load.set(node, load.get(node)! + 1);
    handled.set(uid, 'running');
    if (options.startDelayMs) await sleep(options.startDelayMs);
    const n = ++nextIp;
    const ip = `127.${10 + nodes.indexOf(node)}.${Math.floor(n / 250)}.${(n % 250) + 2}`;
    if (options.serveWorkspaces) await serve(pod, ip);
    await patchRunning(name, ip);
    runningCounts.set(name, (runningCounts.get(name) ?? 0) + 1);
  }

  // Pods are handled one at a time per name, in the order their events came.
  const queues = new Map<string, Promise<void>>();
  const enqueue = (pod: Pod): void => {
    const name = pod.metadata?.name ?? '';
    const previous = queues.get(name) ?? Promise.resolve();
    const next = previous.then(() => handle(pod)).catch(() => undefined);
    queues.set(name, next);
    void next.then(() => {
      if (queues.get(name) === next) queues.delete(name);
    });
  };

  const loop = (async () => {
    while (!stopped) {
      try {
        const listed = await cluster.request<{ items: Pod[]; metadata: { resourceVersion: string } }>(
          'GET',
          `${podsPath}?labelSelector=${encodeURIComponent(workspaceSelector)}`,
        );
        if (listed.status !== 200) throw new Error(`list: ${listed.status}`);
        for (const pod of listed.body.items) enqueue(pod);
        watch = cluster.watch<Pod>(
          podsPath,
          (event) => {
            if (event.type === 'ADDED' || event.type === 'MODIFIED') enqueue(event.object);
            if (event.type === 'DELETED') unserve(event.object.metadata?.name ?? '');
          },
          { resourceVersion: listed.body.metadata.resourceVersion, labelSelector: workspaceSelector },
        );
        await watch.done;
      } catch {
        // Deliberate: a broken watch or an API server that is restarting: list again after a pause.
      }
      if (!stopped) await sleep(200);
    }
  })();

  return {
    nodes,
    runningCounts,
    stop: async () => {
      stopped = true;
      watch?.stop();
      await loop;
      for (const name of [...servers.keys()]) unserve(name);
    },
  };
}
