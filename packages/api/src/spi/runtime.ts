import type { Observable } from 'rxjs';

/** Resource limits of a workspace class; a runtime enforces what it can and says so in its docs. */
export interface ClassResources {
  /** CPU limit in cores (e.g. 2 or 0.5). */
  readonly cpu?: number;
  readonly memoryBytes?: number;
  readonly pids?: number;
  readonly diskBytes?: number;
}

/** Everything a runtime needs to run one workspace instance. Domain types only, no proto types. */
export interface RuntimeWorkspaceSpec {
  readonly instanceId: string;
  /** The workspace (meta) id; stable across restarts of the same workspace. */
  readonly workspaceId: string;
  readonly owner: string;
  readonly image: string;
  readonly url: string;
  readonly headless: boolean;
  readonly type: 'regular' | 'prebuild' | 'imagebuild';
  /** Directory holding the workspace content, initialized by the daemon; the process's working directory. */
  readonly contentDir: string;
  readonly env: Readonly<Record<string, string>>;
  /** Ports the workspace is expected to listen on; the first is the IDE port. */
  readonly ports: readonly number[];
  readonly className: string;
  readonly resources: ClassResources;
  /**
   * The node the instance must run on: the one whose daemon holds its content (daemons per node). Absent when the
   * runtime may choose (one node, or content that does not live on a node).
   */
  readonly nodeName?: string;
}

export type RuntimeStatus = 'starting' | 'running' | 'stopping' | 'exited';

export interface RuntimeWorkspaceState {
  readonly instanceId: string;
  readonly status: RuntimeStatus;
  /** True once the readiness check passed. */
  readonly ready: boolean;
  readonly pid?: number;
  readonly exitCode?: number;
  /** Why it exited or failed, for `conditions.failed`. */
  readonly failure?: string;
  readonly nodeName: string;
  /** Host address the workspace's ports are reachable on (e.g. 127.0.0.1, or the workspace's own address). */
  readonly host: string;
  readonly startedAt: Date;
  /** The runtime's own name for the instance (e.g. the Kubernetes pod name); absent when it has none. */
  readonly podName?: string;
  /** Address of the node the instance runs on (e.g. the pod's hostIP); absent when the runtime does not know it. */
  readonly nodeIp?: string;
  /**
   * Said plainly when the workspace is not isolated (e.g. it runs as a trusted process of the manager's user because
   * the manager is not root), for the workspace's status message. Absent when it runs isolated as it should.
   */
  readonly notice?: string;
}

export type RuntimeEvent =
  | { readonly type: 'ready'; readonly instanceId: string; readonly state: RuntimeWorkspaceState }
  | { readonly type: 'exited'; readonly instanceId: string; readonly state: RuntimeWorkspaceState };

export interface StopOptions {
  /** How long the workspace may take to exit after the polite signal before it is killed. */
  readonly gracePeriodMs: number;
  /** Aborts waiting for the instance to go (e.g. at shutdown); the stop rejects and the instance may still run. */
  readonly signal?: AbortSignal;
}

/**
 * Runs workspace instances. The manager owns the lifecycle; a runtime only starts, watches and stops processes
 * (or pods). Implementations: `local` (processes on this machine, the embedded default) and `kubernetes`.
 */
export interface WorkspaceRuntime {
  readonly kind: string;
  /**
   * True when every instance gets its own network address (a pod IP): its ports need not be unique on a host, so
   * the manager gives every instance the same IDE port instead of allocating one from `idePorts`.
   */
  readonly addressPerInstance?: boolean;
  /**
   * Optional: sets up ahead of `start` what the instance needs that does not depend on its content (e.g. its cgroup
   * and network), so that it overlaps with the content's initialization. The manager calls it as the content starts
   * to be produced (`contentDir` may not exist yet) and never waits for it; nothing of the workspace runs before
   * `start`. `start` uses what it made; `stop` and `close` give back what no start took. A failure is the runtime's
   * own: `start` then sets everything up itself and reports what fails there.
   */
  prepare?(spec: RuntimeWorkspaceSpec): Promise<void>;
  /** Starts the instance; resolves once it was launched (not necessarily ready). */
  start(spec: RuntimeWorkspaceSpec): Promise<RuntimeWorkspaceState>;
  /** Stops the instance within the grace period; resolves once it is gone. Stopping a gone instance is a no-op. */
  stop(instanceId: string, options: StopOptions): Promise<void>;
  inspect(instanceId: string): Promise<RuntimeWorkspaceState | undefined>;
  /** Every instance the runtime still knows, e.g. to re-adopt after a manager restart. */
  list(): Promise<RuntimeWorkspaceState[]>;
  /** Ready and exit events for all instances. */
  readonly events$: Observable<RuntimeEvent>;
  close(): Promise<void>;
}
