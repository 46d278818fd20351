/**
 * The workspace pod's hardening as built. The same fields read back from a real API server (and judged by its
 * PodSecurity admission) are in packages/integration/src/kubernetes/workspace-hardening.spec.ts.
 */
import type { RuntimeWorkspaceSpec } from '@workbay/api';
import { describe, expect, it } from 'vitest';
import { parseKubernetesRuntimeConfig } from './config.js';
import { buildPod } from './pods.js';

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
