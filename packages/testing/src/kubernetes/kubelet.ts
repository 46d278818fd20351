import type { Server } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import { ListWatcher, LoopbackAllocator, SimulatorClient, closeServers, servePorts } from './kubelet-support.js';
import {
  creatingStatus,
  imagePullErrorStatus,
  nodeLostConditions,
  runningStatus,
  terminatedStatus,
} from './kubelet-status.js';
import type { SimPodObject } from './kubelet-status.js';
import { SimulatedNodes } from './kubelet-nodes.js';
import type { SimulatedDaemon } from './kubelet-nodes.js';

import type { KubeletPodFailure, KubeletSimulator, KubeletSimulatorOptions, SimulatedPod } from './kubelet-types.js';

export type { SimulatedDaemon } from './kubelet-nodes.js';
export type { KubeletPodFailure, KubeletSimulator, KubeletSimulatorOptions, SimulatedPod } from './kubelet-types.js';

const workspaceSelector = 'app.kubernetes.io/managed-by=workbay,app.kubernetes.io/component=workspace';
const hostIP = '127.0.0.1';

interface PodState {
  pod: SimPodObject;
  node?: string;
  podIP?: string;
  phase?: string;
  servers: Server[];
  started: boolean;
  binding: boolean;
  confirming: boolean;
  /** A fault was injected or the pod ended: the normal start must not overwrite it. */
  settled: boolean;
  /** The next pull attempt of a failing image. */
  pullTimer?: NodeJS.Timeout;
  gone: boolean;
  queue: Promise<void>;
}

/**
 * Starts a kubelet simulator on a real API server: creates Ready nodes (and a daemon per node through
 * `startDaemon`), binds and runs workspace pods, finishes deletions, and injects faults on request.
 *
 * ```ts
 * const kubelet = await startKubeletSimulator({ cluster, namespace: 'workbay', nodes: ['node-a', 'node-b'] });
 * // ... create workspace pods; they become Running/Ready with podIP 127.0.x.y
 * await kubelet.failPod('ws-1', { reason: 'OOMKilled' });
 * await kubelet.stop();
 * ```
 */
export async function startKubeletSimulator(options: KubeletSimulatorOptions): Promise<KubeletSimulator> {
  const sim = new Simulator(options);
  try {
    await sim.start();
  } catch (error) {
    await sim.stop();
    throw error;
  }
  return sim;
}

class Simulator implements KubeletSimulator {
  readonly nodes: readonly string[];
  private readonly ns: string;
  private readonly podsPath: string;
  private readonly states = new Map<string, PodState>();
  private readonly client: SimulatorClient;
  private readonly addresses = new LoopbackAllocator();
  private readonly nodeSet: SimulatedNodes;
  private readonly watcher: ListWatcher<SimPodObject>;
  private roundRobin = 0;
  private stopped = false;

  constructor(private readonly options: KubeletSimulatorOptions) {
    for (const node of options.nodes) {
      if (!/^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/.test(node)) throw new Error(`invalid node name ${node.slice(0, 70)}`);
    }
    if (new Set(options.nodes).size !== options.nodes.length) throw new Error('node names must be distinct');
    this.nodes = [...options.nodes];
    this.ns = options.namespace;
    this.podsPath = `/api/v1/namespaces/${encodeURIComponent(this.ns)}/pods`;
    this.client = new SimulatorClient(options.cluster, options.maxConcurrentRequests ?? 32);
    this.nodeSet = new SimulatedNodes({
      api: (method, path, body, requestOptions) => this.client.request(method, path, body, requestOptions),
      namespace: this.ns,
      hostIP,
      startDaemon: options.startDaemon,
    });
    this.watcher = new ListWatcher<SimPodObject>(options.cluster, this.podsPath, workspaceSelector, {
      onSync: (items) => this.onSync(items),
      onEvent: (type, pod) => (type === 'DELETED' ? this.forget(pod.metadata.uid) : this.observe(pod)),
      onError: (message) => this.client.problem(message),
    });
  }

  get watchStats() {
    return this.watcher.counters;
  }

  async start(): Promise<void> {
    await Promise.all(this.nodes.map((node) => this.nodeSet.add(node)));
    await this.watcher.start();
  }

