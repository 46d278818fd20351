import { createHash } from 'node:crypto';

// What a kubelet writes to a pod's status, built from the pod's spec. Only the fields a real kubelet fills and a
// manager reads; values that look like a real node's (container ids, image digests) so that parsers are exercised.

/** The part of a pod the simulator reads. */
export interface SimPodObject {
  metadata: {
    name: string;
    namespace?: string;
    uid: string;
    resourceVersion?: string;
    labels?: Record<string, string>;
    deletionTimestamp?: string;
    creationTimestamp?: string;
  };
  spec: {
    nodeName?: string;
    nodeSelector?: Record<string, string>;
    restartPolicy?: string;
    containers: { name: string; image?: string; ports?: { containerPort: number; name?: string }[] }[];
    initContainers?: { name: string; image?: string }[];
  };
  status?: {
    phase?: string;
    podIP?: string;
    hostIP?: string;
    reason?: string;
    conditions?: { type: string; status: string }[];
    containerStatuses?: { name: string; state?: Record<string, unknown> }[];
  };
}

export interface ContainerTermination {
  readonly reason: string;
  readonly exitCode: number;
  readonly message?: string;
}

const now = (): string => new Date().toISOString().replace(/\.\d+Z$/, 'Z');

function containerId(pod: SimPodObject, name: string): string {
  return `containerd://${createHash('sha256').update(`${pod.metadata.uid}/${name}`).digest('hex')}`;
}

function imageId(image: string | undefined): string {
  const digest = createHash('sha256')
    .update(image ?? '')
    .digest('hex');
  return `docker.io/${(image ?? 'unknown').split(':')[0]}@sha256:${digest}`;
}

function condition(type: string, status: 'True' | 'False' | 'Unknown', reason?: string, message?: string) {
  return {
    type,
    status,
    lastProbeTime: null,
    lastTransitionTime: now(),
    ...(reason ? { reason } : {}),
    ...(message ? { message } : {}),
  };
}

function addresses(hostIP: string, podIP?: string) {
  return {
    hostIP,
    hostIPs: [{ ip: hostIP }],
    ...(podIP ? { podIP, podIPs: [{ ip: podIP }] } : {}),
  };
}

function initStatuses(pod: SimPodObject, startedAt: string) {
  const init = pod.spec.initContainers ?? [];
  if (init.length === 0) return {};
  return {
    initContainerStatuses: init.map((c) => ({
      name: c.name,
      image: c.image,
      imageID: imageId(c.image),
      containerID: containerId(pod, c.name),
      ready: true,
      restartCount: 0,
      started: false,
      state: { terminated: { exitCode: 0, reason: 'Completed', startedAt, finishedAt: startedAt } },
    })),
  };
}

/** Scheduled, sandbox being created: what a kubelet reports before the containers run. */
export function creatingStatus(pod: SimPodObject, hostIP: string) {
  return {
    phase: 'Pending',
    ...addresses(hostIP),
    startTime: now(),
    conditions: [
      condition('PodReadyToStartContainers', 'False'),
      condition('Initialized', 'True'),
      condition('Ready', 'False', 'ContainersNotReady', 'containers with unready status'),
      condition('ContainersReady', 'False', 'ContainersNotReady', 'containers with unready status'),
      condition('PodScheduled', 'True'),
    ],
    containerStatuses: pod.spec.containers.map((c) => ({
      name: c.name,
      image: c.image,
      imageID: '',
      ready: false,
      restartCount: 0,
      started: false,
      state: { waiting: { reason: 'ContainerCreating' } },
    })),
  };
}

export function runningStatus(pod: SimPodObject, hostIP: string, podIP: string) {
  const startedAt = now();
  return {
    phase: 'Running',
    ...addresses(hostIP, podIP),
    startTime: startedAt,
    conditions: [
      condition('PodReadyToStartContainers', 'True'),
      condition('Initialized', 'True'),
      condition('Ready', 'True'),
      condition('ContainersReady', 'True'),
      condition('PodScheduled', 'True'),
    ],
    ...initStatuses(pod, startedAt),
    containerStatuses: pod.spec.containers.map((c) => ({
      name: c.name,
      image: c.image,
      imageID: imageId(c.image),
      containerID: containerId(pod, c.name),
      ready: true,
      restartCount: 0,
      started: true,
      state: { running: { startedAt } },
    })),
  };
}

/**
 * Every container ended: `failed` names the one that failed (with its reason and exit code), the others ended
 * with `others`. With restartPolicy Never the pod is then Failed, or Succeeded when every exit code is 0.
 */
