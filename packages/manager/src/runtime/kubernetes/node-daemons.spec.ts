/**
 * Which address a daemon pod offers (NodeDaemons' rule). The list-and-watch itself runs on a real API server in
 * packages/integration/src/kubernetes/deploy-manifests.spec.ts (under the manager's ServiceAccount token).
 */
import type { V1Pod } from '@kubernetes/client-node';
import { describe, expect, it } from 'vitest';
import { daemonEndpointOf } from './node-daemons.js';

function daemonPod(over: { hostNetwork?: boolean; podIP?: string; ready?: boolean; deleting?: boolean } = {}): V1Pod {
  return {
    metadata: {
      name: 'workbay-daemon-x1',
      creationTimestamp: new Date('2026-01-01T00:00:00Z'),
      deletionTimestamp: over.deleting ? new Date() : undefined,
    },
    spec: {
      nodeName: 'node-a',
      hostNetwork: over.hostNetwork,
      containers: [
        {
          name: 'daemon',
          ports: [
            { name: 'metrics', containerPort: 9500 },
            { name: 'grpc', containerPort: 7721 },
          ],
        },
      ],
    },
    status: {
      phase: 'Running',
      podIP: over.podIP ?? '10.244.0.9',
      hostIP: '192.168.0.2',
      conditions: [{ type: 'Ready', status: over.ready === false ? 'False' : 'True' }],
    },
  };
}

describe('daemonEndpointOf', () => {
  it('dials the pod IP on the port named grpc', () => {
    expect(daemonEndpointOf(daemonPod())).toMatchObject({ node: 'node-a', address: '10.244.0.9:7721', ready: true });
  });
  it('dials the node IP when the daemon uses the host network', () => {
    expect(daemonEndpointOf(daemonPod({ hostNetwork: true }))?.address).toBe('192.168.0.2:7721');
  });
  it('brackets IPv6 addresses', () => {
    expect(daemonEndpointOf(daemonPod({ podIP: 'fd00::9' }))?.address).toBe('[fd00::9]:7721');
  });
  it('offers nothing while unbound, without an IP, being deleted, or without a grpc port', () => {
    expect(daemonEndpointOf({ ...daemonPod(), spec: { ...daemonPod().spec!, nodeName: undefined } })).toBeUndefined();
    expect(daemonEndpointOf(daemonPod({ podIP: '' }))).toBeUndefined();
    expect(daemonEndpointOf(daemonPod({ deleting: true }))).toBeUndefined();
    expect(daemonEndpointOf(daemonPod(), 'other')).toBeUndefined();
    expect(daemonEndpointOf(daemonPod({ ready: false }))?.ready).toBe(false);
  });
});