  daemon(node: string): SimulatedDaemon | undefined {
    return this.nodeSet.daemon(node);
  }

  pods(): SimulatedPod[] {
    return [...this.states.values()].map((s) => ({
      name: s.pod.metadata.name,
      uid: s.pod.metadata.uid,
      node: s.pod.spec.nodeName,
      podIP: s.podIP,
      phase: s.phase ?? s.pod.status?.phase,
      deleting: Boolean(s.pod.metadata.deletionTimestamp),
    }));
  }

  errors(): readonly string[] {
    return [...this.client.problems];
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.client.stopped = true;
    await this.watcher.stop();
    for (const state of this.states.values()) clearTimeout(state.pullTimer);
    await Promise.all([...this.states.values()].map((s) => s.queue));
    await Promise.all([...this.states.values()].map((s) => closeServers(s.servers.splice(0))));
    await this.nodeSet.stopDaemons();
  }

  private async patchStatus(state: PodState, status: object, phase: string): Promise<boolean> {
    const path = `${this.podsPath}/${encodeURIComponent(state.pod.metadata.name)}/status`;
    const res = await this.client.request('PATCH', path, { status }, { contentType: 'application/merge-patch+json' });
    if (res.status === 404) return false;
    if (res.status !== 200) {
      this.client.problem(`PATCH ${path}: ${res.status} ${JSON.stringify(res.body).slice(0, 300)}`);
      return false;
    }
    state.phase = phase;
    return true;
  }

  // ---- the pod loop ----

  private onSync(items: SimPodObject[]): void {
    const present = new Set(items.map((p) => p.metadata.uid));
    for (const uid of [...this.states.keys()]) if (!present.has(uid)) this.forget(uid);
    for (const pod of items) this.observe(pod);
  }

  private enqueue(state: PodState, task: () => Promise<void>): Promise<void> {
    const run = state.queue.then(async () => {
      if (this.stopped) return;
      try {
        await task();
      } catch (error) {
        this.client.problem(`pod ${state.pod.metadata.name}: ${(error as Error).message.slice(0, 300)}`);
      }
    });
    state.queue = run;
    return run;
  }

  private observe(pod: SimPodObject): void {
    if (this.stopped) return;
    let state = this.states.get(pod.metadata.uid);
    if (!state) {
      state = {
        pod,
        servers: [],
        started: false,
        binding: false,
        confirming: false,
        settled: false,
        gone: false,
        queue: Promise.resolve(),
      };
      this.states.set(pod.metadata.uid, state);
    }
    state.pod = pod;
    const node = pod.spec.nodeName;
    if (!node) {
      if (this.options.schedule !== false && !pod.metadata.deletionTimestamp && !state.binding) {
        state.binding = true;
        void this.enqueue(state, () => this.bind(state));
      }
      return;
    }
    if (!this.nodeSet.isReady(node)) return;
    if (pod.metadata.deletionTimestamp) {
      if (this.options.confirmDeletions !== false && !state.confirming) {
        state.confirming = true;
        state.settled = true;
        void this.enqueue(state, () => this.confirmDeletion(state));
      }
      return;
    }
    if (!state.started) {
      state.started = true;
      void this.enqueue(state, () => this.run(state));
    }
  }

  private forget(uid: string): void {
    const state = this.states.get(uid);
    if (!state) return;
    state.gone = true;
    state.settled = true;
    clearTimeout(state.pullTimer);
    this.states.delete(uid);
    void closeServers(state.servers.splice(0));
  }

  private async bind(state: PodState): Promise<void> {
    const pod = state.pod;
    const candidates = this.nodes.filter(
      (node) =>
        this.nodeSet.isReady(node) &&
        Object.entries(pod.spec.nodeSelector ?? {}).every(([k, v]) => this.nodeSet.labels(node)[k] === v),
    );
    if (candidates.length === 0 || state.gone) {
      // Unschedulable for now: a node coming back (setNodeReady) looks at every pod again.
      state.binding = false;
      return;
    }
    const node = candidates[this.roundRobin++ % candidates.length]!;
    const res = await this.client.request('POST', `${this.podsPath}/${encodeURIComponent(pod.metadata.name)}/binding`, {
      apiVersion: 'v1',
      kind: 'Binding',
      metadata: { name: pod.metadata.name, uid: pod.metadata.uid },
      target: { apiVersion: 'v1', kind: 'Node', name: node },
    });
    // 409: bound meanwhile (by someone else); 404: gone. The watch shows either.
    if (res.status !== 201 && res.status !== 200 && res.status !== 409 && res.status !== 404) {
      this.client.problem(`bind ${pod.metadata.name}: ${res.status} ${JSON.stringify(res.body).slice(0, 300)}`);
    }
  }

