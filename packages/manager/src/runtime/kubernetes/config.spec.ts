/**
 * The kubernetes runtime's security settings as an operator writes them: defaults that harden, refusals that name
 * the key to change. What the API server stores is proven in packages/integration/src/kubernetes/workspace-hardening.spec.ts.
 */
import { describe, expect, it } from 'vitest';
import { InvalidArgumentError } from '@workbay/api';
import { cidrProblem } from '../cidr.js';
import { parseKubernetesRuntimeConfig } from './config.js';

const refusal = (raw: unknown): InvalidArgumentError => {
  try {
    parseKubernetesRuntimeConfig(raw);
  } catch (error) {
    expect(error).toBeInstanceOf(InvalidArgumentError);
    return error as InvalidArgumentError;
  }
  throw new Error('accepted');
};

describe('kubernetes runtime config: workspace identity', () => {
  it('runs workspaces as 33333 unless told otherwise, with network policies on', () => {
    const config = parseKubernetesRuntimeConfig({});
    expect(config).toMatchObject({ runAsUser: 33333, allowRootWorkspaces: false });
    expect(config.runAsGroup).toBeUndefined();
    expect(config.networkPolicies).toMatchObject({
      enabled: true,
      ingressFrom: { podLabels: { 'app.kubernetes.io/name': 'workbay-manager' } },
      ingressPorts: [],
      allowedNetworks: [],
    });
  });

  it('refuses uid or gid 0 naming runtime.kubernetes.allowRootWorkspaces, and takes it with that key', () => {
    const user = refusal({ runAsUser: 0 });
    expect(user.field).toBe('runtime.kubernetes.runAsUser');
    expect(user.message).toMatch(/runtime\.kubernetes\.allowRootWorkspaces: true/);
    expect(refusal({ runAsGroup: 0 }).field).toBe('runtime.kubernetes.runAsGroup');
    expect(parseKubernetesRuntimeConfig({ runAsUser: 0, allowRootWorkspaces: true })).toMatchObject({ runAsUser: 0 });
    expect(parseKubernetesRuntimeConfig({ runAsUser: 1000, runAsGroup: 1001 })).toMatchObject({ runAsGroup: 1001 });
  });
});

describe('kubernetes runtime config: network policies', () => {
  it('refuses a proxy selector that workspace pods could match (workspace-to-workspace traffic)', () => {
    const field = 'runtime.kubernetes.networkPolicies.ingressFrom.podLabels';
    for (const podLabels of [
      {},
      { 'app.kubernetes.io/managed-by': 'workbay' },
      { 'app.kubernetes.io/component': 'workspace', 'workbay.dev/owner': 'alice' },
    ]) {
      expect(refusal({ networkPolicies: { ingressFrom: { podLabels } } }).field, JSON.stringify(podLabels)).toBe(field);
    }
    // An extra label every workspace pod carries is no proxy label either.
    expect(
      refusal({ labels: { team: 'a' }, networkPolicies: { ingressFrom: { podLabels: { team: 'a' } } } }).field,
    ).toBe(field);
    const ok = { networkPolicies: { ingressFrom: { podLabels: { 'app.kubernetes.io/name': 'edge-proxy' } } } };
    expect(() => parseKubernetesRuntimeConfig(ok)).not.toThrow();
  });

  it('takes network-aligned IPv4/IPv6 CIDRs only, and port ranges in order', () => {
    expect(refusal({ networkPolicies: { allowedNetworks: ['10.0.0.1/8'] } }).field).toBe(
      'runtime.kubernetes.networkPolicies.allowedNetworks[0]',
    );
    expect(refusal({ networkPolicies: { blockedNetworks: ['::/0'] } }).message).toMatch(/narrower than \/0/);
    expect(refusal({ networkPolicies: { dns: { networks: ['169.254.20.10'] } } }).field).toBe(
      'runtime.kubernetes.networkPolicies.dns.networks[0]',
    );
    expect(refusal({ networkPolicies: { ingressPorts: [{ port: 3000, endPort: 2000 }] } }).message).toMatch(
      /endPort must be >= port/,
    );
    expect(cidrProblem('10.1.2.0/24')).toBeUndefined();
    expect(cidrProblem('2001:db8::/32')).toBeUndefined();
    expect(cidrProblem('2001:db8::1/32')).toMatch(/network address/);
    expect(cidrProblem('fe80::/10')).toBeUndefined();
    expect(cidrProblem('::ffff:10.0.0.0/104')).toMatch(/CIDR/);
    expect(cidrProblem('10.0.0.0/33')).toMatch(/CIDR/);
    expect(cidrProblem('example.com/8')).toMatch(/CIDR/);
  });

  it('can be switched off', () => {
    expect(parseKubernetesRuntimeConfig({ networkPolicies: { enabled: false } }).networkPolicies.enabled).toBe(false);
  });
});
