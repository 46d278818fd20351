/**
 * Static checks of deploy/kubernetes: every document parses, selectors select their own pod labels, the RBAC
 * grants exactly the calls the code makes, workspace isolation is left to the runtime (its NetworkPolicies, a
 * hardened pod) and the namespace's Pod Security level says what it can enforce, and kustomize lists every file.
 * deploy-manifests.spec.ts applies them to a real API server and makes those calls under the manager's token.
 */
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseAllDocuments } from 'yaml';
import { describe, expect, it } from 'vitest';
import { parseLocalRuntimeConfig } from '../local/config.js';
import { parseKubernetesRuntimeConfig } from './config.js';

const dir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../../../deploy/kubernetes');

interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string> };
  spec?: Record<string, unknown>;
  rules?: { apiGroups: string[]; resources: string[]; verbs: string[] }[];
  data?: Record<string, string>;
}

const files = readdirSync(dir).filter((f) => f.endsWith('.yaml'));
const objects: (K8sObject & { file: string })[] = files.flatMap((file) =>
  parseAllDocuments(readFileSync(path.join(dir, file), 'utf8')).map((doc) => {
    expect(doc.errors, file).toEqual([]);
    return { ...(doc.toJS() as K8sObject), file };
  }),
);
const find = (kind: string, name: string): K8sObject & { file: string } => {
  const found = objects.find((o) => o.kind === kind && o.metadata.name === name);
  if (!found) throw new Error(`${kind}/${name} missing`);
  return found;
};

