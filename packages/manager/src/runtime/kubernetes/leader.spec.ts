import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { KubeConfig } from '@kubernetes/client-node';
import type { V1Lease } from '@kubernetes/client-node';
import { firstValueFrom, filter, timeout } from 'rxjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LeaseLeaderElector } from './leader.js';

/** Leases in memory with optimistic concurrency on resourceVersion, like the API server. */
let leases: Map<string, V1Lease>;
let server: http.Server;
let kubeConfig: KubeConfig;
let version = 1;

beforeAll(async () => {
  leases = new Map();
  server = http.createServer((req, res) => {
    const m = /^\/apis\/coordination\.k8s\.io\/v1\/namespaces\/([^/]+)\/leases(?:\/([^/?]+))?/.exec(req.url ?? '');
    const send = (code: number, body: unknown): void => {
      res.writeHead(code, { 'content-type': 'application/json' }).end(JSON.stringify(body));
    };
    const status = (code: number, reason: string): void =>
      send(code, { kind: 'Status', code, reason, message: reason });
    if (!m) return status(404, 'NotFound');
    let raw = '';
    req.on('data', (d: Buffer) => (raw += d.toString()));
    req.on('end', () => {
      const name = m[2];
      if (req.method === 'GET') {
        const lease = leases.get(name!);
        return lease ? send(200, lease) : status(404, 'NotFound');
      }
      const body = JSON.parse(raw) as V1Lease;
      const key = body.metadata!.name!;
      if (req.method === 'POST') {
        if (leases.has(key)) return status(409, 'AlreadyExists');
      } else if (req.method === 'PUT') {
        if (leases.get(key)?.metadata?.resourceVersion !== body.metadata?.resourceVersion) {
          return status(409, 'Conflict');
        }
      }
      body.metadata!.resourceVersion = String(++version);
      leases.set(key, body);
      send(req.method === 'POST' ? 201 : 200, body);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  kubeConfig = new KubeConfig();
  kubeConfig.loadFromOptions({
    clusters: [
      { name: 'fake', server: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, skipTLSVerify: true },
    ],
    users: [{ name: 'u', token: 't' }],
    contexts: [{ name: 'c', cluster: 'fake', user: 'u' }],
    currentContext: 'c',
  });
});

afterAll(async () => {
  server.closeAllConnections();
  await new Promise((r) => server.close(r));
});

const elector = (identity: string, leaseDurationSeconds = 1): LeaseLeaderElector =>
  new LeaseLeaderElector({ kubeConfig, namespace: 'workbay', identity, leaseDurationSeconds, retryPeriodMs: 100 });

const becomes = (e: LeaseLeaderElector, value: boolean): Promise<boolean> =>
  firstValueFrom(
    e.isLeader$.pipe(
      filter((v) => v === value),
      timeout(10_000),
    ),
  );

describe('LeaseLeaderElector (against a fake API server)', () => {
  it('exactly one replica leads; a released lease passes to another replica at once', async () => {
    const a = elector('manager-a');
    const b = elector('manager-b');
    a.start();
    await becomes(a, true);
    b.start();
    await new Promise((r) => setTimeout(r, 400));
    expect([a.isLeader(), b.isLeader()]).toEqual([true, false]);
    expect(leases.get('workbay-manager-leader')!.spec!.holderIdentity).toBe('manager-a');

    await a.stop();
    await becomes(b, true);
    expect(leases.get('workbay-manager-leader')!.spec).toMatchObject({
      holderIdentity: 'manager-b',
      leaseTransitions: 1,
    });
    await b.stop();
  });

  it('takes over a lease its holder stopped renewing, once it expired', async () => {
    leases.clear();
    // A holder that crashed: a lease renewed long ago by somebody else.
    leases.set('workbay-manager-leader', {
      metadata: { name: 'workbay-manager-leader', resourceVersion: String(++version) },
      spec: { holderIdentity: 'crashed', leaseDurationSeconds: 1, renewTime: new Date(Date.now() - 500) as never },
    });
    const c = elector('manager-c');
    c.start();
    expect(c.isLeader()).toBe(false);
    await becomes(c, true);
    expect(leases.get('workbay-manager-leader')!.spec!.holderIdentity).toBe('manager-c');
    await c.stop();
  });

  it('never lets two replicas win the same round', async () => {
    leases.clear();
    const replicas = ['r1', 'r2', 'r3'].map((id) => elector(id));
    replicas.forEach((r) => r.start());
    await new Promise((r) => setTimeout(r, 600));
    expect(replicas.filter((r) => r.isLeader())).toHaveLength(1);
    await Promise.all(replicas.map((r) => r.stop()));
  });
});
