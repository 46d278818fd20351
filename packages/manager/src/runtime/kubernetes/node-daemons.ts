/**
 * Where each node's daemon is: a list-and-watch of the DaemonSet's pods (label
 * `app.kubernetes.io/name=workbay-daemon`). A node's daemon is its Running, Ready, not-deleting pod; it is dialled
 * on `status.podIP` (the node's `status.hostIP` when the pod uses the host network) at the container port named
 * `grpc`. During a rolling update a node can have two: the newest ready one wins.
 *
 * @module
 */
import { CoreV1Api } from '@kubernetes/client-node';
import type { KubeConfig, V1Pod } from '@kubernetes/client-node';
import { silentLogger } from '@workbay/api';
import type { PluginLogger } from '@workbay/api';
import type { DaemonDirectory } from '../../content/node-daemons.js';
import type { KubernetesRuntimeConfig } from './config.js';
import { ObjectWatch } from './object-watch.js';

export const daemonLabelSelector = 'app.kubernetes.io/name=workbay-daemon';
export const daemonPortName = 'grpc';

export interface DaemonEndpoint {
  readonly node: string;
  readonly podName: string;
  /** `host:port` (`[v6]:port`) for gRPC. */
  readonly address: string;
  readonly ready: boolean;
  readonly createdAt: number;
}

export interface NodeDaemonsOptions {
  readonly kubeConfig: KubeConfig;
  /** Where the DaemonSet runs (usually the manager's namespace). */
  readonly namespace: string;
  readonly labelSelector?: string;
  /** The name of the daemon container's gRPC port. */
  readonly portName?: string;
  readonly logger?: PluginLogger;
  readonly watchTimeoutSeconds?: number;
  readonly watchIdleTimeoutMs?: number;
  readonly watchRetryMs?: number;
}

/** The endpoint a daemon pod offers, or undefined when it offers none (unbound, no IP yet, no `grpc` port). */
export function daemonEndpointOf(pod: V1Pod, portName = daemonPortName): DaemonEndpoint | undefined {
  const node = pod.spec?.nodeName;
  if (!node || pod.metadata?.deletionTimestamp || pod.status?.phase !== 'Running') return undefined;
  const ip = pod.spec?.hostNetwork ? pod.status?.hostIP : pod.status?.podIP;
  const port = pod.spec?.containers.flatMap((c) => c.ports ?? []).find((p) => p.name === portName)?.containerPort;
  if (!ip || !port) return undefined;
  return {
    node,
    podName: pod.metadata?.name ?? '',
    address: `${ip.includes(':') ? `[${ip}]` : ip}:${port}`,
    ready: pod.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') ?? false,
    createdAt: pod.metadata?.creationTimestamp ? new Date(pod.metadata.creationTimestamp).getTime() : 0,
  };
}

export class NodeDaemons implements DaemonDirectory {
  private readonly pods = new Map<string, V1Pod>();
  private readonly watch: ObjectWatch<V1Pod>;
  private readonly portName: string;

  private constructor(options: NodeDaemonsOptions) {
    this.portName = options.portName ?? daemonPortName;
    const api = options.kubeConfig.makeApiClient(CoreV1Api);
    const labelSelector = options.labelSelector ?? daemonLabelSelector;
    this.watch = new ObjectWatch<V1Pod>({
      kubeConfig: options.kubeConfig,
      path: `/api/v1/namespaces/${encodeURIComponent(options.namespace)}/pods`,
      list: () => api.listNamespacedPod({ namespace: options.namespace, labelSelector }),
      what: 'daemon pods',
      labelSelector,
      watchTimeoutSeconds: options.watchTimeoutSeconds ?? 300,
      idleTimeoutMs: options.watchIdleTimeoutMs ?? 90_000,
      retryMs: options.watchRetryMs ?? 1_000,
      logger: options.logger ?? silentLogger,
      onList: (pods) => {
        this.pods.clear();
        for (const pod of pods) this.pods.set(pod.metadata?.name ?? '', pod);
      },
      onEvent: (type, pod) => {
        const name = pod.metadata?.name ?? '';
        if (type === 'DELETED') this.pods.delete(name);
        else this.pods.set(name, pod);
      },
    });
  }

  /** Lists the daemon pods (rejects when that fails) and keeps watching them. */
  static async start(options: NodeDaemonsOptions): Promise<NodeDaemons> {
    const daemons = new NodeDaemons(options);
    await daemons.watch.start();
    return daemons;
  }

  /** For the runtime section's connection and settings (`daemons` keys). */
  static startFor(
    config: KubernetesRuntimeConfig,
    kubeConfig: KubeConfig,
    logger?: PluginLogger,
  ): Promise<NodeDaemons> {
    return NodeDaemons.start({
      kubeConfig,
      namespace: config.daemons.namespace ?? config.namespace,
      labelSelector: config.daemons.labelSelector,
      portName: config.daemons.portName,
      logger,
      watchTimeoutSeconds: config.watchTimeoutSeconds,
      watchIdleTimeoutMs: config.watchIdleTimeoutMs,
      watchRetryMs: config.watchRetryMs,
    });
  }

  /** The daemon serving `node`: its newest ready pod; undefined when the node has none ready. */
  endpointOf(node: string): DaemonEndpoint | undefined {
    let best: DaemonEndpoint | undefined;
    for (const pod of this.pods.values()) {
      const endpoint = daemonEndpointOf(pod, this.portName);
      if (!endpoint || endpoint.node !== node || !endpoint.ready) continue;
      if (!best || endpoint.createdAt > best.createdAt) best = endpoint;
    }
    return best;
  }

  addressOf(node: string): string | undefined {
    return this.endpointOf(node)?.address;
  }

  /** The nodes that have a ready daemon, sorted. */
  nodes(): string[] {
    const nodes = new Set<string>();
    for (const pod of this.pods.values()) {
      const endpoint = daemonEndpointOf(pod, this.portName);
      if (endpoint?.ready) nodes.add(endpoint.node);
    }
    return [...nodes].sort();
  }

  close(): void {
    this.watch.close();
  }
}
