/**
 * The NetworkPolicies the runtime asks for, as data. That the API server takes them, that a restart changes
 * nothing and that a config change updates them is proven on a real kube-apiserver in
 * packages/integration/src/kubernetes/workspace-hardening.spec.ts.
 */
import { describe, expect, it } from 'vitest';
import { parseKubernetesRuntimeConfig } from './config.js';
import { blockedByDefault, networkPolicyNames, workspaceNetworkPolicies } from './network-policies.js';

const policies = (raw: unknown) => {
  const [ingress, egress] = workspaceNetworkPolicies(parseKubernetesRuntimeConfig(raw));
  return { ingress: ingress!, egress: egress! };
};

describe('workspaceNetworkPolicies', () => {
  it('admits only the manager pods to workspace pods, on every port by default', () => {
    const { ingress } = policies({ namespace: 'ws' });
    expect(ingress.metadata).toMatchObject({ name: networkPolicyNames.ingress, namespace: 'ws' });
    expect(ingress.spec!.podSelector!.matchLabels).toEqual({
      'app.kubernetes.io/managed-by': 'workbay',
      'app.kubernetes.io/component': 'workspace',
    });
    expect(ingress.spec!.policyTypes).toEqual(['Ingress']);
    expect(ingress.spec!.ingress).toEqual([
      { _from: [{ podSelector: { matchLabels: { 'app.kubernetes.io/name': 'workbay-manager' } } }] },
    ]);
  });

  it('restricts ingress to the configured TCP ports and proxy namespace', () => {
    const { ingress } = policies({
      networkPolicies: {
        ingressFrom: { podLabels: { app: 'proxy' }, namespaceLabels: { 'kubernetes.io/metadata.name': 'edge' } },
        ingressPorts: [{ port: 23000 }, { port: 3000, endPort: 3999 }],
      },
    });
    expect(ingress.spec!.ingress![0]).toEqual({
      _from: [
        {
          podSelector: { matchLabels: { app: 'proxy' } },
          namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'edge' } },
        },
      ],
      ports: [
        { protocol: 'TCP', port: 23000 },
        { protocol: 'TCP', port: 3000, endPort: 3999 },
      ],
    });
  });

  it('lets workspaces out to DNS and public addresses only, plus allowed networks', () => {
    const { egress } = policies({
      networkPolicies: {
        allowedNetworks: ['10.20.0.0/16'],
        blockedNetworks: ['192.88.99.0/24', '2001:db8::/32', '2a00:1450::/32'],
        dns: { networks: ['169.254.20.10/32'] },
      },
    });
    expect(egress.spec!.policyTypes).toEqual(['Egress']);
    const [dns, internet, allowed] = egress.spec!.egress!;
    expect(dns).toEqual({
      to: [
        {
          namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'kube-system' } },
          podSelector: { matchLabels: { 'k8s-app': 'kube-dns' } },
        },
        { ipBlock: { cidr: '169.254.20.10/32' } },
      ],
      ports: [
        { protocol: 'UDP', port: 53 },
        { protocol: 'TCP', port: 53 },
      ],
    });
    expect(internet!.ports).toBeUndefined();
    expect(internet!.to).toEqual([
      { ipBlock: { cidr: '0.0.0.0/0', except: [...blockedByDefault.ipv4, '192.88.99.0/24'] } },
      // Once each: the documentation range is blocked by default already.
      { ipBlock: { cidr: '::/0', except: [...blockedByDefault.ipv6, '2a00:1450::/32'] } },
    ]);
    for (const range of [
      '10.0.0.0/8',
      '172.16.0.0/12',
      '192.168.0.0/16',
      '100.64.0.0/10',
      '169.254.0.0/16',
      '192.0.2.0/24',
    ]) {
      expect(blockedByDefault.ipv4).toContain(range);
    }
    for (const range of ['fc00::/7', 'fe80::/10', '::1/128', '64:ff9b::a00:0/104']) {
      expect(blockedByDefault.ipv6).toContain(range);
    }
    expect(blockedByDefault.ipv6).not.toContain('::ffff:0:0/96');
    expect(allowed).toEqual({ to: [{ ipBlock: { cidr: '10.20.0.0/16' } }] });
  });

  it('asks for none when switched off', () => {
    expect(workspaceNetworkPolicies(parseKubernetesRuntimeConfig({ networkPolicies: { enabled: false } }))).toEqual([]);
  });
});
