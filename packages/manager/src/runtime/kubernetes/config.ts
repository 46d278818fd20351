import { z } from 'zod';
import { parseWithSchema } from '@workbay/api';
import { cidrProblem } from '../cidr.js';
import { labels as podLabelKeys } from './pods.js';

/** The uid/gid workspace images are built for (the original's `gitpod` user): never root. */
export const defaultWorkspaceUid = 33333;

/** The labels of the manager's pods in deploy/kubernetes (its port proxy is the one client of workspace ports). */
export const defaultProxyPodLabels: Readonly<Record<string, string>> = { 'app.kubernetes.io/name': 'workbay-manager' };

const imageSchema = z.strictObject({
  /** Container image to run instead of the reference itself. */
  image: z.string().min(1).optional(),
  /** Container command (entrypoint override). */
  command: z.array(z.string().min(1)).min(1).optional(),
});

const cidrSchema = z.string().superRefine((value, ctx) => {
  const problem = cidrProblem(value);
  if (problem) ctx.addIssue({ code: 'custom', message: problem });
});

const labelsSchema = z.record(z.string().min(1), z.string());

const networkPoliciesSchema = z
  .strictObject({
    /**
     * The runtime keeps two NetworkPolicies in `namespace` (`workbay-workspace-ingress`, `workbay-workspace-egress`)
     * in line with these settings at every start. `false` deletes them (for clusters whose CNI does not enforce
     * NetworkPolicy: there they only look like protection).
     */
    enabled: z.boolean().default(true),
    /**
     * Who may connect to workspace pods: pods with these labels (at least one; a selector that workspace pods match
     * too is refused), in `namespace` unless `namespaceLabels` selects other namespaces. Default: the manager's pods.
     */
    ingressFrom: z
      .strictObject({
        podLabels: labelsSchema
          .refine((labels) => Object.keys(labels).length > 0, 'must name at least one label')
          .default({ ...defaultProxyPodLabels }),
        namespaceLabels: labelsSchema.optional(),
      })
      .prefault({}),
    /**
     * The TCP ports (`port`, or `port`-`endPort`) those pods may connect to. Empty (the default): every port.
     * Workspaces open ports at run time (ControlPort), so no fixed list covers them; the proxy itself dials only a
     * workspace's IDE port and the ports it exposed. `endPort` needs a CNI that implements it.
     */
    ingressPorts: z
      .array(
        z
          .strictObject({
            port: z.number().int().min(1).max(65535),
            endPort: z.number().int().min(1).max(65535).optional(),
          })
          .refine((p) => p.endPort === undefined || p.endPort >= p.port, 'endPort must be >= port'),
      )
      .default([]),
    /** Where workspace pods may resolve names (UDP and TCP port 53). Default: kube-dns/CoreDNS in kube-system. */
    dns: z
      .strictObject({
        namespaceLabels: labelsSchema.default({ 'kubernetes.io/metadata.name': 'kube-system' }),
        podLabels: labelsSchema.default({ 'k8s-app': 'kube-dns' }),
        /** Resolvers outside any pod, e.g. NodeLocal DNSCache's `169.254.20.10/32` (port 53 only). */
        networks: z.array(cidrSchema).default([]),
      })
      .prefault({}),
    /**
     * Networks workspaces may reach on any port although the defaults keep them out (an internal registry or
     * package mirror). Everything else outside the cluster is reachable except private, shared (CGNAT),
     * link-local (the cloud metadata service), loopback, unique-local and multicast space.
     */
    allowedNetworks: z.array(cidrSchema).default([]),
    /**
     * More networks kept out of the internet rule: add the cluster's pod, service and node ranges when they are
     * public addresses, and anything else internal that is not in private space. Must be narrower than /0.
     */
    blockedNetworks: z.array(cidrSchema.refine((c) => !c.endsWith('/0'), 'must be narrower than /0')).default([]),
  })
  .prefault({});

export const kubernetesRuntimeConfigSchema = z
  .strictObject({
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
    /**
     * A RuntimeClass for workspace pods. A sandboxing runtime (gVisor `runsc`, Kata) gives each workspace its own
     * kernel boundary: the strongest isolation available, and the one to pick for untrusted code on shared nodes.
     */
    runtimeClassName: z.string().min(1).optional(),
    imagePullSecrets: z.array(z.string().min(1)).default([]),
    /**
     * uid the workspace runs as, whatever the image's USER says (workspaces run code nobody reviewed, next to other
     * owners' workspaces on the same node). 33333 is the uid workspace images are built for (the original's `gitpod`
     * user). 0 is refused unless `allowRootWorkspaces` is set.
     */
    runAsUser: z.number().int().min(0).default(defaultWorkspaceUid),
    /** gid the workspace runs as (also its fsGroup); default: `runAsUser`. 0 is refused like `runAsUser`. */
    runAsGroup: z.number().int().min(0).optional(),
    /**
     * Lets `runAsUser`/`runAsGroup` be 0. Root in a container shares the node's kernel with every other workspace:
     * only for single-tenant clusters, or with a sandboxing `runtimeClassName` (gVisor, Kata).
     */
    allowRootWorkspaces: z.boolean().default(false),
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
    networkPolicies: networkPoliciesSchema,
  })
  .superRefine((config, ctx) => {
    // Checked here rather than per field: whether 0 is allowed depends on another key, which the message names.
    for (const key of ['runAsUser', 'runAsGroup'] as const) {
      if (config[key] === 0 && !config.allowRootWorkspaces) {
        ctx.addIssue({
          code: 'custom',
          path: [key],
          message:
            '0 runs workspaces as root; set runtime.kubernetes.allowRootWorkspaces: true to allow it (single-tenant clusters or a sandboxing runtimeClassName only)',
        });
      }
    }
    // A selector some workspace pod can match would let workspaces reach each other: every label it names is one a
    // workspace pod carries with that value (config.labels, managed-by, component) or with a value it chooses.
    const { enabled, ingressFrom } = config.networkPolicies;
    const podLabels = enabled ? ingressFrom.podLabels : {};
    const fixed: Record<string, string> = {
      ...config.labels,
      [podLabelKeys.managedBy]: 'workbay',
      [podLabelKeys.component]: 'workspace',
    };
    const chosen = new Set<string>(Object.values(podLabelKeys));
    const matchable = ([key, value]: [string, string]): boolean =>
      Object.hasOwn(fixed, key) ? fixed[key] === value : chosen.has(key);
    if (enabled && Object.entries(podLabels).every(matchable)) {
      ctx.addIssue({
        code: 'custom',
        path: ['networkPolicies', 'ingressFrom', 'podLabels'],
        message: 'selects workspace pods too: workspaces could reach each other',
      });
    }
  });

export type KubernetesRuntimeConfig = z.output<typeof kubernetesRuntimeConfigSchema>;
export type KubernetesRuntimeConfigInput = z.input<typeof kubernetesRuntimeConfigSchema>;

export function parseKubernetesRuntimeConfig(raw: unknown, prefix = 'runtime.kubernetes'): KubernetesRuntimeConfig {
  return parseWithSchema(kubernetesRuntimeConfigSchema, raw ?? {}, prefix);
}
