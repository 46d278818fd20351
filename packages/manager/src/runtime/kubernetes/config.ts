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
  /** Image reference (exact) → the container image and command to run. Unmapped references run as they are. */
  images: z.record(z.string().min(1), imageSchema).default({}),
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
  /** How often stop() checks whether a deleted pod is gone. */
  pollIntervalMs: z.number().int().positive().default(500),
  /** How long stop() waits beyond the grace period for the pod object to disappear. */
  deletionTimeoutMs: z.number().int().positive().default(60_000),
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
    })
    .prefault({}),
  /** Pause before re-opening a watch that ended. */
  watchRetryMs: z.number().int().positive().default(1000),
});

export type KubernetesRuntimeConfig = z.output<typeof kubernetesRuntimeConfigSchema>;
export type KubernetesRuntimeConfigInput = z.input<typeof kubernetesRuntimeConfigSchema>;

export function parseKubernetesRuntimeConfig(raw: unknown, prefix = 'runtime.kubernetes'): KubernetesRuntimeConfig {
  return parseWithSchema(kubernetesRuntimeConfigSchema, raw ?? {}, prefix);
}
