/**
 * Static checks of deploy/kubernetes: every document parses, selectors select their own pod labels, the RBAC
 * grants what the kubernetes runtime and the leader election call, and kustomize lists every file.
 * (Not a substitute for applying them to a cluster; see deploy/kubernetes/README.md.)
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

  it('run one manager replica (until leader election gates it) and a daemon per node, each selecting its own pods', () => {
    const manager = find('Deployment', 'workbay-manager') as unknown as {
      spec: {
        replicas: number;
        selector: { matchLabels: Record<string, string> };
        template: { metadata: { labels: Record<string, string> }; spec: { serviceAccountName: string } };
      };
    };
    expect(manager.spec.replicas).toBe(1);
    expect(manager.spec.template.metadata.labels).toMatchObject(manager.spec.selector.matchLabels);
    const daemon = find('DaemonSet', 'workbay-daemon') as unknown as typeof manager;
    expect(daemon.spec.template.metadata.labels).toMatchObject(daemon.spec.selector.matchLabels);
    for (const svc of objects.filter((o) => o.kind === 'Service')) {
      const selector = (svc.spec as { selector: Record<string, string> }).selector;
      const target = [manager, daemon].find((w) =>
        Object.entries(selector).every(([k, v]) => w.spec.template.metadata.labels[k] === v),
      );
      expect(target, `Service ${svc.metadata.name} selects nothing`).toBeDefined();
    }
    expect(find('ServiceAccount', manager.spec.template.spec.serviceAccountName)).toBeDefined();
  });

  it('grant the manager what the runtime and the leader election call', () => {
    const role = find('Role', 'workbay-manager');
    const allows = (group: string, resource: string, verb: string): boolean =>
      role.rules!.some((r) => r.apiGroups.includes(group) && r.resources.includes(resource) && r.verbs.includes(verb));
    for (const verb of ['get', 'list', 'watch', 'create', 'delete'])
      expect(allows('', 'pods', verb), `pods ${verb}`).toBe(true);
    for (const verb of ['get', 'create', 'update'])
      expect(allows('coordination.k8s.io', 'leases', verb), `leases ${verb}`).toBe(true);
    expect(allows('workbay.dev', 'workspaces/status', 'update')).toBe(true);
    const binding = find('RoleBinding', 'workbay-manager') as unknown as {
      subjects: { name: string }[];
      roleRef: { name: string };
    };
    expect(binding.roleRef.name).toBe('workbay-manager');
    expect(binding.subjects[0]!.name).toBe('workbay-manager');
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
    });
    expect(() => parseLocalRuntimeConfig(manager.runtime)).toThrow(/runtime\.local\.kind/);
  });
});
