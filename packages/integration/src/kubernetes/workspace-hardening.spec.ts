/**
 * Workspace isolation on Kubernetes against a real kube-apiserver (with etcd): what the API server stores for a
 * workspace pod (every security field, validated by the server), the NetworkPolicies the runtime keeps (created,
 * left alone on a restart, updated on a config change or an operator's edit, deleted when switched off), and what
 * the server's own PodSecurity admission answers for a workspace pod at each level. No kubelet and no CNI run
 * here: nothing proves the kernel or the network enforces any of it, only that the cluster is asked to.
 */
import { KubeConfig } from '@kubernetes/client-node';
import { InvalidArgumentError, PermissionDeniedError } from '@workbay/api';
import type { RuntimeWorkspaceSpec } from '@workbay/api';
import { KubernetesRuntime, networkPolicyNames, podName } from '@workbay/manager/kubernetes';
import type { KubernetesRuntimeConfigInput } from '@workbay/manager/kubernetes';
import { startKubernetesCluster } from '@workbay/testing';
import type { KubernetesTestCluster } from '@workbay/testing';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';

let cluster: KubernetesTestCluster;
let kubeConfig: KubeConfig;
const runtimes: KubernetesRuntime[] = [];

beforeAll(async () => {
  cluster = await startKubernetesCluster();
  kubeConfig = new KubeConfig();
  kubeConfig.loadFromString(cluster.kubeConfigYaml());
}, 120_000);
afterAll(async () => {
  await cluster?.stop();
});
afterEach(async () => {
  for (const r of runtimes.splice(0)) await r.close();
});

let namespaces = 0;
/** A fresh namespace (with PodSecurity labels if given), so that each test sees only its own objects. */
async function namespace(labels: Record<string, string> = {}): Promise<string> {
  const name = `harden-${++namespaces}`;
  await cluster.apply([{ apiVersion: 'v1', kind: 'Namespace', metadata: { name, labels } }]);
  return name;
}

async function newRuntime(ns: string, over: KubernetesRuntimeConfigInput = {}): Promise<KubernetesRuntime> {
  const runtime = await KubernetesRuntime.create({ kubeConfig, config: { namespace: ns, watchRetryMs: 50, ...over } });
  runtimes.push(runtime);
  return runtime;
}

let n = 0;
function spec(): RuntimeWorkspaceSpec {
  n++;
  return {
    instanceId: `hardening-${n}`,
    workspaceId: `ws-hardening-${n}`,
    owner: 'mallory@example.com',
    image: 'ghcr.io/acme/ide:1',
    url: `http://ws-${n}.example`,
    headless: false,
    type: 'regular',
    contentDir: `/var/lib/workbay/workspaces/hardening-${n}`,
    env: {},
    ports: [23000, 3000],
    className: 'g1-standard',
    resources: { cpu: 1, memoryBytes: 1024 ** 3 },
    nodeName: 'node-a',
  };
}

/** Objects as the API server answers them (JSON as stored, not client-node's typed view). */
type Json = Record<string, any>;

async function get(path: string): Promise<Json> {
  const r = await cluster.request<Json>('GET', path);
  expect(r.status, JSON.stringify(r.body).slice(0, 300)).toBe(200);
  return r.body;
}

const policiesPath = (ns: string): string => `/apis/networking.k8s.io/v1/namespaces/${ns}/networkpolicies`;

async function policies(ns: string): Promise<Map<string, Json>> {
  const list = await get(policiesPath(ns));
  return new Map((list['items'] as Json[]).map((p) => [p['metadata']['name'] as string, p]));
}

const workspaceSelector = {
  matchLabels: { 'app.kubernetes.io/managed-by': 'workbay', 'app.kubernetes.io/component': 'workspace' },
};

