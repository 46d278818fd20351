import { createHash } from 'node:crypto';
import type { V1Pod, V1PodSecurityContext, V1SecurityContext } from '@kubernetes/client-node';
import { FailedPreconditionError } from '@workbay/api';
import type { RuntimeWorkspaceSpec } from '@workbay/api';
import type { KubernetesRuntimeConfig } from './config.js';

/** The built-in default workspace image: no registry has it, so it is always mapped (`defaultImage`). */
export const builtInDefaultImage = 'workbay/default';

/** Labels (selectable, sanitized) and annotations (exact values) the runtime puts on every workspace pod. */
export const labels = {
  managedBy: 'app.kubernetes.io/managed-by',
  component: 'app.kubernetes.io/component',
  instanceId: 'workbay.dev/instance-id',
  workspaceId: 'workbay.dev/workspace-id',
  owner: 'workbay.dev/owner',
  type: 'workbay.dev/type',
  headless: 'workbay.dev/headless',
  workspaceClass: 'workbay.dev/class',
} as const;

export const annotations = {
  instanceId: 'workbay.dev/instance-id',
  workspaceId: 'workbay.dev/workspace-id',
  owner: 'workbay.dev/owner',
  url: 'workbay.dev/url',
  idePort: 'workbay.dev/ide-port',
  /** How often the kubelet rejected this workspace's pod so far (a re-created pod carries the count on). */
  rejections: 'workbay.dev/pod-rejections',
} as const;

export const managedBySelector = `${labels.managedBy}=workbay,${labels.component}=workspace`;

/** A label value: at most 63 characters of [A-Za-z0-9._-], starting and ending alphanumeric. */
export function labelValue(value: string): string {
  const cleaned = value.replace(/[^A-Za-z0-9._-]/g, '-').slice(0, 63);
  return cleaned.replace(/^[^A-Za-z0-9]+/, '').replace(/[^A-Za-z0-9]+$/, '');
}

/**
 * Instance ids that name their pod as they are: an RFC 1123 label of at most 60 characters, not starting with the
 * hashed names' `h--`. Instance ids are case-sensitive and may hold `.` and `_`: folding them (lower case, other
 * characters to `-`, cut at 60) gave `A1`, `a.1` and `a_1` alice's pod `ws-a1`, and a stop of mallory's failed
 * start of `A1` deleted it (red team round 12, N2).
 */
const plainPodInstance = /^(?!h--)[a-z0-9](?:[a-z0-9-]{0,58}[a-z0-9])?$/;

/**
 * The pod of an instance: `ws-<instanceId>`, or `ws-h--<160 bits of its SHA-256>` for any other instance id; one
 * name per instance id, none shared.
 */
export function podName(instanceId: string): string {
  if (plainPodInstance.test(instanceId)) return `ws-${instanceId}`;
  return `ws-h--${createHash('sha256').update(instanceId).digest('hex').slice(0, 40)}`;
}

/** Whether `pod` is the instance's: its annotation names exactly that instance id (a pod without one is not). */
export function isPodOf(pod: V1Pod, instanceId: string): boolean {
  return pod.metadata?.annotations?.[annotations.instanceId] === instanceId;
}

/** A DNS label for the pod's hostname (the workspace id, like the original). */
function hostnameFor(workspaceId: string): string {
  return (
    workspaceId
      .toLowerCase()
      .replace(/[^a-z0-9-]/g, '-')
      .slice(0, 63)
      .replace(/^-+|-+$/g, '') || 'workspace'
  );
}

/** The container image and command for a workspace image reference; `workbay/default` is never sent unmapped. */
export function imageFor(
  reference: string,
  config: KubernetesRuntimeConfig,
): { readonly image: string; readonly command?: string[] } {
  const mapped = config.images[reference];
  if (mapped?.image) return { image: mapped.image, command: mapped.command };
  if (reference === builtInDefaultImage) {
    const fallback = config.defaultImage;
    if (!fallback) {
      throw new FailedPreconditionError(
        `the built-in default image ${builtInDefaultImage} cannot be pulled by a node: set runtime.kubernetes.defaultImage (or map it in runtime.kubernetes.images)`,
      );
    }
    return { image: fallback.image, command: mapped?.command ?? fallback.command };
  }
  return { image: reference, command: mapped?.command };
}

/**
 * The environment as the container sees it: values naming the content directory by its host path (such as
 * WORKBAY_REPO_ROOT) name it by the mount path instead.
 */
export function containerEnv(
  env: Readonly<Record<string, string>>,
  contentDir: string,
  mountPath: string,
): Record<string, string> {
  const root = contentDir.replace(/\/+$/, '') || '/';
  const out: Record<string, string> = {};
  for (const [name, value] of Object.entries(env)) {
    out[name] =
      value === root ? mountPath : value.startsWith(`${root}/`) ? `${mountPath}${value.slice(root.length)}` : value;
  }
  return out;
}

/**
 * The workspace container's restrictions: no privilege gain through setuid binaries or file capabilities, no
 * capabilities at all (a workspace binds ports above 1024), no privileged mode, the runtime's masked /proc.
 */