export function terminatedStatus(
  pod: SimPodObject,
  hostIP: string,
  podIP: string | undefined,
  failed: { container: string; termination: ContainerTermination } | undefined,
  others: ContainerTermination,
  podReason?: { reason: string; message: string },
) {
  const finishedAt = now();
  const terminations = pod.spec.containers.map((c) =>
    failed && failed.container === c.name ? failed.termination : others,
  );
  const succeeded = terminations.every((t) => t.exitCode === 0) && !podReason;
  return {
    phase: succeeded ? 'Succeeded' : 'Failed',
    ...addresses(hostIP, podIP),
    ...(podReason ?? {}),
    conditions: [
      ...(podReason?.reason === 'Evicted'
        ? [condition('DisruptionTarget', 'True', 'TerminationByKubelet', podReason.message)]
        : []),
      condition('PodReadyToStartContainers', 'False'),
      condition('Initialized', 'True'),
      condition('Ready', 'False', succeeded ? 'PodCompleted' : 'PodFailed'),
      condition('ContainersReady', 'False', succeeded ? 'PodCompleted' : 'PodFailed'),
      condition('PodScheduled', 'True'),
    ],
    containerStatuses: pod.spec.containers.map((c, i) => ({
      name: c.name,
      image: c.image,
      imageID: imageId(c.image),
      containerID: containerId(pod, c.name),
      ready: false,
      restartCount: 0,
      started: false,
      state: {
        terminated: {
          exitCode: terminations[i]!.exitCode,
          reason: terminations[i]!.reason,
          ...(terminations[i]!.message ? { message: terminations[i]!.message } : {}),
          startedAt: finishedAt,
          finishedAt,
          containerID: containerId(pod, c.name),
        },
      },
    })),
  };
}

/** The image of `container` cannot be pulled: the pod stays Pending with the container waiting. */
export function imagePullErrorStatus(
  pod: SimPodObject,
  hostIP: string,
  podIP: string | undefined,
  container: string,
  reason: string,
  message: string,
) {
  return {
    phase: 'Pending',
    ...addresses(hostIP, podIP),
    conditions: [
      condition('PodReadyToStartContainers', 'True'),
      condition('Initialized', 'True'),
      condition('Ready', 'False', 'ContainersNotReady', `containers with unready status: [${container}]`),
      condition('ContainersReady', 'False', 'ContainersNotReady', `containers with unready status: [${container}]`),
      condition('PodScheduled', 'True'),
    ],
    containerStatuses: pod.spec.containers.map((c) => ({
      name: c.name,
      image: c.image,
      imageID: '',
      ready: false,
      restartCount: 0,
      started: false,
      state: c.name === container ? { waiting: { reason, message } } : { waiting: { reason: 'PodInitializing' } },
    })),
  };
}

/** The node went away: what the node lifecycle controller writes before it deletes the pod. */
export function nodeLostConditions() {
  return [
    condition('DisruptionTarget', 'True', 'DeletionByTaintManager', 'Taint manager: deleting due to NoExecute taint'),
    condition('Ready', 'False', 'NodeNotReady'),
    condition('ContainersReady', 'False', 'NodeNotReady'),
    condition('Initialized', 'True'),
    condition('PodScheduled', 'True'),
  ];
}

/** A Node's status: Ready (True or Unknown when lost) plus the capacity a scheduler would look at. */
export function nodeStatus(node: string, hostIP: string, ready: boolean) {
  const status = ready ? 'True' : 'Unknown';
  const reason = ready ? 'KubeletReady' : 'NodeStatusUnknown';
  const message = ready ? 'kubelet is posting ready status' : 'Kubelet stopped posting node status.';
  const resources = { cpu: '8', memory: '32Gi', pods: '110', 'ephemeral-storage': '100Gi' };
  return {
    conditions: [
      { type: 'Ready', status, reason, message, lastHeartbeatTime: now(), lastTransitionTime: now() },
      ...['MemoryPressure', 'DiskPressure', 'PIDPressure'].map((type) => ({
        type,
        status: ready ? 'False' : 'Unknown',
        reason: ready ? `KubeletHasNo${type}` : 'NodeStatusUnknown',
        lastHeartbeatTime: now(),
        lastTransitionTime: now(),
      })),
    ],
    addresses: [
      { type: 'InternalIP', address: hostIP },
      { type: 'Hostname', address: node },
    ],
    capacity: resources,
    allocatable: resources,
  };
}

/** The taints the node lifecycle controller puts on an unreachable node (none on a ready one). */
export function nodeTaints(ready: boolean) {
  if (ready) return null;
  return [
    { key: 'node.kubernetes.io/unreachable', effect: 'NoSchedule' },
    { key: 'node.kubernetes.io/unreachable', effect: 'NoExecute', timeAdded: now() },
  ];
}
