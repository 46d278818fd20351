import { z } from 'zod';
import { parseWithSchema } from '@workbay/api';

const imageSchema = z.strictObject({
  /** Container image to run instead of the reference itself. */
  image: z.string().min(1).optional(),
  /** Container command (entrypoint override). */
  command: z.array(z.string().min(1)).min(1).optional(),
});

export const kubernetesRuntimeConfigSchema = z.strictObject({
  /** Accepted so that the manager's whole `runtime` section (which names the kind) can be passed as is. */
  kind: z.literal('kubernetes').optional(),
  /** Namespace the workspace pods live in. */
  namespace: z.string().min(1).default('default'),
  /**
   * How to reach the API server. Without `server`: in-cluster config, else `kubeconfigPath`, else the default
   * kubeconfig ($KUBECONFIG or ~/.kube/config).
   */
  kubeconfigPath: z.string().min(1).optional(),
  server: z.string().url().optional(),
  token: z.string().min(1).optional(),
  skipTLSVerify: z.boolean().default(false),
  /**
   * Image reference (exact) → the container image and command to run. Unmapped references run as they are, except
   * the built-in default `workbay/default` (see `defaultImage`).
   */
  images: z.record(z.string().min(1), imageSchema).default({}),
  /**
   * What the built-in default workspace image `workbay/default` runs when `images` does not map it: no node can pull
   * `workbay/default` itself, so a start with it fails (naming this key) unless one of the two maps it. The manager
   * image can serve (command `node .../@workbay/manager/dist/runtime/local/default-workspace.js`, see config.yaml).
   */
  defaultImage: z
    .strictObject({ image: z.string().min(1), command: z.array(z.string().min(1)).min(1).optional() })
    .optional(),
  /** Where the workspace content is mounted in the container; also its working directory. */
  mountPath: z.string().startsWith('/').default('/workspace'),
  /** Pin workspace pods to this node (the one whose daemon initializes the content). */
  nodeName: z.string().min(1).optional(),
  nodeSelector: z.record(z.string(), z.string()).default({}),
  serviceAccountName: z.string().min(1).optional(),
  runtimeClassName: z.string().min(1).optional(),
  imagePullSecrets: z.array(z.string().min(1)).default([]),
  /** uid/gid the workspace runs as; unset keeps the image's user. */
  runAsUser: z.number().int().min(0).optional(),
  /** The readiness probe on the IDE port. */
  readiness: z
    .strictObject({
      kind: z.enum(['tcp', 'http']).default('tcp'),
      path: z.string().startsWith('/').default('/'),
      periodSeconds: z.number().int().positive().default(1),
      failureThreshold: z.number().int().positive().default(600),
    })
    .prefault({}),
  /** Extra labels on every workspace pod. */
  labels: z.record(z.string(), z.string()).default({}),
  /** Default grace period in the pod spec (stop() passes its own). */
  terminationGracePeriodSeconds: z.number().int().min(0).default(1800),
  /** How often stop() checks whether a deleted pod is gone (besides the watch telling it). */
  pollIntervalMs: z.number().int().positive().default(2_000),
  /**
   * The longest stop() waits for the kubelet to confirm a deletion (the pod object gone), whatever the grace
   * period. Past it the stop fails with UNAVAILABLE and the pod is NOT force-deleted: its containers may still run,
   * so its content must not be backed up or removed underneath it. Keep it below the manager's own termination
   * grace period so that a shutdown is not held up by a silent kubelet.
   */
  stopTimeoutMs: z.number().int().positive().default(20_000),
  /**
   * Where the manager keeps its state and how replicas agree on one leader. `store: kubernetes` (the default):
   * Workspace objects and Secrets in `namespace` (several replicas, one leader through the Lease); `files`: the
   * state directory (one replica only).
   */
  controlPlane: z
    .strictObject({
      store: z.enum(['kubernetes', 'files']).default('kubernetes'),
      leaseName: z.string().min(1).default('workbay-manager-leader'),
      /** This replica's name in the Lease; default $POD_NAME, else the host name. */
      identity: z.string().min(1).optional(),
      leaseDurationSeconds: z.number().int().positive().default(15),
      renewIntervalMs: z.number().int().positive().default(5_000),
      /** How long a follower waits for the leader to act on a start or stop it recorded. */
      leaderWaitMs: z.number().int().positive().default(30_000),
      /**
       * Backpressure on a saturated API server: the leader admits a new workspace only while fewer workspaces than
       * this have status writes outstanding (a start waits up to leaderWaitMs, then fails with UNAVAILABLE). In the
       * 1,000-workspace bench (2 cores), 8 kept the followers' Subscribe delay p99 at 0.64-0.84 s and 16 at
       * 0.80-1.18 s, at the same 37-43 workspaces/s.
       */
      maxWriteBacklog: z.number().int().positive().default(8),
    })
    // The leader steps down a third of the lease before it expires (see LeaseLeaderElector): renewing less often
    // than that would depose a healthy leader between two renewals.
    .refine((plane) => plane.renewIntervalMs * 3 <= plane.leaseDurationSeconds * 1000, {
      message: 'renewIntervalMs must be at most a third of leaseDurationSeconds',
      path: ['renewIntervalMs'],
    })
    .prefault({}),
  /** Pause before re-opening a watch that ended with an error. */
  watchRetryMs: z.number().int().positive().default(1000),
  /** The server ends each watch after this long (`timeoutSeconds`); it is re-opened from the last resourceVersion. */
  watchTimeoutSeconds: z.number().int().positive().default(300),
  /**
   * A watch that delivers nothing (not even a bookmark) for this long is aborted and the pods re-listed: a server
   * that went silent (shutting down, a dead connection) is noticed. Must exceed the server's bookmark interval (~1 min).
   */
  watchIdleTimeoutMs: z.number().int().positive().default(90_000),
  /** Image pull failures (ErrImagePull) observed for one pod before the workspace fails (InvalidImageName: at once). */
  maxImagePullFailures: z.number().int().positive().default(3),
  /**
   * A pod the kubelet rejected at admission (phase Failed, reason OutOfcpu/OutOfmemory/NodeAffinity/...: its
   * containers never ran) is re-created this many times before the workspace fails.
   */
  maxPodRejections: z.number().int().min(0).default(3),
  /** How the manager finds each node's daemon (NodeDaemons): the DaemonSet's pods, dialled on a named port. */
  daemons: z
    .strictObject({
      /** Where the DaemonSet runs; default: `namespace`. */
      namespace: z.string().min(1).optional(),
      labelSelector: z.string().min(1).default('app.kubernetes.io/name=workbay-daemon'),
      /** The daemon container's port with this name is its gRPC port. */
      portName: z.string().min(1).default('grpc'),
    })
    .prefault({}),
  /**
   * How long a workspace pod stays on a node that is NotReady or unreachable before the node controller evicts it
   * (a NoExecute toleration of the node's `not-ready`/`unreachable` taints; Kubernetes' default is 300 s). The
   * eviction is how the manager learns that the node is gone (it does not watch Nodes, which would need a
   * ClusterRole): the workspace then fails with "the workspace's node ... is gone".
   */
  nodeLossToleranceSeconds: z.number().int().min(0).default(60),
  /** Pause before re-creating a rejected pod (the node's resources may free up meanwhile). */
  podRejectionBackoffMs: z.number().int().min(0).default(5_000),
});

export type KubernetesRuntimeConfig = z.output<typeof kubernetesRuntimeConfigSchema>;
export type KubernetesRuntimeConfigInput = z.input<typeof kubernetesRuntimeConfigSchema>;

export function parseKubernetesRuntimeConfig(raw: unknown, prefix = 'runtime.kubernetes'): KubernetesRuntimeConfig {
  return parseWithSchema(kubernetesRuntimeConfigSchema, raw ?? {}, prefix);
}