describe('deploy/kubernetes manifests', () => {
  it('parse, carry apiVersion/kind/name, and are all listed in the kustomization', () => {
    for (const o of objects.filter((x) => x.kind !== 'Kustomization')) {
      expect(o.apiVersion, o.file).toBeTruthy();
      expect(o.metadata?.name, o.file).toBeTruthy();
    }
    const kustomization = objects.find((o) => o.kind === 'Kustomization') as unknown as { resources: string[] };
    expect([...kustomization.resources].sort()).toEqual(files.filter((f) => f !== 'kustomization.yaml').sort());
  });

  it('define the workspaces.workbay.dev CRD', () => {
    const crd = find('CustomResourceDefinition', 'workspaces.workbay.dev') as unknown as {
      spec: {
        group: string;
        scope: string;
        names: { kind: string; plural: string };
        versions: { storage: boolean; subresources: object }[];
      };
    };
    expect(crd.spec).toMatchObject({
      group: 'workbay.dev',
      scope: 'Namespaced',
      names: { kind: 'Workspace', plural: 'workspaces' },
    });
    expect(crd.spec.versions.filter((v) => v.storage)).toHaveLength(1);
    expect(crd.spec.versions[0]!.subresources).toEqual({ status: {} });
  });

  it('run two manager replicas (one leads) and a daemon per node, each selecting its own pods', () => {
    const manager = find('Deployment', 'workbay-manager') as unknown as {
      spec: {
        replicas: number;
        selector: { matchLabels: Record<string, string> };
        template: {
          metadata: { labels: Record<string, string> };
          spec: {
            serviceAccountName: string;
            containers: { env?: { name: string }[]; ports?: { name?: string }[] }[];
            volumes: { name: string; emptyDir?: { medium?: string }; secret?: { secretName: string } }[];
          };
        };
      };
    };
    expect(manager.spec.replicas).toBeGreaterThanOrEqual(2);
    // Identity for the Lease, and no state on the pod: the only emptyDir is scratch (in memory, small).
    expect(manager.spec.template.spec.containers[0]!.env!.map((e) => e.name)).toEqual(
      expect.arrayContaining(['POD_NAME', 'POD_NAMESPACE']),
    );
    const volumes = manager.spec.template.spec.volumes;
    expect(volumes.filter((v) => v.emptyDir).map((v) => v.name)).toEqual(['scratch']);
    expect(volumes.find((v) => v.secret)?.secret?.secretName).toBe('workbay-manager-secrets');
    expect(manager.spec.template.metadata.labels).toMatchObject(manager.spec.selector.matchLabels);
    const daemon = find('DaemonSet', 'workbay-daemon') as unknown as typeof manager;
    expect(daemon.spec.template.metadata.labels).toMatchObject(daemon.spec.selector.matchLabels);
    // NodeDaemons finds a node's daemon by this label and the port named `grpc`.
    expect(daemon.spec.template.metadata.labels['app.kubernetes.io/name']).toBe('workbay-daemon');
    expect(daemon.spec.template.spec.containers[0]!.ports!.map((p) => p.name)).toContain('grpc');
    for (const svc of objects.filter((o) => o.kind === 'Service')) {
      const selector = (svc.spec as { selector: Record<string, string> }).selector;
      const target = [manager, daemon].find((w) =>
        Object.entries(selector).every(([k, v]) => w.spec.template.metadata.labels[k] === v),
      );
      expect(target, `Service ${svc.metadata.name} selects nothing`).toBeDefined();
    }
    expect(find('ServiceAccount', manager.spec.template.spec.serviceAccountName)).toBeDefined();
  });

  it('grant the manager exactly what its code calls, and the daemon nothing', () => {
    const role = find('Role', 'workbay-manager');
    const granted = role
      .rules!.flatMap((r) =>
        r.apiGroups.flatMap((g) => r.resources.flatMap((res) => r.verbs.map((v) => `${g}/${res}:${v}`))),
      )
      .sort();
    const expected = [
      ...['get', 'list', 'watch', 'create', 'delete'].map((v) => `/pods:${v}`),
      ...['workspaces', 'workspaces/status'].flatMap((res) =>
        ['get', 'list', 'watch', 'create', 'update', 'patch', 'delete'].map((v) => `workbay.dev/${res}:${v}`),
      ),
      ...['get', 'list', 'watch', 'create', 'delete'].map((v) => `/secrets:${v}`),
      ...['get', 'create', 'update'].map((v) => `coordination.k8s.io/leases:${v}`),
      ...['list', 'create', 'update', 'delete'].map((v) => `networking.k8s.io/networkpolicies:${v}`),
    ].sort();
    expect(granted).toEqual(expected);
    const binding = find('RoleBinding', 'workbay-manager') as unknown as {
      subjects: { name: string }[];
      roleRef: { name: string };
    };
    expect(binding.roleRef.name).toBe('workbay-manager');
    expect(binding.subjects[0]!.name).toBe('workbay-manager');
    // The daemon does not call the API: a ServiceAccount without a token, no Role, no binding.
    expect(find('ServiceAccount', 'workbay-daemon')).toMatchObject({ automountServiceAccountToken: false });
    expect(objects.filter((o) => o.kind === 'Role' || o.kind === 'RoleBinding').map((o) => o.metadata.name)).toEqual([
      'workbay-manager',
      'workbay-manager',
    ]);
    expect(objects.some((o) => o.kind === 'ClusterRole' || o.kind === 'ClusterRoleBinding')).toBe(false);
  });

  it('leave workspace NetworkPolicies to the runtime, and label the namespace with the level it can enforce', () => {
    // The runtime keeps them (network-policies.ts) and deletes them when switched off: a static copy here would
    // outlive `networkPolicies.enabled: false` and disagree with the config.
    expect(objects.filter((o) => o.kind === 'NetworkPolicy')).toEqual([]);
    // The daemon and the workspaces' hostPath need "privileged"; "restricted" is audited.
    expect(find('Namespace', 'workbay').metadata.labels).toMatchObject({
      'pod-security.kubernetes.io/enforce': 'privileged',
      'pod-security.kubernetes.io/audit': 'restricted',
    });
  });

  it('configure a valid kubernetes runtime section', async () => {
    const { parse } = await import('yaml');
    const config = find('ConfigMap', 'workbay-config');
    const manager = parse(config.data!['manager.yaml']!) as { runtime: unknown; daemon: { spawn: boolean } };
    expect(manager.daemon.spawn).toBe(false);
    expect(parseKubernetesRuntimeConfig(manager.runtime)).toMatchObject({
      kind: 'kubernetes',
      namespace: 'workbay',
      runAsUser: 33333,
      allowRootWorkspaces: false,
      networkPolicies: { enabled: true },
      controlPlane: { store: 'kubernetes' },
      defaultImage: { image: 'workbay/manager:0.1.0' },
    });
    expect(() => parseLocalRuntimeConfig(manager.runtime)).toThrow(/runtime\.local\.kind/);
    // The daemon hands each workspace content owned by one uid, the very uid the pods run as: otherwise the
    // workspace could not write its own content (the daemon's per-workspace ids are for the local runtime).
    const daemon = parse(config.data!['daemon.yaml']!) as { workspaceIds?: { base: number; shared: boolean } };
    expect(daemon.workspaceIds).toMatchObject({ base: 33333, shared: true });
  });
});
