/**
 * Where a workspace pod stands, in runtime terms: the rules of the original's `updateWorkspaceStatus` /
 * `extractFailure` (gitpod-inventory §2.3, §2.10) reduced to what the runtime SPI reports (starting, running,
 * stopping, exited with a failure), plus the two facts the runtime acts on itself: a pod the kubelet rejected at
 * admission (re-created, bounded) and a pod being deleted (by us, or by someone else: then it is a failure).
 *
 * @module
 */
import type { V1ContainerStatus, V1Pod } from '@kubernetes/client-node';
import type { RuntimeStatus, RuntimeWorkspaceState } from '@workbay/api';
import { annotations, labels } from './pods.js';

/** The kubernetes runtime's view of an instance: the SPI state plus the pod it runs in. */
export type KubernetesWorkspaceState = RuntimeWorkspaceState & { readonly idePort: number; readonly podName: string };

export interface PodAssessment {
  readonly state: KubernetesWorkspaceState;
  /** The kubelet refused the pod at admission (its containers never ran): it may be re-created. */
  readonly rejected: boolean;
  /** The pod has a deletionTimestamp. */
  readonly deleting: boolean;
  /** The workspace container waits with ErrImagePull/ImagePullBackOff (counted by the caller across updates). */
  readonly pullFailure?: 'ErrImagePull' | 'ImagePullBackOff';
}

export interface PodStateOptions {
  /** Image pull failures seen so far for this pod (the caller counts them across watch events). */
  readonly pullFailures?: number;
  /** From this many pull failures on, the pod counts as exited. */
  readonly maxImagePullFailures?: number;
}

/** Waiting reasons that no retry fixes: the workspace fails at once. */
const hopelessWaits = new Set(['InvalidImageName', 'ErrImageNeverPull', 'ErrInvalidImageName']);
/** Reasons the kubelet gives when it refuses a pod at admission (besides `OutOf<resource>`). */
const rejectionReasons = new Set([
  'NodeAffinity',
  'NodeName',
  'NodePorts',
  'Taint',
  'InvalidNodeInfo',
  'UnexpectedAdmissionError',
  'PodOSNotSupported',
  'SysctlForbidden',
]);
/** DisruptionTarget reasons that mean the node went away (taint eviction, or pod GC of a gone node). */
const nodeLossDisruptions = new Set(['DeletionByTaintManager', 'DeletionByPodGC']);

function workspaceContainer(pod: V1Pod): V1ContainerStatus | undefined {
  return pod.status?.containerStatuses?.find((c) => c.name === 'workspace') ?? pod.status?.containerStatuses?.[0];
}

function conditionOf(pod: V1Pod, type: string): { status: string; reason?: string; message?: string } | undefined {
  return pod.status?.conditions?.find((c) => c.type === type);
}

/** Only the last line of a message, at most 200 characters: container output is workspace-controlled. */
function short(text: string | undefined): string | undefined {
  const line = text?.trim().split('\n').at(-1)?.trim();
  return line ? line.slice(0, 200) : undefined;
}

function suffix(text: string | undefined): string {
  const s = short(text);
  return s ? `: ${s}` : '';
}

/** The kubelet refused the pod before running anything (phase Failed, admission reason, no container started). */
function isRejected(pod: V1Pod): boolean {
  if (pod.status?.phase !== 'Failed') return false;
  const reason = pod.status.reason ?? '';
  const byReason = reason.startsWith('OutOf') || rejectionReasons.has(reason);
  const byMessage = (pod.status.message ?? '').startsWith('Pod was rejected');
  const ran = (pod.status.containerStatuses ?? []).some((c) => c.state?.running || c.state?.terminated?.startedAt);
  return (byReason || byMessage) && !ran;
}

/** Why the pod's node is gone, if it is. */
function nodeLoss(pod: V1Pod): string | undefined {
  const node = pod.spec?.nodeName ? ` ${pod.spec.nodeName}` : '';
  if (pod.status?.reason === 'NodeLost') return `the workspace's node${node} was lost${suffix(pod.status.message)}`;
  const ready = conditionOf(pod, 'Ready');
  if (ready?.status === 'False' && ready.reason === 'NodeLost') {
    return `the workspace's node${node} is unreachable${suffix(ready.message)}`;
  }
  const disruption = conditionOf(pod, 'DisruptionTarget');
  if (disruption?.status === 'True' && disruption.reason && nodeLossDisruptions.has(disruption.reason)) {
    return `the workspace's node${node} is gone; the pod was deleted by the node controller (${disruption.reason})`;
  }
  if (pod.status?.phase === 'Unknown') return `the workspace's node${node} stopped reporting the pod's state`;
  return undefined;
}

