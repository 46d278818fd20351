import type { KubernetesTestCluster } from './cluster.js';
import type { SimulatedDaemon } from './kubelet-nodes.js';

// The public shape of the kubelet simulator (kubelet.ts implements it).

/** Options of {@link startKubeletSimulator}. */
export interface KubeletSimulatorOptions {
  /** The API server to play the kubelet for. */
  readonly cluster: KubernetesTestCluster;
  /** Where workspace pods and the daemon pods live. */
  readonly namespace: string;
  /** Node names to create and play the kubelet for (DNS labels). */
  readonly nodes: readonly string[];
  /** Bind unscheduled workspace pods round-robin to ready nodes (the scheduler's job). Default true. */
  readonly schedule?: boolean;
  /** Runs one daemon per node; its pod `workbay-daemon-<node>` then points at `host:port` (podIP, port `grpc`). */
  readonly startDaemon?: (node: string) => Promise<SimulatedDaemon>;
  /** Finish graceful deletions (containers exit 0, then delete with grace 0). Default true; false: never. */
  readonly confirmDeletions?: boolean;
  /** Time between "ContainerCreating" and Running/Ready. Default 0 (straight to Running). */
  readonly readyDelayMs?: number;
  /** Listen on podIP:<containerPort> for every port of a running pod, answering 200 with the pod name. */
  readonly serveWorkspaces?: boolean;
  /**
   * Images this node cannot pull. `ErrImagePull`: the pod stays Pending and cycles ErrImagePull → ImagePullBackOff
   * every `pullBackoffMs`, as a kubelet retrying the pull does; `InvalidImageName`: shown once. Default: all pull.
   */
  readonly imagePullFailure?: (image: string) => 'ErrImagePull' | 'InvalidImageName' | undefined;
  /** Pause between pull attempts of a failing image. Default 100 ms. */
  readonly pullBackoffMs?: number;
  /** Concurrent API calls of the simulator. Default 32. */
  readonly maxConcurrentRequests?: number;
}

/** One pod as the simulator sees it. */
export interface SimulatedPod {
  readonly name: string;
  readonly uid: string;
  /** `spec.nodeName`; none while unscheduled. */
  readonly node?: string;
  /** The loopback address the simulator gave the pod (127.0.x.y), once it runs. */
  readonly podIP?: string;
  /** The phase the simulator last wrote (or read, for pods it adopted). */
  readonly phase?: string;
  /** The pod has a deletionTimestamp. */
  readonly deleting: boolean;
}

/** How a container ended in {@link KubeletSimulator.failPod}. */
export interface KubeletPodFailure {
  /** The container's `state.terminated.reason`. */
  readonly reason: 'OOMKilled' | 'Error';
  /** Default 137 for OOMKilled, 1 for Error. */
  readonly exitCode?: number;
  /** Default the first container. */
  readonly container?: string;
}

/** A simulated kubelet (plus scheduler and node lifecycle controller) for the pods of a real API server. */
export interface KubeletSimulator {
  readonly nodes: readonly string[];
  /** The daemons started through `startDaemon`, by node (a lost node has none until `setNodeReady`). */
  daemon(node: string): SimulatedDaemon | undefined;
  /** The workspace container of pod `name` ended with a failure (OOMKilled, Error): the pod is Failed. */
  failPod(name: string, failure: KubeletPodFailure): Promise<void>;
  /** Pod `name` cannot pull its image: Pending with the container waiting (default reason ErrImagePull). */
  imagePullError(
    name: string,
    options?: { reason?: 'ErrImagePull' | 'ImagePullBackOff' | 'InvalidImageName'; message?: string },
  ): Promise<void>;
  /** The kubelet evicted pod `name` (memory pressure): Failed, reason Evicted, DisruptionTarget. */
  evict(name: string): Promise<void>;
  /**
   * The node stops answering: Node Ready=Unknown with unreachable taints, its daemon stopped, its pods marked
   * not ready and deleted with grace 0 (as the node lifecycle controller would). Nothing is scheduled there.
   */
  loseNode(node: string): Promise<void>;
  /** The node is back: Ready=True, a fresh daemon (and daemon pod), pods bound to it are run again. */
  setNodeReady(node: string): Promise<void>;
  /** What the simulator knows of the workspace pods right now. */
  pods(): SimulatedPod[];
  /** Problems the simulator met (failed API calls, watch errors): a test may assert there are none. */
  errors(): readonly string[];
  /** Watch counters, for resilience tests: how often the pod watch was opened and the pods listed. */
  readonly watchStats: { readonly watches: number; readonly lists: number };
  /** Stops watching, closes the workspace servers and stops the daemons; the API objects stay. */
  stop(): Promise<void>;
}
