/**
 * deploy/kubernetes applied to a real kube-apiserver (every file, through kustomization.yaml), then every API call
 * the manager's code makes, made under the `workbay-manager` ServiceAccount's own token (TokenRequest), not an
 * admin token: a rule missing from rbac.yaml fails here. The runtime, NodeDaemons and the Lease elector run as
 * they do in the manager; the Workspace-object repository's calls are made with the same client methods it uses.
 * Calls outside the Role must be Forbidden.
 */
import { join } from 'node:path';
import {
  AppsV1Api,
  CoreV1Api,
  CustomObjectsApi,
  KubeConfig,
  NetworkingV1Api,
  PatchStrategy,
  setHeaderOptions,
} from '@kubernetes/client-node';
import type { V1Secret } from '@kubernetes/client-node';
import { PermissionDeniedError } from '@workbay/api';
import {
  KubernetesRuntime,
  LeaseLeaderElector,
  NodeDaemons,
  apiError,
  podName,
  workspaceResource,
} from '@workbay/manager/kubernetes';
import type { KubernetesRuntimeConfigInput } from '@workbay/manager/kubernetes';
import { loadKustomization, startKubernetesCluster } from '@workbay/testing';
import type { KubernetesObject, KubernetesTestCluster, KubernetesWatchEvent } from '@workbay/testing';
import { firstValueFrom } from 'rxjs';
import { filter, take } from 'rxjs/operators';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const repoRoot = join(__dirname, '..', '..', '..', '..');
const namespace = 'workbay';
let cluster: KubernetesTestCluster;
let applied: KubernetesObject[];
let token: string;
let asManager: KubeConfig;

beforeAll(async () => {
  cluster = await startKubernetesCluster();
  applied = await cluster.apply(await loadKustomization(join(repoRoot, 'deploy', 'kubernetes')));
  token = await cluster.serviceAccountToken(namespace, 'workbay-manager', 3600);
  asManager = new KubeConfig();
  asManager.loadFromString(cluster.kubeConfigYaml(token));
}, 120_000);
afterAll(async () => {
  await cluster?.stop();
});

/** What the kubelet reports / finishes (admin: the kubelet is not the manager). */
async function kubelet(method: string, path: string, body?: unknown): Promise<void> {
  const r = await cluster.request(method, path, body);
  expect(r.status, JSON.stringify(r.body).slice(0, 300)).toBeLessThan(300);
}

/** A watch under the manager's token that the server ends after a second; rejects when it is refused. */
async function watchOnce(path: string): Promise<KubernetesWatchEvent[]> {
  const events: KubernetesWatchEvent[] = [];
  const watch = cluster.watch(path, (e) => events.push(e), { token, timeoutSeconds: 1 });
  await watch.done;
  return events;
}

async function forbidden(call: () => Promise<unknown>): Promise<void> {
  const error = await call().then(
    () => undefined,
    (e: unknown) => apiError(e, 'call'),
  );
  expect(error).toBeInstanceOf(PermissionDeniedError);
}