  private async run(state: PodState): Promise<void> {
    const pod = state.pod;
    const phase = pod.status?.phase;
    if (phase === 'Failed' || phase === 'Succeeded') {
      state.settled = true;
      return;
    }
    const ready = pod.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True');
    if (phase === 'Running' && ready && pod.status?.podIP) {
      // Already running (the simulator or the API server restarted): adopt it as it is.
      state.podIP = pod.status.podIP;
      state.phase = 'Running';
      if (this.options.serveWorkspaces) state.servers = await this.serve(pod, state.podIP);
      return;
    }
    const delay = this.options.readyDelayMs ?? 0;
    if (delay > 0) {
      if (!(await this.patchStatus(state, creatingStatus(pod, hostIP), 'Pending'))) return;
      await sleep(delay);
    }
    if (state.settled || state.gone) return;
    const unpullable = this.unpullable(pod);
    if (unpullable) {
      state.settled = true;
      this.pullAttempt(state, unpullable.container, unpullable.reason, 0);
      return;
    }
    let podIP = this.addresses.next();
    if (this.options.serveWorkspaces) {
      for (let attempt = 0; ; attempt++) {
        try {
          state.servers = await servePorts(podIP, containerPorts(pod), pod.metadata.name);
          break;
        } catch (error) {
          // Another simulator (another test file) took this address and port: use the next address.
          if ((error as NodeJS.ErrnoException).code !== 'EADDRINUSE' || attempt > 50) throw error;
          podIP = this.addresses.next();
        }
      }
    }
    state.podIP = podIP;
    if (state.settled || state.gone) {
      await closeServers(state.servers.splice(0));
      return;
    }
    await this.patchStatus(state, runningStatus(pod, hostIP, podIP), 'Running');
  }

  private unpullable(
    pod: SimPodObject,
  ): { container: string; reason: 'ErrImagePull' | 'InvalidImageName' } | undefined {
    for (const c of pod.spec.containers) {
      const reason = this.options.imagePullFailure?.(c.image ?? '');
      if (reason) return { container: c.name, reason };
    }
    return undefined;
  }

  /** One failed pull (even steps) or back-off (odd steps), then the next after `pullBackoffMs`, until deletion. */
  private pullAttempt(state: PodState, container: string, reason: 'ErrImagePull' | 'InvalidImageName', step: number) {
    if (state.gone || state.confirming || this.stopped) return;
    const image = state.pod.spec.containers.find((c) => c.name === container)?.image ?? '';
    const [waiting, message] =
      reason === 'InvalidImageName'
        ? [reason, `Failed to apply default image tag "${image}": couldn't parse image name "${image}"`]
        : step % 2 === 0
          ? ['ErrImagePull', `rpc error: code = NotFound desc = failed to pull and unpack image "${image}": not found`]
          : ['ImagePullBackOff', `Back-off pulling image "${image}"`];
    void this.enqueue(state, async () => {
      if (state.gone || state.confirming) return;
      const status = imagePullErrorStatus(state.pod, hostIP, undefined, container, waiting, message);
      await this.patchStatus(state, status, 'Pending');
      if (reason === 'InvalidImageName' || this.stopped) return;
      state.pullTimer = setTimeout(
        () => this.pullAttempt(state, container, reason, step + 1),
        this.options.pullBackoffMs ?? 100,
      );
    });
  }

  private serve(pod: SimPodObject, podIP: string): Promise<Server[]> {
    return servePorts(podIP, containerPorts(pod), pod.metadata.name);
  }

  private async confirmDeletion(state: PodState): Promise<void> {
    const pod = state.pod;
    await closeServers(state.servers.splice(0));
    if (pod.status?.phase !== 'Failed' && pod.status?.phase !== 'Succeeded') {
      const exit = { reason: 'Completed', exitCode: 0 };
      if (!(await this.patchStatus(state, terminatedStatus(pod, hostIP, state.podIP, undefined, exit), 'Succeeded'))) {
        return;
      }
    }
    await this.client.forceDelete(this.podsPath, pod);
  }

