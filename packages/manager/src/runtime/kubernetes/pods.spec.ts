/**
 * The workspace pod's hardening as built. The same fields read back from a real API server (and judged by its
 * PodSecurity admission) are in packages/integration/src/kubernetes/workspace-hardening.spec.ts.
 */
import type { RuntimeWorkspaceSpec } from '@workbay/api';
import { describe, expect, it } from 'vitest';
import { parseKubernetesRuntimeConfig } from './config.js';
import { buildPod, podName } from './pods.js';

const spec: RuntimeWorkspaceSpec = {
  instanceId: 'i-1',
  workspaceId: 'ws-1',
  owner: 'alice',
  image: 'ghcr.io/acme/ide:1',
  url: 'http://ws-1.example',
  headless: false,
  type: 'regular',
  contentDir: '/var/lib/workbay/workspaces/i-1',
  env: {},
  ports: [23000],
  className: 'default',
  resources: {},
  nodeName: 'node-a',
};

describe('buildPod hardening', () => {
  it('runs as 33333, non-root, RuntimeDefault seccomp, no host namespaces, no token', () => {
    const pod = buildPod(spec, parseKubernetesRuntimeConfig({}));
    expect(pod.spec!.securityContext).toEqual({
      runAsUser: 33333,
      runAsGroup: 33333,
      fsGroup: 33333,
      runAsNonRoot: true,
      seccompProfile: { type: 'RuntimeDefault' },
    });
    expect(pod.spec).toMatchObject({
      hostNetwork: false,
      hostPID: false,
      hostIPC: false,
      shareProcessNamespace: false,
      automountServiceAccountToken: false,
      enableServiceLinks: false,
    });
    expect(pod.spec!.containers[0]!.securityContext).toEqual({
      allowPrivilegeEscalation: false,
      privileged: false,
      capabilities: { drop: ['ALL'] },
      procMount: 'Default',
    });
    // The daemon made the directory before the pod exists: the kubelet must not create one.
    expect(pod.spec!.volumes).toEqual([
      { name: 'workspace', hostPath: { path: '/var/lib/workbay/workspaces/i-1', type: 'Directory' } },
    ]);
  });

  it('uses the configured uid/gid, and root only when allowed explicitly', () => {
    const custom = buildPod(spec, parseKubernetesRuntimeConfig({ runAsUser: 1000, runAsGroup: 1001 }));
    expect(custom.spec!.securityContext).toMatchObject({ runAsUser: 1000, runAsGroup: 1001, fsGroup: 1001 });
    const root = buildPod(spec, parseKubernetesRuntimeConfig({ runAsUser: 0, allowRootWorkspaces: true }));
    expect(root.spec!.securityContext).toMatchObject({ runAsUser: 0, runAsNonRoot: false });
    // Even as root: no privilege escalation and no capabilities.
    expect(root.spec!.containers[0]!.securityContext!.capabilities).toEqual({ drop: ['ALL'] });
  });
});

describe('podName', () => {
  it('keeps plain instance ids and hashes every other one, so that no two instance ids share a pod (red team round 12, N2)', () => {
    expect(podName('0f8fad5b-d9cb-469f-a165-7086772895fe')).toBe('ws-0f8fad5b-d9cb-469f-a165-7086772895fe');
    const ids = ['a1', 'A1', 'a.1', 'a_1', 'a1-', 'h--a1', `a${'1'.repeat(60)}`, `a${'1'.repeat(60)}2`];
    const names = ids.map(podName);
    expect(new Set(names).size).toBe(ids.length);
    for (const name of names) expect(name).toMatch(/^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/);
    expect(podName('A1')).toMatch(/^ws-h--[0-9a-f]{40}$/);
  });
});