describe('a workspace pod as the API server stores it', () => {
  it('carries every hardening field, with the default uid 33333 (nothing configured)', async () => {
    const ns = await namespace();
    const runtime = await newRuntime(ns);
    const s = spec();
    await runtime.start(s);
    const pod = await get(`/api/v1/namespaces/${ns}/pods/${podName(s.instanceId)}`);
    const podSpec = pod['spec'];
    expect(podSpec['securityContext']).toEqual({
      runAsUser: 33333,
      runAsGroup: 33333,
      fsGroup: 33333,
      runAsNonRoot: true,
      seccompProfile: { type: 'RuntimeDefault' },
    });
    // The API server omits false host-namespace flags from what it stores (`omitempty`): absent IS false.
    expect([podSpec['hostNetwork'], podSpec['hostPID'], podSpec['hostIPC']]).toEqual([undefined, undefined, undefined]);
    expect(podSpec['shareProcessNamespace']).toBe(false);
    expect(podSpec['automountServiceAccountToken']).toBe(false);
    expect(podSpec['enableServiceLinks']).toBe(false);
    const container = podSpec['containers'][0];
    expect(container['securityContext']).toEqual({
      allowPrivilegeEscalation: false,
      privileged: false,
      capabilities: { drop: ['ALL'] },
      procMount: 'Default',
    });
    expect(container['ports'].every((p: Json) => p['hostPort'] === undefined)).toBe(true);
    expect(podSpec['volumes']).toEqual([{ name: 'workspace', hostPath: { path: s.contentDir, type: 'Directory' } }]);
  });

  it('runs as a configured uid/gid, and as root only with allowRootWorkspaces', async () => {
    const ns = await namespace();
    const custom = await newRuntime(ns, { runAsUser: 1000, runAsGroup: 1001 });
    const s = spec();
    await custom.start(s);
    const pod = await get(`/api/v1/namespaces/${ns}/pods/${podName(s.instanceId)}`);
    expect(pod['spec']['securityContext']).toMatchObject({ runAsUser: 1000, runAsGroup: 1001, runAsNonRoot: true });

    // Refused before anything reaches the cluster, naming the key that would allow it.
    const before = (await get(policiesPath(ns)))['items'].length;
    const refused = KubernetesRuntime.create({ kubeConfig, config: { namespace: ns, runAsUser: 0 } });
    await expect(refused).rejects.toBeInstanceOf(InvalidArgumentError);
    await expect(refused).rejects.toMatchObject({ field: 'runtime.kubernetes.runAsUser' });
    await expect(refused).rejects.toThrow(/runtime\.kubernetes\.allowRootWorkspaces: true/);
    expect((await get(policiesPath(ns)))['items']).toHaveLength(before);

    const root = await newRuntime(ns, { runAsUser: 0, allowRootWorkspaces: true });
    const r = spec();
    await root.start(r);
    const rootPod = await get(`/api/v1/namespaces/${ns}/pods/${podName(r.instanceId)}`);
    expect(rootPod['spec']['securityContext']).toMatchObject({ runAsUser: 0, runAsNonRoot: false });
    expect(rootPod['spec']['containers'][0]['securityContext']).toMatchObject({
      allowPrivilegeEscalation: false,
      capabilities: { drop: ['ALL'] },
    });
  });
});