export function containerSecurityContext(): V1SecurityContext {
  return {
    allowPrivilegeEscalation: false,
    privileged: false,
    capabilities: { drop: ['ALL'] },
    procMount: 'Default',
  };
}

/**
 * The pod's identity and syscall filter: a fixed non-root uid/gid whatever the image's USER (root only with
 * `allowRootWorkspaces`), and the container runtime's default seccomp profile (Kubernetes' default is Unconfined).
 */
export function podSecurityContext(config: KubernetesRuntimeConfig): V1PodSecurityContext {
  const uid = config.runAsUser;
  const gid = config.runAsGroup ?? uid;
  return {
    runAsUser: uid,
    runAsGroup: gid,
    fsGroup: gid,
    runAsNonRoot: uid !== 0,
    seccompProfile: { type: 'RuntimeDefault' },
  };
}

/** The pod that runs one workspace instance. */
export function buildPod(spec: RuntimeWorkspaceSpec, config: KubernetesRuntimeConfig): V1Pod {
  const { image, command } = imageFor(spec.image, config);
  const idePort = spec.ports[0] && spec.ports[0] > 0 ? spec.ports[0] : 23000;
  const env = {
    ...containerEnv(spec.env, spec.contentDir, config.mountPath),
    PORT: String(idePort),
    WORKBAY_IDE_PORT: String(idePort),
  };
  const limits: Record<string, string> = {};
  if (spec.resources.cpu !== undefined) limits['cpu'] = `${Math.max(1, Math.round(spec.resources.cpu * 1000))}m`;
  if (spec.resources.memoryBytes !== undefined) limits['memory'] = String(spec.resources.memoryBytes);
  if (spec.resources.diskBytes !== undefined) limits['ephemeral-storage'] = String(spec.resources.diskBytes);
  const port = { port: idePort } as { port: number };
  const probe =
    config.readiness.kind === 'http' ? { httpGet: { path: config.readiness.path, ...port } } : { tcpSocket: port };
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: {
      name: podName(spec.instanceId),
      labels: {
        ...config.labels,
        [labels.managedBy]: 'workbay',
        [labels.component]: 'workspace',
        [labels.instanceId]: labelValue(spec.instanceId),
        [labels.workspaceId]: labelValue(spec.workspaceId),
        [labels.owner]: labelValue(spec.owner),
        [labels.type]: spec.type,
        [labels.headless]: String(spec.headless),
        [labels.workspaceClass]: labelValue(spec.className),
      },
      annotations: {
        [annotations.instanceId]: spec.instanceId,
        [annotations.workspaceId]: spec.workspaceId,
        [annotations.owner]: spec.owner,
        [annotations.url]: spec.url,
        [annotations.idePort]: String(idePort),
      },
    },
    spec: {
      hostname: hostnameFor(spec.workspaceId),
      restartPolicy: 'Never',
      enableServiceLinks: false,
      automountServiceAccountToken: false,
      terminationGracePeriodSeconds: config.terminationGracePeriodSeconds,
      nodeName: spec.nodeName ?? config.nodeName,
      nodeSelector: Object.keys(config.nodeSelector).length ? config.nodeSelector : undefined,
      // Evicted soon after its node stops reporting: that eviction is how the runtime sees the node is lost.
      tolerations: ['node.kubernetes.io/not-ready', 'node.kubernetes.io/unreachable'].map((key) => ({
        key,
        operator: 'Exists',
        effect: 'NoExecute',
        tolerationSeconds: config.nodeLossToleranceSeconds,
      })),
      serviceAccountName: config.serviceAccountName,
      runtimeClassName: config.runtimeClassName,
      imagePullSecrets: config.imagePullSecrets.length ? config.imagePullSecrets.map((name) => ({ name })) : undefined,
      // Spelled out rather than left to the API server's defaults: what a reviewer reads here is what the pod
      // asks for (the server stores the false host flags as absent).
      hostNetwork: false,
      hostPID: false,
      hostIPC: false,
      shareProcessNamespace: false,
      securityContext: podSecurityContext(config),
      containers: [
        {
          name: 'workspace',
          image,
          command,
          workingDir: config.mountPath,
          env: Object.entries(env).map(([name, value]) => ({ name, value })),
          ports: spec.ports.map((p, i) => ({
            containerPort: i === 0 ? idePort : p,
            name: i === 0 ? 'ide' : undefined,
          })),
          resources: Object.keys(limits).length ? { limits } : undefined,
          readinessProbe: {
            ...probe,
            periodSeconds: config.readiness.periodSeconds,
            failureThreshold: config.readiness.failureThreshold,
          },
          volumeMounts: [{ name: 'workspace', mountPath: config.mountPath }],
          securityContext: containerSecurityContext(),
        },
      ],
      // `Directory`, not `DirectoryOrCreate`: the pod is only created once the node's daemon has initialized the
      // content (start-process follows content-ready), so the directory exists. A missing one means the content
      // is gone or on another node; the kubelet then refuses to mount rather than create an empty, root-owned
      // directory and run the workspace on it.
      volumes: [{ name: 'workspace', hostPath: { path: spec.contentDir, type: 'Directory' } }],
    },
  };
}