describe('deploy/kubernetes on a real API server', () => {
  it('applies every manifest', () => {
    const kinds = applied.map((o) => `${o.kind}/${o.metadata?.name}`);
    expect(kinds).toEqual(
      expect.arrayContaining([
        'Namespace/workbay',
        'CustomResourceDefinition/workspaces.workbay.dev',
        'ServiceAccount/workbay-manager',
        'ServiceAccount/workbay-daemon',
        'ServiceAccount/workspace',
        'Role/workbay-manager',
        'RoleBinding/workbay-manager',
        'ConfigMap/workbay-config',
        'Deployment/workbay-manager',
        'DaemonSet/workbay-daemon',
        'Service/workbay-manager',
        'Service/workbay-proxy',
        'Service/workbay-daemon',
      ]),
    );
  });

  it('lets the manager run workspace pods and find daemons under its own token', async () => {
    // A daemon pod as the DaemonSet would make it, Running on node-a (the kubelet reports it).
    await kubelet('POST', `/api/v1/namespaces/${namespace}/pods`, {
      metadata: { name: 'workbay-daemon-a', labels: { 'app.kubernetes.io/name': 'workbay-daemon' } },
      spec: {
        nodeName: 'node-a',
        containers: [{ name: 'daemon', image: 'workbay/daemon:0.1.0', ports: [{ name: 'grpc', containerPort: 7721 }] }],
      },
    });
    await kubelet('PATCH', `/api/v1/namespaces/${namespace}/pods/workbay-daemon-a/status`, {
      status: { phase: 'Running', podIP: '10.244.0.9', conditions: [{ type: 'Ready', status: 'True' }] },
    });
    const daemons = await NodeDaemons.start({ kubeConfig: asManager, namespace });
    try {
      for (let i = 0; i < 200 && !daemons.addressOf('node-a'); i++) await new Promise((r) => setTimeout(r, 25));
      expect(daemons.addressOf('node-a')).toBe('10.244.0.9:7721');
    } finally {
      daemons.close();
    }

    const runtime = await KubernetesRuntime.create({
      kubeConfig: asManager,
      config: { namespace, pollIntervalMs: 50, stopTimeoutMs: 10_000, serviceAccountName: 'workspace' },
    });
    // The workspace NetworkPolicies, made under the manager's own token.
    expect(runtime.networkPolicyChanges.created.sort()).toEqual([
      'workbay-workspace-egress',
      'workbay-workspace-ingress',
    ]);
    try {
      const instanceId = 'rbac-1';
      const ready = firstValueFrom(
        runtime.events$.pipe(
          filter((e) => e.type === 'ready'),
          take(1),
        ),
      );
      await runtime.start({
        instanceId,
        workspaceId: 'ws-rbac',
        owner: 'alice',
        image: 'ghcr.io/acme/ide:1',
        url: 'http://ws-rbac.example',
        headless: false,
        type: 'regular',
        contentDir: '/var/lib/workbay/workspaces/rbac-1',
        env: {},
        ports: [23000],
        className: 'g1-standard',
        resources: {},
        nodeName: 'node-a',
      });
      const name = podName(instanceId);
      await kubelet('PATCH', `/api/v1/namespaces/${namespace}/pods/${name}/status`, {
        status: { phase: 'Running', podIP: '10.244.0.10', conditions: [{ type: 'Ready', status: 'True' }] },
      });
      await ready;
      expect(await runtime.inspect(instanceId)).toMatchObject({ status: 'running' });
      expect((await runtime.list()).map((s) => s.instanceId)).toContain(instanceId);
      const stopped = runtime.stop(instanceId, { gracePeriodMs: 1000 });
      for (let i = 0; i < 200; i++) {
        const pod = await cluster.request<{ metadata?: { deletionTimestamp?: string } }>(
          'GET',
          `/api/v1/namespaces/${namespace}/pods/${name}`,
        );
        if (pod.body.metadata?.deletionTimestamp) break;
        await new Promise((r) => setTimeout(r, 25));
      }
      await kubelet('DELETE', `/api/v1/namespaces/${namespace}/pods/${name}?gracePeriodSeconds=0`);
      await stopped;
    } finally {
      await runtime.close();
    }
  });

  it('lets the manager update the workspace NetworkPolicies and delete them when switched off', async () => {
    const policies = async (): Promise<string[]> =>
      (
        await cluster.request<{ items: { metadata: { name: string } }[] }>(
          'GET',
          `/apis/networking.k8s.io/v1/namespaces/${namespace}/networkpolicies`,
        )
      ).body.items
        .map((p) => p.metadata.name)
        .sort();
    const start = async (config: KubernetesRuntimeConfigInput) => {
      const runtime = await KubernetesRuntime.create({ kubeConfig: asManager, config: { namespace, ...config } });
      await runtime.close();
      return runtime.networkPolicyChanges;
    };
    expect((await start({ networkPolicies: { allowedNetworks: ['10.9.0.0/16'] } })).updated).toContain(
      'workbay-workspace-egress',
    );
    expect((await start({ networkPolicies: { enabled: false } })).deleted.sort()).toEqual([
      'workbay-workspace-egress',
      'workbay-workspace-ingress',
    ]);
    expect(await policies()).toEqual([]);
    expect((await start({})).created).toHaveLength(2);
    expect(await policies()).toEqual(['workbay-workspace-egress', 'workbay-workspace-ingress']);
  });

  it('lets the manager keep Workspace objects, their status and their Secrets', async () => {
    const objects = asManager.makeApiClient(CustomObjectsApi);
    const core = asManager.makeApiClient(CoreV1Api);
    const { group, version, plural } = workspaceResource;
    const target = { group, version, plural, namespace };
    const secretName = 'ws-rbac-2-secrets';
    await core.createNamespacedSecret({
      namespace,
      body: {
        metadata: { name: secretName, labels: { 'app.kubernetes.io/managed-by': 'workbay' } },
        stringData: { ownerToken: 'x'.repeat(32) },
      } as V1Secret,
    });
    expect((await core.readNamespacedSecret({ name: secretName, namespace })).metadata?.name).toBe(secretName);
    expect((await core.listNamespacedSecret({ namespace })).items.map((s) => s.metadata?.name)).toContain(secretName);
    expect((await watchOnce(`/api/v1/namespaces/${namespace}/secrets`)).some((e) => e.type === 'ERROR')).toBe(false);

    const body = {
      apiVersion: `${group}/${version}`,
      kind: 'Workspace',
      metadata: { name: 'rbac-2', labels: { 'app.kubernetes.io/managed-by': 'workbay' } },
      spec: {
        ownership: { owner: 'alice', workspaceId: 'ws-rbac-2' },
        type: 'regular',
        class: 'g1-standard',
        image: { workspace: 'ghcr.io/acme/ide:1' },
        secretRef: { name: secretName },
      },
    };
    await objects.createNamespacedCustomObject({ ...target, body });
    const read = (await objects.getNamespacedCustomObject({ ...target, name: 'rbac-2' })) as {
      metadata: { resourceVersion: string };
    };
    const list = (await objects.listNamespacedCustomObject(target)) as { items: unknown[] };
    expect(list.items).toHaveLength(1);
    expect((await watchOnce(`/apis/${group}/${version}/namespaces/${namespace}/${plural}`)).length).toBeGreaterThan(0);
    await objects.patchNamespacedCustomObject(
      { ...target, name: 'rbac-2', body: { metadata: { annotations: { 'workbay.dev/desired': 'stop' } } } },
      setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
    );
    const current = (await objects.getNamespacedCustomObject({ ...target, name: 'rbac-2' })) as Record<string, unknown>;
    await objects.replaceNamespacedCustomObjectStatus({
      ...target,
      name: 'rbac-2',
      body: { ...current, status: { phase: 'running' } },
    });
    await objects.patchNamespacedCustomObjectStatus(
      { ...target, name: 'rbac-2', body: { status: { phase: 'stopping' } } },
      setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
    );
    expect(read.metadata.resourceVersion).toBeTruthy();
    await objects.deleteNamespacedCustomObject({ ...target, name: 'rbac-2' });
    await core.deleteNamespacedSecret({ name: secretName, namespace });
  });

  it('lets the manager elect a leader through the Lease', async () => {
    const elector = new LeaseLeaderElector({
      kubeConfig: asManager,
      namespace,
      identity: 'workbay-manager-0',
      retryPeriodMs: 100,
    });
    const leading = firstValueFrom(elector.isLeader$.pipe(filter(Boolean), take(1)));
    elector.start();
    await leading;
    await elector.stop();
    const lease = await cluster.request<{ spec: { holderIdentity?: string } }>(
      'GET',
      `/apis/coordination.k8s.io/v1/namespaces/${namespace}/leases/workbay-manager-leader`,
    );
    // Released on stop (an update): the next replica takes over at once.
    expect(lease.body.spec.holderIdentity).toBeUndefined();
  });

  it('forbids the manager everything else', async () => {
    const core = asManager.makeApiClient(CoreV1Api);
    const apps = asManager.makeApiClient(AppsV1Api);
    await forbidden(() => core.listNamespacedSecret({ namespace: 'default' }));
    await forbidden(() => core.listNamespacedSecret({ namespace: 'kube-system' }));
    await forbidden(() => core.listNamespacedPod({ namespace: 'default' }));
    await forbidden(() =>
      apps.createNamespacedDeployment({
        namespace,
        body: {
          metadata: { name: 'x' },
          spec: {
            selector: { matchLabels: { a: 'b' } },
            template: { metadata: { labels: { a: 'b' } }, spec: { containers: [{ name: 'x', image: 'x' }] } },
          },
        },
      }),
    );
    await forbidden(() => core.listNamespacedConfigMap({ namespace }));
    await forbidden(() =>
      core.createNamespacedEvent({
        namespace,
        body: { metadata: { name: 'e' }, involvedObject: {}, reason: 'x', message: 'x' },
      }),
    );
    await forbidden(() => core.listNode());
    await forbidden(() =>
      asManager.makeApiClient(NetworkingV1Api).listNamespacedNetworkPolicy({ namespace: 'default' }),
    );
    await forbidden(() =>
      core.createNamespacedPodBinding({
        name: 'any',
        namespace,
        body: { metadata: { name: 'any' }, target: { kind: 'Node', name: 'node-a' } },
      }),
    );
    await forbidden(() => core.patchNamespacedPod({ name: 'any', namespace, body: {} }));
    await forbidden(() =>
      core.createNamespacedServiceAccountToken({
        name: 'workbay-manager',
        namespace,
        body: { spec: { audiences: [] } },
      }),
    );
    // The daemon's account has no Role at all.
    const daemonToken = await cluster.serviceAccountToken(namespace, 'workbay-daemon', 600);
    const asDaemon = new KubeConfig();
    asDaemon.loadFromString(cluster.kubeConfigYaml(daemonToken));
    await forbidden(() => asDaemon.makeApiClient(CoreV1Api).listNamespacedPod({ namespace }));
  });
});
