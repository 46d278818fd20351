/**
 * The pod → runtime-state rules (gitpod-inventory §2.3), one row per case a kubelet, the node controller or an
 * operator produces. Pure function, so a table; the runtime's handling of these states (events, re-creation)
 * is proven against a real API server in kubernetes-runtime.spec.ts.
 */
import type { V1ContainerState, V1Pod, V1PodCondition, V1PodStatus } from '@kubernetes/client-node';
import { describe, expect, it } from 'vitest';
import { assessPod } from './pod-state.js';
import type { PodStateOptions } from './pod-state.js';

function pod(status: V1PodStatus, meta: Partial<NonNullable<V1Pod['metadata']>> = {}): V1Pod {
  return {
    metadata: {
      name: 'ws-i1',
      uid: 'u1',
      creationTimestamp: new Date('2026-01-01T00:00:00Z'),
      annotations: { 'workbay.dev/instance-id': 'i1', 'workbay.dev/ide-port': '23000' },
      ...meta,
    },
    spec: { nodeName: 'node-a', containers: [{ name: 'workspace' }] },
    status,
  };
}

const container = (state: V1ContainerState, ready = false): V1PodStatus['containerStatuses'] => [
  { name: 'workspace', ready, restartCount: 0, image: 'x', imageID: 'x', state },
];
const ready: V1PodCondition[] = [{ type: 'Ready', status: 'True' }];
const running = (extra: Partial<V1PodStatus> = {}): V1PodStatus => ({
  phase: 'Running',
  podIP: '10.1.0.7',
  hostIP: '192.168.0.2',
  conditions: ready,
  containerStatuses: container({ running: {} }, true),
  ...extra,
});
const waiting = (reason: string, message = 'manifest unknown'): V1PodStatus => ({
  phase: 'Pending',
  containerStatuses: container({ waiting: { reason, message } }),
});

interface Row {
  readonly name: string;
  readonly pod: V1Pod;
  readonly options?: PodStateOptions;
  readonly status: string;
  readonly failure?: RegExp;
  readonly rejected?: boolean;
  readonly deleting?: boolean;
}

