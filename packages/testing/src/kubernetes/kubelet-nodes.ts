import { isIP } from 'node:net';
import { KubernetesApiError } from './client.js';
import type { KubernetesRequestOptions } from './client.js';
import { nodeStatus, nodeTaints, runningStatus, terminatedStatus } from './kubelet-status.js';
import type { SimPodObject } from './kubelet-status.js';

/** A daemon the test started for a simulated node (through `startDaemon`): where it listens and how to stop it. */
export interface SimulatedDaemon {
  /** An IP address (it becomes the daemon pod's podIP), e.g. 127.0.0.1. */
  readonly host: string;
  /** Its gRPC port: the daemon pod's container port named `grpc`. */
  readonly port: number;
  /** Called by `loseNode` and by the simulator's `stop()`. */
  stop(): Promise<void>;
}

type Api = <T = unknown>(
  method: string,
  path: string,
  body?: unknown,
  options?: KubernetesRequestOptions,
) => Promise<{ status: number; body: T }>;

interface NodeState {
  ready: boolean;
  daemon?: SimulatedDaemon;
  labels: Record<string, string>;
}

/** The Node objects of a simulator and, per node, its daemon and the daemon's pod `workbay-daemon-<node>`. */
export class SimulatedNodes {
  private readonly states = new Map<string, NodeState>();

  constructor(
    private readonly deps: {
      api: Api;
      namespace: string;
      hostIP: string;
      startDaemon?: (node: string) => Promise<SimulatedDaemon>;
    },
  ) {}

  isReady(node: string): boolean {
    return this.states.get(node)?.ready ?? false;
  }

  labels(node: string): Record<string, string> {
    return this.states.get(node)?.labels ?? {};
  }

  daemon(node: string): SimulatedDaemon | undefined {
    return this.states.get(node)?.daemon;
  }

  /** Creates (or takes over) the Node object, marks it Ready, and starts its daemon. */
  async add(node: string): Promise<void> {
    const labels = { 'kubernetes.io/hostname': node, 'kubernetes.io/os': 'linux', 'kubernetes.io/arch': 'amd64' };
    const state: NodeState = { ready: false, labels };
    this.states.set(node, state);
    const created = await this.deps.api('POST', '/api/v1/nodes', {
      apiVersion: 'v1',
      kind: 'Node',
      metadata: { name: node, labels },
      spec: {},
    });
    if (created.status !== 201 && created.status !== 409) {
      throw new KubernetesApiError('POST', '/api/v1/nodes', created.status, created.body);
    }
    await this.setReady(node);
  }

  async setReady(node: string): Promise<void> {
    const state = this.mustGet(node);
    await this.writeNode(node, true);
    if (this.deps.startDaemon && !state.daemon) {
      state.daemon = await this.deps.startDaemon(node);
      await this.writeDaemonPod(node, state.daemon);
    }
    state.ready = true;
  }

  /** Ready=Unknown with unreachable taints; the daemon is stopped and its pod shown not ready. */
  async lose(node: string): Promise<void> {
    const state = this.mustGet(node);
    state.ready = false;
    await this.writeNode(node, false);
    const daemon = state.daemon;
    state.daemon = undefined;
    if (daemon) {
      await daemon.stop();
      const pod = await this.daemonPod(node);
      if (pod) {
        // A DaemonSet pod tolerates the unreachable taints: it stays, not ready, until the node returns.
        const exit = { reason: 'Error', exitCode: 137 };
        await this.patchPodStatus(pod, terminatedStatus(pod, this.deps.hostIP, pod.status?.podIP, undefined, exit));
      }
    }
  }

  async stopDaemons(): Promise<void> {
    const daemons = [...this.states.values()].flatMap((s) => (s.daemon ? [s.daemon] : []));
    for (const state of this.states.values()) state.daemon = undefined;
    await Promise.all(daemons.map((d) => d.stop()));
  }

  private mustGet(node: string): NodeState {
    const state = this.states.get(node);
    if (!state) throw new Error(`the kubelet simulator has no node ${node.slice(0, 80)}`);
    return state;
  }

  private async writeNode(node: string, ready: boolean): Promise<void> {
    const path = `/api/v1/nodes/${encodeURIComponent(node)}`;
    const spec = await this.deps.api('PATCH', path, { spec: { taints: nodeTaints(ready) } });
    if (spec.status !== 200) throw new KubernetesApiError('PATCH', path, spec.status, spec.body);
    const status = await this.deps.api('PATCH', `${path}/status`, {
      status: nodeStatus(node, this.deps.hostIP, ready),
    });
    if (status.status !== 200) throw new KubernetesApiError('PATCH', `${path}/status`, status.status, status.body);
  }

  private daemonPodPath(node: string): string {
    return `/api/v1/namespaces/${encodeURIComponent(this.deps.namespace)}/pods/workbay-daemon-${node}`;
  }

  private async daemonPod(node: string): Promise<SimPodObject | undefined> {
    const res = await this.deps.api<SimPodObject>('GET', this.daemonPodPath(node));
    return res.status === 200 ? res.body : undefined;
  }

  /**
   * A fresh daemon pod for the node (a container port cannot change in place, and a restarted daemon may listen
   * on another port): delete any old one with grace 0, create, then report it Running/Ready at the daemon.
   */
  private async writeDaemonPod(node: string, daemon: SimulatedDaemon): Promise<void> {
    const podIP = daemon.host === 'localhost' ? '127.0.0.1' : daemon.host;
    if (!isIP(podIP)) throw new Error(`startDaemon(${node}) must return an IP address as host, not ${daemon.host}`);
    const path = this.daemonPodPath(node);
    const removed = await this.deps.api('DELETE', path, {
      apiVersion: 'v1',
      kind: 'DeleteOptions',
      gracePeriodSeconds: 0,
    });
    if (removed.status !== 200 && removed.status !== 404) {
      throw new KubernetesApiError('DELETE', path, removed.status, removed.body);
    }
    const collection = `/api/v1/namespaces/${encodeURIComponent(this.deps.namespace)}/pods`;
    const created = await this.deps.api<SimPodObject>('POST', collection, {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: {
        name: `workbay-daemon-${node}`,
        labels: { 'app.kubernetes.io/name': 'workbay-daemon', 'app.kubernetes.io/part-of': 'workbay' },
      },
      spec: {
        nodeName: node,
        containers: [
          { name: 'daemon', image: 'workbay/daemon', ports: [{ name: 'grpc', containerPort: daemon.port }] },
        ],
      },
    });
    if (created.status !== 201) throw new KubernetesApiError('POST', collection, created.status, created.body);
    await this.patchPodStatus(created.body, runningStatus(created.body, this.deps.hostIP, podIP));
  }

  private async patchPodStatus(pod: SimPodObject, status: object): Promise<void> {
    const path = `${this.daemonPodPath(pod.spec.nodeName ?? '')}/status`;
    const res = await this.deps.api('PATCH', path, { status });
    if (res.status !== 200) throw new KubernetesApiError('PATCH', path, res.status, res.body);
  }
}
