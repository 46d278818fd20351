/**
 * LeaseLeaderElector on a real kube-apiserver: the Lease's resourceVersion (409 Conflict on a stale one) is what
 * keeps two replicas from both winning, so it is proven against the server that enforces it.
 */
import net from 'node:net';
import { KubeConfig } from '@kubernetes/client-node';
import { LeaseLeaderElector } from '@workbay/manager/kubernetes';
import { startKubernetesCluster } from '@workbay/testing';
import type { KubernetesTestCluster } from '@workbay/testing';
import { firstValueFrom } from 'rxjs';
import { filter, take } from 'rxjs/operators';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const namespace = 'leader';
let cluster: KubernetesTestCluster;
let kubeConfig: KubeConfig;
let leaseNumber = 0;

beforeAll(async () => {
  cluster = await startKubernetesCluster();
  await cluster.apply([{ apiVersion: 'v1', kind: 'Namespace', metadata: { name: namespace } }]);
  kubeConfig = new KubeConfig();
  kubeConfig.loadFromString(cluster.kubeConfigYaml());
}, 120_000);
afterAll(async () => {
  await cluster?.stop();
});

const elector = (leaseName: string, identity: string): LeaseLeaderElector =>
  new LeaseLeaderElector({ kubeConfig, namespace, leaseName, identity, leaseDurationSeconds: 15, retryPeriodMs: 100 });

const becomes = (e: LeaseLeaderElector, value: boolean): Promise<boolean> =>
  firstValueFrom(
    e.isLeader$.pipe(
      filter((v) => v === value),
      take(1),
    ),
  );

async function lease(name: string): Promise<{ holderIdentity?: string; leaseTransitions?: number }> {
  const r = await cluster.request<{ spec: { holderIdentity?: string; leaseTransitions?: number } }>(
    'GET',
    `/apis/coordination.k8s.io/v1/namespaces/${namespace}/leases/${name}`,
  );
  return r.body.spec;
}

/** Lets `rounds` election rounds (retryPeriodMs each) pass. */
const rounds = (count: number): Promise<void> => new Promise((r) => setTimeout(r, count * 100));

describe('LeaseLeaderElector on a real API server', () => {
  it('exactly one replica leads; a released lease passes to another replica at once', async () => {
    const name = `l${++leaseNumber}`;
    const a = elector(name, 'manager-a');
    const b = elector(name, 'manager-b');
    a.start();
    await becomes(a, true);
    b.start();
    await rounds(4);
    expect([a.isLeader(), b.isLeader()]).toEqual([true, false]);
    expect((await lease(name)).holderIdentity).toBe('manager-a');

    await a.stop();
    await becomes(b, true);
    expect(await lease(name)).toMatchObject({ holderIdentity: 'manager-b', leaseTransitions: 1 });
    await b.stop();
  });

  it('takes over a lease its holder stopped renewing, once it expired', async () => {
    const name = `l${++leaseNumber}`;
    // A holder that crashed: the lease was last renewed a while ago by somebody else.
    const renewTime = new Date(Date.now() - 500).toISOString().replace('Z', '000Z');
    const created = await cluster.request('POST', `/apis/coordination.k8s.io/v1/namespaces/${namespace}/leases`, {
      apiVersion: 'coordination.k8s.io/v1',
      kind: 'Lease',
      metadata: { name },
      spec: { holderIdentity: 'crashed', leaseDurationSeconds: 1, renewTime },
    });
    expect(created.status).toBe(201);
    const c = elector(name, 'manager-c');
    c.start();
    await becomes(c, true);
    expect((await lease(name)).holderIdentity).toBe('manager-c');
    await c.stop();
  });

  it('never lets two replicas win the same round', async () => {
    const name = `l${++leaseNumber}`;
    const replicas = ['r1', 'r2', 'r3', 'r4'].map((id) => elector(name, id));
    const leaders = new Set<string>();
    for (const r of replicas) r.isLeader$.pipe(filter(Boolean)).subscribe(() => leaders.add(r.identity));
    replicas.forEach((r) => r.start());
    await firstValueFrom(replicas[0]!.isLeader$.pipe(take(1)));
    await rounds(8);
    expect(replicas.filter((r) => r.isLeader())).toHaveLength(1);
    // Nobody else ever became leader while the first holder kept renewing.
    expect(leaders.size).toBe(1);
    await Promise.all(replicas.map((r) => r.stop()));
  });

  it('steps down by its renew deadline when the API server takes its calls and never answers', async () => {
    const name = `l${++leaseNumber}`;
    // A TCP relay to the API server that can turn into a black hole: connections stay open, nothing comes back.
    const upstream = new URL(cluster.url);
    let blackHole = false;
    const sockets = new Set<net.Socket>();
    const relay = net.createServer((client) => {
      const server = net.connect(Number(upstream.port), upstream.hostname);
      sockets.add(client).add(server);
      client.on('data', (chunk) => !blackHole && server.write(chunk));
      server.on('data', (chunk) => !blackHole && client.write(chunk));
      const close = (): void => {
        client.destroy();
        server.destroy();
      };
      client.on('error', close).on('close', close);
      server.on('error', close).on('close', close);
    });
    await new Promise<void>((resolve) => relay.listen(0, '127.0.0.1', resolve));
    const port = (relay.address() as net.AddressInfo).port;
    const relayed = new KubeConfig();
    relayed.loadFromString(cluster.kubeConfigYaml().replace(cluster.url, `https://127.0.0.1:${port}`));
    const e = new LeaseLeaderElector({
      kubeConfig: relayed,
      namespace,
      leaseName: name,
      identity: 'manager-hung',
      leaseDurationSeconds: 3,
      retryPeriodMs: 200,
    });
    try {
      e.start();
      await becomes(e, true);
      blackHole = true;
      // Without bounded calls and the renew-deadline timer this never resolves: the renewal hangs forever while
      // the lease expires and another replica may take it.
      await becomes(e, false);
      expect(e.isLeader()).toBe(false);
      // It stepped down while the lease it last wrote was still its own: nobody else could have led meanwhile.
      expect((await lease(name)).holderIdentity).toBe('manager-hung');
    } finally {
      await e.stop();
      for (const socket of sockets) socket.destroy();
      relay.close();
    }
  });

  it('a healthy leader renewing every third of its lease keeps leading (the shipped 15 s / 5 s, scaled down)', async () => {
    const name = `l${++leaseNumber}`;
    const e = new LeaseLeaderElector({
      kubeConfig,
      namespace,
      leaseName: name,
      identity: 'manager-steady',
      leaseDurationSeconds: 6,
      retryPeriodMs: 2_000,
    });
    const changes: boolean[] = [];
    e.isLeader$.subscribe((leading) => changes.push(leading));
    e.start();
    await becomes(e, true);
    // Three renewals (each has 2 s before the renew deadline: room for a loaded API server).
    await new Promise((resolve) => setTimeout(resolve, 7_000));
    expect(changes).toEqual([false, true]);
    await e.stop();
  });
});
