import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadKustomization } from './apply.js';
import type { KubernetesObject } from './client.js';
import { startKubernetesCluster } from './cluster.js';
import type { KubernetesTestCluster } from './cluster.js';

const repoRoot = join(import.meta.dirname, '..', '..', '..', '..');
const deployDir = join(repoRoot, 'deploy', 'kubernetes');

describe('startKubernetesCluster (real etcd + kube-apiserver)', () => {
  let cluster: KubernetesTestCluster;
  beforeAll(async () => {
    const started = Date.now();
    cluster = await startKubernetesCluster({ namespace: 'kit' });
    console.log(`kubernetes test cluster ready in ${Date.now() - started} ms`);
  });
  afterAll(async () => {
    await cluster?.stop();
  });

  it('is ready, trusts only its own CA, and refuses an unknown token', async () => {
    expect(cluster.url).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
    const version = await cluster.request<{ gitVersion: string }>('GET', '/version');
    expect(version).toMatchObject({ status: 200, body: { gitVersion: 'v1.37.2' } });
    const ns = await cluster.request<KubernetesObject>('GET', '/api/v1/namespaces/kit');
    expect(ns.status).toBe(200);
    // The CA is the API server's own certificate; without it TLS fails.
    await expect(fetch(`${cluster.url}/readyz`)).rejects.toThrow();
    const stranger = await cluster.request('GET', '/api/v1/namespaces', undefined, { token: 'not-a-token' });
    expect(stranger.status).toBe(401);
  });

  it('applies the CRD from deploy/kubernetes; a Workspace round-trips and status is a subresource', async () => {
    const crd = readFileSync(join(deployDir, 'crd-workspaces.yaml'), 'utf8');
    await cluster.apply(crd);
    const base = '/apis/workbay.dev/v1alpha1/namespaces/kit/workspaces';
    const workspace = {
      apiVersion: 'workbay.dev/v1alpha1',
      kind: 'Workspace',
      metadata: { name: 'inst-1' },
      spec: {
        ownership: { owner: 'alice', workspaceId: 'ws-a' },
        type: 'regular',
        class: 'default',
        image: { workspace: 'ubuntu' },
        ports: [{ port: 3000 }],
      },
    };
    const [created] = await cluster.apply([workspace], { namespace: 'kit' });
    expect(created!.metadata?.namespace).toBe('kit');
    const read = await cluster.request<{ spec: { ports: { visibility: string }[] } }>('GET', `${base}/inst-1`);
    expect(read.status).toBe(200);
    // The CRD's defaults were applied by the server.
    expect(read.body.spec.ports[0]!.visibility).toBe('private');
    const status = await cluster.request<{ status: { phase: string } }>(
      'PATCH',
      `${base}/inst-1/status`,
      { status: { phase: 'running' } },
      { contentType: 'application/merge-patch+json' },
    );
    expect(status).toMatchObject({ status: 200, body: { status: { phase: 'running' } } });
    const invalid = await cluster.request('POST', base, { ...workspace, metadata: { name: 'bad' }, spec: {} });
    expect(invalid.status).toBe(422);
    // Applying again replaces (create answers 409, the kit PUTs with the current resourceVersion).
    const [again] = await cluster.apply([{ ...workspace, spec: { ...workspace.spec, class: 'large' } }], {
      namespace: 'kit',
    });
    expect((again as { spec: { class: string } }).spec.class).toBe('large');
  });

  it('applies the whole deploy/kubernetes kustomization', async () => {
    const objects = await loadKustomization(deployDir);
    expect(objects.map((o) => o.kind)).toContain('DaemonSet');
    const applied = await cluster.apply(objects);
    expect(applied).toHaveLength(objects.length);
    const sa = await cluster.request('GET', '/api/v1/namespaces/workbay/serviceaccounts/workbay-manager');
    expect(sa.status).toBe(200);
    const manager = await cluster.request<{ spec: { template: { spec: { containers: { image: string }[] } } } }>(
      'GET',
      '/apis/apps/v1/namespaces/workbay/deployments/workbay-manager',
    );
    expect(manager.body.spec.template.spec.containers[0]!.image).toBe('workbay/manager:0.1.0');
  });

  it('answers 409 to a Lease update with a stale resourceVersion', async () => {
    const path = '/apis/coordination.k8s.io/v1/namespaces/kit/leases';
    const lease = {
      apiVersion: 'coordination.k8s.io/v1',
      kind: 'Lease',
      metadata: { name: 'leader' },
      spec: { holderIdentity: 'a', leaseDurationSeconds: 15 },
    };
    const created = await cluster.request<KubernetesObject>('POST', path, lease);
    expect(created.status).toBe(201);
    const stale = created.body.metadata!.resourceVersion;
    const first = await cluster.request('PUT', `${path}/leader`, {
      ...lease,
      metadata: { name: 'leader', resourceVersion: stale },
      spec: { ...lease.spec, holderIdentity: 'b' },
    });
    expect(first.status).toBe(200);
    const second = await cluster.request<{ reason: string }>('PUT', `${path}/leader`, {
      ...lease,
      metadata: { name: 'leader', resourceVersion: stale },
      spec: { ...lease.spec, holderIdentity: 'c' },
    });
    expect(second).toMatchObject({ status: 409, body: { reason: 'Conflict' } });
  });

  it('gives a ServiceAccount without RBAC a token that is refused with 403, and a kubeconfig', async () => {
    await cluster.apply([{ apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name: 'nobody' } }], {
      namespace: 'kit',
    });
    const token = await cluster.serviceAccountToken('kit', 'nobody');
    const whoami = await cluster.request<{ status: { userInfo: { username: string } } }>(
      'POST',
      '/apis/authentication.k8s.io/v1/selfsubjectreviews',
      { apiVersion: 'authentication.k8s.io/v1', kind: 'SelfSubjectReview' },
      { token },
    );
    expect(whoami.body.status.userInfo.username).toBe('system:serviceaccount:kit:nobody');
    const pods = await cluster.request('GET', '/api/v1/namespaces/kit/pods', undefined, { token });
    expect(pods.status).toBe(403);
    await expect(
      cluster.apply([{ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'x' } }], { namespace: 'kit', token }),
    ).rejects.toThrow(/403/);
    const kubeconfig = await cluster.writeKubeconfig(token);
    expect(readFileSync(kubeconfig, 'utf8')).toContain(`server: ${cluster.url}`);
    expect(cluster.kubeConfigYaml(token)).toContain(JSON.stringify(token));
  });

  it('streams a watch from a resourceVersion', async () => {
    const path = '/api/v1/namespaces/kit/configmaps';
    const list = await cluster.request<{ metadata: { resourceVersion: string } }>('GET', path);
    const events: string[] = [];
    let seen!: () => void;
    const arrived = new Promise<void>((resolve) => (seen = resolve));
    const watch = cluster.watch(
      path,
      (event) => {
        if (event.type === 'BOOKMARK') return;
        events.push(`${event.type} ${event.object.metadata?.name}`);
        if (event.type === 'DELETED') seen();
      },
      { resourceVersion: list.body.metadata.resourceVersion },
    );
    await cluster.apply([{ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'watched' }, data: { a: '1' } }], {
      namespace: 'kit',
    });
    await cluster.request('DELETE', `${path}/watched`);
    await arrived;
    watch.stop();
    await watch.done;
    expect(events).toEqual(['ADDED watched', 'DELETED watched']);
  });

  it('restarts the API server on the same port and keeps its data', async () => {
    const before = cluster.url;
    await cluster.apply([{ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'kept' }, data: { k: 'v' } }], {
      namespace: 'kit',
    });
    await cluster.restartApiServer();
    expect(cluster.url).toBe(before);
    const kept = await cluster.request<{ data: { k: string } }>('GET', '/api/v1/namespaces/kit/configmaps/kept');
    expect(kept).toMatchObject({ status: 200, body: { data: { k: 'v' } } });
    // The same CA still verifies the restarted server.
    expect((await cluster.request('GET', '/readyz')).status).toBe(200);
  });
});

describe('startKubernetesCluster cleanup', () => {
  it('stops both servers and removes its files', async () => {
    const cluster = await startKubernetesCluster();
    const caFile = cluster.caFile;
    expect(existsSync(caFile)).toBe(true);
    await cluster.stop();
    await cluster.stop();
    expect(existsSync(caFile)).toBe(false);
    await expect(cluster.request('GET', '/readyz')).rejects.toThrow();
  });

  it('fails with the build command when a binary is missing (never a skip)', async () => {
    const saved = process.env['WORKBAY_TOOLS_DIR'];
    const savedPath = process.env['PATH'];
    process.env['WORKBAY_TOOLS_DIR'] = '/nonexistent/workbay-tools';
    process.env['PATH'] = '/nonexistent';
    try {
      await expect(startKubernetesCluster()).rejects.toThrow(/node scripts\/test-servers\.mjs/);
    } finally {
      process.env['WORKBAY_TOOLS_DIR'] = saved;
      process.env['PATH'] = savedPath;
      if (saved === undefined) delete process.env['WORKBAY_TOOLS_DIR'];
    }
  });
});
