import type { V1Pod } from '@kubernetes/client-node';
import type { RuntimeStatus, RuntimeWorkspaceSpec, RuntimeWorkspaceState } from '@workbay/api';
import type { KubernetesRuntimeConfig } from './config.js';

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
} as const;

export const managedBySelector = `${labels.managedBy}=workbay,${labels.component}=workspace`;

/** A label value: at most 63 characters of [A-Za-z0-9._-], starting and ending alphanumeric. */
export function labelValue(value: string): string {
  const cleaned = value.replace(/[^A-Za-z0-9._-]/g, '-').slice(0, 63);
  return cleaned.replace(/^[^A-Za-z0-9]+/, '').replace(/[^A-Za-z0-9]+$/, '');
}

/** `ws-<instanceId>` as an RFC 1123 name (lower case, at most 63 characters). */
export function podName(instanceId: string): string {
  const cleaned = instanceId
    .toLowerCase()
    .replace(/[^a-z0-9-]/g, '-')
    .slice(0, 60)
    .replace(/-+$/, '');
  return `ws-${cleaned || 'x'}`;
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

/** The pod that runs one workspace instance. */
export function buildPod(spec: RuntimeWorkspaceSpec, config: KubernetesRuntimeConfig): V1Pod {
  const mapped = config.images[spec.image];
  const idePort = spec.ports[0] && spec.ports[0] > 0 ? spec.ports[0] : 23000;
  const env = { ...spec.env, PORT: String(idePort), WORKBAY_IDE_PORT: String(idePort) };
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
      nodeName: config.nodeName,
      nodeSelector: Object.keys(config.nodeSelector).length ? config.nodeSelector : undefined,
      serviceAccountName: config.serviceAccountName,
      runtimeClassName: config.runtimeClassName,
      imagePullSecrets: config.imagePullSecrets.length ? config.imagePullSecrets.map((name) => ({ name })) : undefined,
      securityContext:
        config.runAsUser !== undefined
          ? {
              runAsUser: config.runAsUser,
              runAsGroup: config.runAsUser,
              fsGroup: config.runAsUser,
              runAsNonRoot: config.runAsUser !== 0,
            }
          : undefined,
      containers: [
        {
          name: 'workspace',
          image: mapped?.image ?? spec.image,
          command: mapped?.command,
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
        },
      ],
      volumes: [{ name: 'workspace', hostPath: { path: spec.contentDir, type: 'DirectoryOrCreate' } }],
    },
  };
}

const pullFailures = new Set(['ErrImagePull', 'ImagePullBackOff', 'InvalidImageName', 'ErrImageNeverPull']);

/**
 * Where a pod stands, in runtime terms. Image pull failures count as exited (the pod would never start);
 * a pod being deleted is stopping.
 */
export function podState(pod: V1Pod): RuntimeWorkspaceState & { readonly idePort: number; readonly podName: string } {
  const meta = pod.metadata ?? {};
  const container =
    pod.status?.containerStatuses?.find((c) => c.name === 'workspace') ?? pod.status?.containerStatuses?.[0];
  const ready = pod.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') ?? false;
  const terminated = container?.state?.terminated;
  const waiting = container?.state?.waiting;
  const phase = pod.status?.phase ?? 'Pending';
  let status: RuntimeStatus;
  let failure: string | undefined;
  if (phase === 'Succeeded' || phase === 'Failed') {
    status = 'exited';
    if (terminated?.reason === 'OOMKilled') {
      failure = `out of memory: the workspace exceeded its memory limit and was killed (exit code ${terminated.exitCode})`;
    } else if (terminated && terminated.exitCode !== 0) {
      const detail = terminated.message?.trim().split('\n').at(-1);
      failure = `the workspace container exited with code ${terminated.exitCode}${detail ? `: ${detail}` : ''}`;
    } else if (phase === 'Failed') {
      failure = `the workspace pod failed${pod.status?.reason ? ` (${pod.status.reason})` : ''}${pod.status?.message ? `: ${pod.status.message}` : ''}`;
    }
  } else if (waiting?.reason && pullFailures.has(waiting.reason)) {
    status = 'exited';
    failure = `cannot pull image: ${waiting.message ?? waiting.reason}`;
  } else if (meta.deletionTimestamp) {
    status = 'stopping';
  } else {
    status = phase === 'Running' && ready ? 'running' : 'starting';
  }
  const ann = meta.annotations ?? {};
  return {
    instanceId: ann[annotations.instanceId] ?? meta.labels?.[labels.instanceId] ?? meta.name ?? '',
    status,
    ready,
    exitCode: terminated?.exitCode,
    failure,
    nodeName: pod.spec?.nodeName ?? '',
    host: pod.status?.podIP ?? '',
    startedAt: meta.creationTimestamp ? new Date(meta.creationTimestamp) : new Date(0),
    idePort: Number(ann[annotations.idePort] ?? 0),
    podName: meta.name ?? '',
  };
}