/** Evicted by the kubelet (node pressure), the eviction API or preemption. */
function eviction(pod: V1Pod): string | undefined {
  if (pod.status?.phase === 'Failed' && pod.status.reason === 'Evicted') {
    return `the workspace pod was evicted${suffix(pod.status.message)}`;
  }
  const disruption = conditionOf(pod, 'DisruptionTarget');
  if (disruption?.status === 'True' && disruption.reason && !nodeLossDisruptions.has(disruption.reason)) {
    return `the workspace pod was evicted (${disruption.reason})${suffix(disruption.message)}`;
  }
  return undefined;
}

/** The rules, first match wins. */
export function assessPod(pod: V1Pod, options: PodStateOptions = {}): PodAssessment {
  const meta = pod.metadata ?? {};
  const container = workspaceContainer(pod);
  const ready = conditionOf(pod, 'Ready')?.status === 'True';
  const terminated = container?.state?.terminated;
  const waiting = container?.state?.waiting;
  const phase = pod.status?.phase ?? 'Pending';
  const deleting = Boolean(meta.deletionTimestamp);
  const rejected = isRejected(pod);
  let status: RuntimeStatus;
  let failure: string | undefined;
  let pullFailure: PodAssessment['pullFailure'];
  const lost = nodeLoss(pod);
  const evicted = lost ? undefined : eviction(pod);
  if (rejected) {
    status = 'exited';
    failure = `the kubelet rejected the workspace pod (${pod.status?.reason ?? 'rejected'})${suffix(pod.status?.message)}`;
  } else if (lost || evicted) {
    status = 'exited';
    failure = lost ?? evicted;
  } else if (terminated?.reason === 'OOMKilled') {
    status = 'exited';
    failure = `out of memory: the workspace exceeded its memory limit and was killed (exit code ${terminated.exitCode})`;
  } else if (phase === 'Succeeded' || phase === 'Failed' || terminated) {
    // A terminated container with restartPolicy Never is the end, even before the pod phase says so.
    status = 'exited';
    if (terminated && terminated.exitCode !== 0) {
      failure = `the workspace container exited with code ${terminated.exitCode}${suffix(terminated.message)}`;
    } else if (phase === 'Failed') {
      failure = `the workspace pod failed${pod.status?.reason ? ` (${pod.status.reason})` : ''}${suffix(pod.status?.message)}`;
    }
  } else if (waiting?.reason && hopelessWaits.has(waiting.reason)) {
    status = 'exited';
    failure = `cannot pull image: ${short(waiting.message) ?? waiting.reason}`;
  } else if (waiting?.reason === 'ErrImagePull' || waiting?.reason === 'ImagePullBackOff') {
    pullFailure = waiting.reason;
    const seen = options.pullFailures ?? 1;
    if (seen >= (options.maxImagePullFailures ?? 1)) {
      status = 'exited';
      failure = `cannot pull image (${seen} attempt${seen === 1 ? '' : 's'}): ${short(waiting.message) ?? waiting.reason}`;
    } else {
      status = deleting ? 'stopping' : 'starting';
    }
  } else if (deleting) {
    status = 'stopping';
  } else {
    status = phase === 'Running' && ready ? 'running' : 'starting';
  }
  const ann = meta.annotations ?? {};
  return {
    rejected,
    deleting,
    pullFailure,
    state: {
      instanceId: ann[annotations.instanceId] ?? meta.labels?.[labels.instanceId] ?? meta.name ?? '',
      status,
      ready: ready && status !== 'exited',
      exitCode: terminated?.exitCode,
      failure,
      nodeName: pod.spec?.nodeName ?? '',
      // The proxy reaches the workspace's ports on the pod's own address.
      host: pod.status?.podIP ?? '',
      nodeIp: pod.status?.hostIP || undefined,
      startedAt: meta.creationTimestamp ? new Date(meta.creationTimestamp) : new Date(0),
      idePort: Number(ann[annotations.idePort] ?? 0),
      podName: meta.name ?? '',
    },
  };
}

/** Where a pod stands, in runtime terms (see {@link assessPod}). */
export function podState(pod: V1Pod, options?: PodStateOptions): KubernetesWorkspaceState {
  return assessPod(pod, options).state;
}