  // ---- fault injection ----

  private stateOf(name: string): PodState {
    const matches = [...this.states.values()].filter((s) => s.pod.metadata.name === name && !s.gone);
    const state = matches.find((s) => !s.pod.metadata.deletionTimestamp) ?? matches[0];
    if (!state) throw new Error(`the kubelet simulator knows no workspace pod ${name.slice(0, 80)}`);
    return state;
  }

  private async inject(name: string, write: (state: PodState) => Promise<void>): Promise<void> {
    const state = this.stateOf(name);
    state.settled = true;
    let failure: Error | undefined;
    await this.enqueue(state, async () => {
      await closeServers(state.servers.splice(0));
      try {
        await write(state);
      } catch (error) {
        failure = error as Error;
      }
    });
    if (failure) throw failure;
  }

  failPod(name: string, failure: KubeletPodFailure): Promise<void> {
    return this.inject(name, async (state) => {
      const pod = state.pod;
      const container = failure.container ?? pod.spec.containers[0]!.name;
      const exitCode = failure.exitCode ?? (failure.reason === 'OOMKilled' ? 137 : 1);
      const others = { reason: 'Error', exitCode: 137 };
      const status = terminatedStatus(
        pod,
        hostIP,
        state.podIP,
        { container, termination: { ...failure, exitCode } },
        others,
      );
      await this.mustPatch(state, status, 'Failed');
    });
  }

  imagePullError(
    name: string,
    options: { reason?: 'ErrImagePull' | 'ImagePullBackOff' | 'InvalidImageName'; message?: string } = {},
  ): Promise<void> {
    return this.inject(name, async (state) => {
      const pod = state.pod;
      const container = pod.spec.containers[0]!;
      const reason = options.reason ?? 'ErrImagePull';
      const message =
        options.message ??
        `rpc error: code = NotFound desc = failed to pull and unpack image "${container.image}": not found`;
      await this.mustPatch(
        state,
        imagePullErrorStatus(pod, hostIP, state.podIP, container.name, reason, message),
        'Pending',
      );
    });
  }

  evict(name: string): Promise<void> {
    return this.inject(name, async (state) => {
      const message = 'The node was low on resource: memory. Threshold quantity: 100Mi, available: 50Mi.';
      const exit = { reason: 'Error', exitCode: 137 };
      const status = terminatedStatus(state.pod, hostIP, state.podIP, undefined, exit, { reason: 'Evicted', message });
      await this.mustPatch(state, status, 'Failed');
    });
  }

  private async mustPatch(state: PodState, status: object, phase: string): Promise<void> {
    if (!(await this.patchStatus(state, status, phase))) {
      throw new Error(
        `could not write the status of pod ${state.pod.metadata.name}: ${this.client.problems.at(-1) ?? 'gone'}`,
      );
    }
  }

  async loseNode(node: string): Promise<void> {
    await this.nodeSet.lose(node);
    const onNode = [...this.states.values()].filter((s) => s.pod.spec.nodeName === node && !s.gone);
    await Promise.all(
      onNode.map((state) => {
        state.settled = true;
        return this.enqueue(state, async () => {
          await closeServers(state.servers.splice(0));
          const path = `${this.podsPath}/${encodeURIComponent(state.pod.metadata.name)}/status`;
          await this.client.request(
            'PATCH',
            path,
            { status: { conditions: nodeLostConditions() } },
            { contentType: 'application/strategic-merge-patch+json' },
          );
          await this.client.forceDelete(this.podsPath, state.pod);
        });
      }),
    );
  }

  async setNodeReady(node: string): Promise<void> {
    await this.nodeSet.setReady(node);
    // Pods bound to the node while it was away, and pods nobody could schedule, get their turn now.
    for (const state of this.states.values()) {
      if (!state.gone) this.observe(state.pod);
    }
  }
}

function containerPorts(pod: SimPodObject): number[] {
  const ports = pod.spec.containers.flatMap((c) => (c.ports ?? []).map((p) => p.containerPort));
  return [...new Set(ports)];
}