describe('the workspace NetworkPolicies', () => {
  it('exist after the runtime starts: ingress only from the manager, egress to DNS and public addresses', async () => {
    const ns = await namespace();
    const runtime = await newRuntime(ns);
    expect(runtime.networkPolicyChanges.created.sort()).toEqual(
      [networkPolicyNames.egress, networkPolicyNames.ingress].sort(),
    );
    const stored = await policies(ns);
    expect([...stored.keys()].sort()).toEqual([networkPolicyNames.egress, networkPolicyNames.ingress].sort());

    const ingress = stored.get(networkPolicyNames.ingress)!['spec'];
    expect(ingress).toEqual({
      podSelector: workspaceSelector,
      policyTypes: ['Ingress'],
      // No `ports`: any port, because workspaces open ports at run time (the proxy picks which it dials).
      ingress: [{ from: [{ podSelector: { matchLabels: { 'app.kubernetes.io/name': 'workbay-manager' } } }] }],
    });

    const egress = stored.get(networkPolicyNames.egress)!['spec'];
    expect(egress['podSelector']).toEqual(workspaceSelector);
    expect(egress['policyTypes']).toEqual(['Egress']);
    const [dns, internet, ...rest] = egress['egress'] as Json[];
    expect(rest).toEqual([]);
    expect(dns).toEqual({
      to: [
        {
          namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'kube-system' } },
          podSelector: { matchLabels: { 'k8s-app': 'kube-dns' } },
        },
      ],
      ports: [
        { protocol: 'UDP', port: 53 },
        { protocol: 'TCP', port: 53 },
      ],
    });
    expect(internet!['ports']).toBeUndefined();
    const [v4, v6] = (internet!['to'] as Json[]).map((peer) => peer['ipBlock']);
    expect(v4['cidr']).toBe('0.0.0.0/0');
    expect(v4['except']).toEqual(
      expect.arrayContaining([
        '10.0.0.0/8',
        '172.16.0.0/12',
        '192.168.0.0/16',
        '100.64.0.0/10',
        '169.254.0.0/16',
        '127.0.0.0/8',
        '192.0.2.0/24',
        '198.18.0.0/15',
      ]),
    );
    expect(v6['cidr']).toBe('::/0');
    // The NAT64 forms of the IPv4 list too, stored as written (the API server takes them).
    expect(v6['except']).toEqual(expect.arrayContaining(['fc00::/7', 'fe80::/10', '::1/128', '64:ff9b::a00:0/104']));
  });

  it('are left alone by a restart, and two replicas starting at once agree', async () => {
    const ns = await namespace();
    // Two replicas at once: one creates, the other finds them (a lost create is read again).
    const [a, b] = await Promise.all([newRuntime(ns), newRuntime(ns)]);
    const made = [...a.networkPolicyChanges.created, ...b.networkPolicyChanges.created];
    expect(made.sort()).toEqual([networkPolicyNames.egress, networkPolicyNames.ingress].sort());
    const versions = new Map([...(await policies(ns))].map(([k, p]) => [k, p['metadata']['resourceVersion']]));

    const again = await newRuntime(ns);
    expect(again.networkPolicyChanges).toEqual({
      created: [],
      updated: [],
      deleted: [],
      unchanged: [networkPolicyNames.ingress, networkPolicyNames.egress],
    });
    const after = await policies(ns);
    expect(after.size).toBe(2);
    for (const [name, p] of after) expect(p['metadata']['resourceVersion'], name).toBe(versions.get(name));
  });

  it('are updated when the config changes, and restored after an operator opened them up', async () => {
    const ns = await namespace();
    await newRuntime(ns);
    const changed = await newRuntime(ns, {
      networkPolicies: {
        ingressFrom: { podLabels: { 'app.kubernetes.io/name': 'edge-proxy' } },
        ingressPorts: [{ port: 23000 }, { port: 3000, endPort: 3999 }],
        allowedNetworks: ['10.20.0.0/16', 'fd00:20::/64'],
        blockedNetworks: ['192.88.99.0/24'],
      },
    });
    expect(changed.networkPolicyChanges.updated.sort()).toEqual(
      [networkPolicyNames.egress, networkPolicyNames.ingress].sort(),
    );
    let stored = await policies(ns);
    expect(stored.get(networkPolicyNames.ingress)!['spec']['ingress']).toEqual([
      {
        from: [{ podSelector: { matchLabels: { 'app.kubernetes.io/name': 'edge-proxy' } } }],
        ports: [
          { protocol: 'TCP', port: 23000 },
          { protocol: 'TCP', port: 3000, endPort: 3999 },
        ],
      },
    ]);
    const egress = stored.get(networkPolicyNames.egress)!['spec']['egress'] as Json[];
    expect(egress[1]!['to'][0]['ipBlock']['except']).toContain('192.88.99.0/24');
    expect(egress[2]).toEqual({ to: [{ ipBlock: { cidr: '10.20.0.0/16' } }, { ipBlock: { cidr: 'fd00:20::/64' } }] });

    // An operator (or anything with access) lets workspaces out everywhere: the next start puts it back.
    const path = `${policiesPath(ns)}/${networkPolicyNames.egress}`;
    const opened = await cluster.request('PATCH', path, { spec: { egress: [{}] } });
    expect(opened.status).toBe(200);
    expect((await get(path))['spec']['egress']).toEqual([{}]);
    const back = await newRuntime(ns, changed.config);
    expect(back.networkPolicyChanges.updated).toEqual([networkPolicyNames.egress]);
    stored = await policies(ns);
    expect(stored.get(networkPolicyNames.egress)!['spec']['egress']).toHaveLength(3);
  });

  it('are deleted when switched off; policies Workbay did not make stay', async () => {
    const ns = await namespace();
    await newRuntime(ns);
    const foreign = {
      apiVersion: 'networking.k8s.io/v1',
      kind: 'NetworkPolicy',
      metadata: { name: 'operator-default-deny', namespace: ns },
      spec: { podSelector: {}, policyTypes: ['Ingress'] },
    };
    expect((await cluster.request('POST', policiesPath(ns), foreign)).status).toBe(201);
    const off = await newRuntime(ns, { networkPolicies: { enabled: false } });
    expect(off.networkPolicyChanges.deleted.sort()).toEqual(
      [networkPolicyNames.egress, networkPolicyNames.ingress].sort(),
    );
    expect([...(await policies(ns)).keys()]).toEqual(['operator-default-deny']);
    // Off and already gone: nothing to do, nothing fails.
    expect((await newRuntime(ns, { networkPolicies: { enabled: false } })).networkPolicyChanges.deleted).toEqual([]);
  });
});