const rows: Row[] = [
  { name: 'new pod (no status)', pod: pod({}), status: 'starting' },
  { name: 'scheduled, containers creating', pod: pod(waiting('ContainerCreating', '')), status: 'starting' },
  {
    name: 'running but not ready',
    pod: pod(running({ conditions: [{ type: 'Ready', status: 'False' }] })),
    status: 'starting',
  },
  { name: 'running and ready', pod: pod(running()), status: 'running' },
  {
    name: 'first ErrImagePull, below the bound',
    pod: pod(waiting('ErrImagePull')),
    options: { pullFailures: 1, maxImagePullFailures: 3 },
    status: 'starting',
  },
  {
    name: 'ImagePullBackOff, below the bound',
    pod: pod(waiting('ImagePullBackOff', 'Back-off pulling image')),
    options: { pullFailures: 2, maxImagePullFailures: 3 },
    status: 'starting',
  },
  {
    name: 'ErrImagePull at the bound',
    pod: pod(waiting('ErrImagePull')),
    options: { pullFailures: 3, maxImagePullFailures: 3 },
    status: 'exited',
    failure: /^cannot pull image \(3 attempts\): manifest unknown$/,
  },
  {
    name: 'InvalidImageName fails at once',
    pod: pod(waiting('InvalidImageName', 'invalid reference')),
    options: { pullFailures: 1, maxImagePullFailures: 3 },
    status: 'exited',
    failure: /^cannot pull image: invalid reference$/,
  },
  {
    name: 'OOMKilled',
    pod: pod({ phase: 'Failed', containerStatuses: container({ terminated: { exitCode: 137, reason: 'OOMKilled' } }) }),
    status: 'exited',
    failure: /^out of memory/,
  },
  {
    name: 'OOMKilled while the phase still says Running',
    pod: pod(running({ containerStatuses: container({ terminated: { exitCode: 137, reason: 'OOMKilled' } }) })),
    status: 'exited',
    failure: /^out of memory/,
  },
  {
    name: 'non-zero exit with a message (last line, bounded)',
    pod: pod({
      phase: 'Failed',
      containerStatuses: container({
        terminated: { exitCode: 2, reason: 'Error', message: `boot\n${'x'.repeat(500)}` },
      }),
    }),
    status: 'exited',
    failure: /^the workspace container exited with code 2: x{200}$/,
  },
  {
    name: 'clean exit',
    pod: pod({
      phase: 'Succeeded',
      containerStatuses: container({ terminated: { exitCode: 0, reason: 'Completed' } }),
    }),
    status: 'exited',
  },
  {
    name: 'evicted by the kubelet (node pressure)',
    pod: pod({ phase: 'Failed', reason: 'Evicted', message: 'The node was low on resource: memory.' }),
    status: 'exited',
    failure: /^the workspace pod was evicted: The node was low on resource: memory\.$/,
  },
  {
    name: 'evicted through the eviction API',
    pod: pod(
      running({
        conditions: [
          ...ready,
          {
            type: 'DisruptionTarget',
            status: 'True',
            reason: 'EvictionByEvictionAPI',
            message: 'Eviction API: evicting',
          },
        ],
      }),
      { deletionTimestamp: new Date() },
    ),
    status: 'exited',
    failure: /^the workspace pod was evicted \(EvictionByEvictionAPI\)/,
    deleting: true,
  },
  {
    name: 'node unreachable: Ready=False NodeLost',
    pod: pod(
      running({
        conditions: [{ type: 'Ready', status: 'False', reason: 'NodeLost', message: 'Node is unresponsive' }],
      }),
    ),
    status: 'exited',
    failure: /^the workspace's node node-a is unreachable: Node is unresponsive$/,
  },
  {
    name: 'node lost: pod reason NodeLost',
    pod: pod({ phase: 'Running', reason: 'NodeLost' }),
    status: 'exited',
    failure: /^the workspace's node node-a was lost$/,
  },
  {
    name: 'node gone: deleted by the taint manager',
    pod: pod(
      running({ conditions: [{ type: 'DisruptionTarget', status: 'True', reason: 'DeletionByTaintManager' }] }),
      { deletionTimestamp: new Date() },
    ),
    status: 'exited',
    failure: /node controller \(DeletionByTaintManager\)/,
    deleting: true,
  },
  {
    name: 'node gone: pod phase Unknown',
    pod: pod({ phase: 'Unknown' }),
    status: 'exited',
    failure: /stopped reporting/,
  },
  {
    name: 'rejected: OutOfcpu',
    pod: pod({
      phase: 'Failed',
      reason: 'OutOfcpu',
      message: "Pod was rejected: Node didn't have enough resource: cpu",
    }),
    status: 'exited',
    failure: /^the kubelet rejected the workspace pod \(OutOfcpu\): Pod was rejected/,
    rejected: true,
  },
  {
    name: 'rejected: NodeAffinity',
    pod: pod({ phase: 'Failed', reason: 'NodeAffinity', message: 'Predicate NodeAffinity failed' }),
    status: 'exited',
    rejected: true,
    failure: /NodeAffinity/,
  },
  {
    name: 'rejected by message only',
    pod: pod({ phase: 'Failed', reason: 'UnknownAdmission', message: 'Pod was rejected: nope' }),
    status: 'exited',
    rejected: true,
    failure: /\(UnknownAdmission\): Pod was rejected: nope$/,
  },
  {
    name: 'Failed with an admission reason but a container ran: not a rejection',
    pod: pod({
      phase: 'Failed',
      reason: 'OutOfcpu',
      containerStatuses: container({ terminated: { exitCode: 1, startedAt: new Date() } }),
    }),
    status: 'exited',
    rejected: false,
    failure: /exited with code 1/,
  },
  { name: 'being deleted', pod: pod(running(), { deletionTimestamp: new Date() }), status: 'stopping', deleting: true },
];

describe('assessPod', () => {
  it.each(rows)('$name', (row) => {
    const a = assessPod(row.pod, row.options);
    expect(a.state.status).toBe(row.status);
    if (row.failure) expect(a.state.failure).toMatch(row.failure);
    else expect(a.state.failure).toBeUndefined();
    expect(a.rejected).toBe(row.rejected ?? false);
    expect(a.deleting).toBe(row.deleting ?? false);
    if (a.state.status === 'exited') expect(a.state.ready).toBe(false);
  });

  it('reports the pod name, the node, the pod IP as the host and the node IP (hostIP) as nodeIp', () => {
    const a = assessPod(pod(running()));
    expect(a.state).toMatchObject({
      instanceId: 'i1',
      podName: 'ws-i1',
      nodeName: 'node-a',
      host: '10.1.0.7',
      nodeIp: '192.168.0.2',
      idePort: 23000,
      ready: true,
    });
  });

  it('names the pull failure it sees so that the runtime can count attempts', () => {
    expect(assessPod(pod(waiting('ErrImagePull'))).pullFailure).toBe('ErrImagePull');
    expect(assessPod(pod(waiting('ImagePullBackOff'))).pullFailure).toBe('ImagePullBackOff');
    expect(assessPod(pod(running())).pullFailure).toBeUndefined();
  });
});