describe('PodSecurity admission (the API server’s own plugin) on a workspace pod', () => {
  /** The workspace pod with its hostPath swapped for an emptyDir, created as a dry run in `ns`. */
  async function dryRunWithoutHostPath(ns: string, from: Json): Promise<number> {
    const body = {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name: `${from['metadata']['name']}-x`, labels: from['metadata']['labels'] },
      spec: { ...from['spec'], volumes: [{ name: 'workspace', emptyDir: {} }] },
    };
    return (await cluster.request('POST', `/api/v1/namespaces/${ns}/pods?dryRun=All`, body)).status;
  }

  it('restricted: refused for the hostPath volume only; the same pod without it passes', async () => {
    const ns = await namespace({ 'pod-security.kubernetes.io/enforce': 'restricted' });
    const runtime = await newRuntime(ns);
    const s = spec();
    const refused = runtime.start(s);
    await expect(refused).rejects.toBeInstanceOf(PermissionDeniedError);
    const message = await refused.then(
      () => '',
      (e: Error) => e.message,
    );
    console.log(`restricted answered: ${message}`);
    // One violation and no other: the restricted profile's volume-type rule (hostPath). Every other control of
    // "restricted" (privilege escalation, capabilities, non-root, seccomp, host namespaces, ports, /proc) passes.
    expect(message).toMatch(
      /violates PodSecurity "restricted:latest": restricted volume types \(volume "workspace" uses restricted volume type "hostPath"\)$/,
    );
    // The proof: with an emptyDir instead, the same pod (as a privileged namespace stored it) is admitted.
    const open = await namespace();
    const plain = await newRuntime(open);
    await plain.start(s);
    const stored = await get(`/api/v1/namespaces/${open}/pods/${podName(s.instanceId)}`);
    expect(await dryRunWithoutHostPath(ns, stored)).toBe(201);
  });

  it('baseline: refused (baseline forbids hostPath too); privileged: admitted', async () => {
    const baseline = await namespace({ 'pod-security.kubernetes.io/enforce': 'baseline' });
    const refused = (await newRuntime(baseline)).start(spec());
    await expect(refused).rejects.toThrow(
      /violates PodSecurity "baseline:latest": hostPath volumes \(volume "workspace"\)$/,
    );
    const privileged = await namespace({
      'pod-security.kubernetes.io/enforce': 'privileged',
      'pod-security.kubernetes.io/warn': 'restricted',
      'pod-security.kubernetes.io/audit': 'restricted',
    });
    const s = spec();
    await (await newRuntime(privileged)).start(s);
    expect((await get(`/api/v1/namespaces/${privileged}/pods/${podName(s.instanceId)}`))['metadata']['name']).toBe(
      podName(s.instanceId),
    );
  });
});
