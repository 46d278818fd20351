/**
 * The Workspace-object repository on a real kube-apiserver (with etcd): the leader's commits reach followers in
 * order, followers record starts and stops as desired state, secrets stay out of the objects, conflicts are
 * retried, and a new leader continues above every version handed out.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { KubeConfig } from '@kubernetes/client-node';
import { startKubernetesCluster } from '@workbay/testing';
import type { KubernetesTestCluster } from '@workbay/testing';
import { firstValueFrom } from 'rxjs';
import { filter, take, toArray } from 'rxjs/operators';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { InvalidArgumentError } from '@workbay/api';
import { createLogger } from '@workbay/manager';
import type { WorkspaceRecord } from '@workbay/manager';
import { KubernetesWorkspaceRepository, objectNameOf, workspaceResource } from '@workbay/manager/kubernetes';
import type { DesiredChange } from '@workbay/manager/kubernetes';
import { makeRecord } from './records.js';

const repoRoot = join(__dirname, '..', '..', '..', '..');
const namespace = 'workbay';
let cluster: KubernetesTestCluster;
let kubeConfig: KubeConfig;
const repositories: KubernetesWorkspaceRepository[] = [];

function repository(
  options: {
    leaderWaitMs?: number;
    orphanSecretGraceMs?: number;
    sweepIntervalMs?: number;
    maxWriteBacklog?: number;
  } = {},
): KubernetesWorkspaceRepository {
  const repo = new KubernetesWorkspaceRepository({
    kubeConfig,
    namespace,
    historySize: 1000,
    logger: createLogger({ level: 'silent' }),
    retryMs: 50,
    ...options,
    leaderWaitMs: options.leaderWaitMs ?? 10_000,
  });
  repositories.push(repo);
  return repo;
}

function withPhase(record: WorkspaceRecord, phase: WorkspaceRecord['phase']): WorkspaceRecord {
  return { ...record, phase, phaseTimes: { ...record.phaseTimes, [phase]: Date.now() } };
}

async function object(id: string): Promise<{ status: number; body: Record<string, unknown> }> {
  const { group, version, plural } = workspaceResource;
  return cluster.request('GET', `/apis/${group}/${version}/namespaces/${namespace}/${plural}/${objectNameOf(id)}`);
}

/** The Secret the workspace's object names. */
async function secretOf(id: string): Promise<{ name: string; status: number; data?: Record<string, string> }> {
  const name = ((await object(id)).body['spec'] as { secretRef: { name: string } }).secretRef.name;
  const res = await cluster.request<{ data?: Record<string, string> }>(
    'GET',
    `/api/v1/namespaces/${namespace}/secrets/${name}`,
  );
  return { name, status: res.status, data: res.body.data };
}

const secretStatus = async (name: string): Promise<number> =>
  (await cluster.request('GET', `/api/v1/namespaces/${namespace}/secrets/${name}`)).status;

beforeAll(async () => {
  cluster = await startKubernetesCluster();
  await cluster.apply(`apiVersion: v1\nkind: Namespace\nmetadata: { name: ${namespace} }\n`);
  await cluster.apply(readFileSync(join(repoRoot, 'deploy', 'kubernetes', 'crd-workspaces.yaml'), 'utf8'));
  kubeConfig = new KubeConfig();
  kubeConfig.loadFromString(cluster.kubeConfigYaml(cluster.adminToken));
}, 120_000);

// Each test brings its own replicas: a leader left running would take over the next test's workspaces.
afterEach(async () => {
  for (const repo of repositories.splice(0)) await repo.close();
});

afterAll(async () => {
  await cluster?.stop();
});

describe('KubernetesWorkspaceRepository on a real API server', () => {
  it('keeps the record in a Workspace object and its secrets only in a Secret; followers see every transition', async () => {
    const leader = repository();
    const follower = repository();
    await leader.load();
    await follower.load();
    leader.promote();
    const token = 'owner-token-' + 'a'.repeat(20);
    const record = makeRecord({
      id: 'ws-objects-1',
      ownerToken: token,
      statusVersion: 0,
      spec: { ...makeRecord().spec, initializer: 'c2VjcmV0LWluaXQ=', envvars: [{ name: 'API_KEY', value: 'hunter2' }] },
    });
    const seen = firstValueFrom(
      follower.status$.pipe(
        filter((r) => r.id === record.id),
        take(3),
        toArray(),
      ),
    );
    const created = await leader.create(record);
    expect(created.statusVersion).toBeGreaterThan(0);
    const creating = leader.commit(created, withPhase(created, 'creating'));
    leader.commit(creating, withPhase(creating, 'initializing'));

    const phases = (await seen).map((r) => r.phase);
    expect(phases).toEqual(['pending', 'creating', 'initializing']);
    // The follower got the secrets from the Secret, not from the object.
    expect(follower.get(record.id)?.ownerToken).toBe(token);
    expect(follower.get(record.id)?.spec.envvars).toEqual([{ name: 'API_KEY', value: 'hunter2' }]);
    const stored = JSON.stringify((await object(record.id)).body);
    expect(stored).not.toContain(token);
    expect(stored).not.toContain('hunter2');
    expect(stored).not.toContain('c2VjcmV0LWluaXQ=');
    expect((await secretOf(record.id)).status).toBe(200);
  });

  it('writes the changes committed during a write together, and followers still publish each transition in order', async () => {
    const leader = repository();
    const follower = repository();
    await leader.load();
    await follower.load();
    leader.promote();
    const record = makeRecord({ id: 'ws-coalesced', statusVersion: 0 });
    const phases = ['creating', 'initializing', 'running', 'stopping', 'stopped'] as const;
    const seen = firstValueFrom(
      follower.status$.pipe(
        filter((r) => r.id === record.id),
        take(1 + phases.length),
        toArray(),
      ),
    );
    // Every status the API server stored for the object, as a watch delivers them.
    const { group, version, plural } = workspaceResource;
    const stored: unknown[] = [];
    const watch = cluster.watch<{ status?: { record?: string } }>(
      `/apis/${group}/${version}/namespaces/${namespace}/${plural}`,
      (event) => {
        if (event.object.status?.record) stored.push(event.object.status);
      },
      { fieldSelector: `metadata.name=${objectNameOf(record.id)}` },
    );
    let current = await leader.create(record);
    // Committed back to back: the first status write is still in flight when the others are committed.
    for (const phase of phases) current = leader.commit(current, withPhase(current, phase));

    const published = await seen;
    expect(published.map((r) => r.phase)).toEqual(['pending', ...phases]);
    const versions = published.map((r) => r.statusVersion);
    expect(versions).toEqual([...versions].sort((a, b) => a - b));
    expect(new Set(versions).size).toBe(versions.length);
    // The test's own watch is another connection: it may deliver the last write after the follower did.
    const lastPhase = phases[phases.length - 1];
    await expect
      .poll(() =>
        stored.some(
          (status) => (JSON.parse((status as { record: string }).record) as { phase?: string }).phase === lastPhase,
        ),
      )
      .toBe(true);
    expect(stored.length).toBeLessThan(1 + phases.length);
    watch.stop();
  });

  it('a follower records a start as desired state and answers once the leader took it over', async () => {
    const leader = repository();
    const follower = repository();
    await leader.load();
    await follower.load();
    leader.promote();
    const adopted = firstValueFrom(leader.desired$.pipe(filter((c: DesiredChange) => c.id === 'ws-follower-start')));
    const record = makeRecord({ id: 'ws-follower-start', statusVersion: 0 });
    const answered = await follower.create(record);
    expect(await adopted).toEqual({ id: 'ws-follower-start', type: 'adopt' });
    expect(answered.phase).toBe('pending');
    expect(leader.get(record.id)?.ownerToken).toBe(record.ownerToken);

    const stop = firstValueFrom(leader.desired$.pipe(filter((c) => c.type === 'stop' && c.id === record.id)));
    const stopped = follower.requestStop(record.id, 'immediately');
    expect(await stop).toEqual({ id: record.id, type: 'stop', policy: 'immediately' });
    // The leader acts: the follower's call returns once the object says so.
    const current = leader.get(record.id)!;
    leader.commit(current, withPhase(current, 'stopping'));
    await stopped;
  });

  it('a follower without a leader fails the start with UNAVAILABLE, and a leader elected later takes it over', async () => {
    const follower = repository({ leaderWaitMs: 500 });
    await follower.load();
    const record = makeRecord({ id: 'ws-no-leader', statusVersion: 0 });
    await expect(follower.create(record)).rejects.toMatchObject({ code: 'unavailable' });
    const late = repository();
    await late.load();
    late.promote();
    expect(late.get(record.id)?.statusVersion).toBeGreaterThan(0);
    await expect
      .poll(async () => ((await object(record.id)).body['status'] as { phase?: string } | undefined)?.phase)
      .toBe('pending');
  });

  it('a status write that meets a concurrent change (409) is written again against the newest object', async () => {
    const leader = repository();
    await leader.load();
    leader.promote();
    const created = await leader.create(makeRecord({ id: 'ws-conflict', statusVersion: 0 }));
    // Another writer changes the object: the leader's cached resourceVersion is now stale.
    const { group, version, plural } = workspaceResource;
    const path = `/apis/${group}/${version}/namespaces/${namespace}/${plural}/${objectNameOf(created.id)}`;
    const patched = await cluster.request(
      'PATCH',
      path,
      { metadata: { labels: { touched: 'yes' } } },
      {
        contentType: 'application/merge-patch+json',
      },
    );
    expect(patched.status).toBe(200);
    leader.commit(created, withPhase(created, 'creating'));
    await expect
      .poll(async () => ((await object(created.id)).body['status'] as { phase?: string }).phase)
      .toBe('creating');
  });

  it('a new leader continues above every version handed out; forget removes the object and its Secret', async () => {
    const first = repository();
    await first.load();
    first.promote();
    const created = await first.create(makeRecord({ id: 'ws-versions', statusVersion: 0 }));
    const last = first.commit(created, withPhase(created, 'creating'));
    await first.close();
    const second = repository();
    await second.load();
    second.promote();
    const next = second.commit(second.get(last.id)!, withPhase(second.get(last.id)!, 'initializing'));
    expect(next.statusVersion).toBeGreaterThan(last.statusVersion);
    const { name: secretName } = await secretOf(next.id);
    second.forget(next.id);
    await expect.poll(async () => (await object(next.id)).status).toBe(404);
    await expect.poll(() => secretStatus(secretName)).toBe(404);
  });

  it('a follower forwards a record change; the leader answers it once (its refusal reaches the follower as is)', async () => {
    const leader = repository();
    const follower = repository();
    await leader.load();
    await follower.load();
    leader.promote();
    await leader.create(makeRecord({ id: 'ws-requests', statusVersion: 0 }));
    const requests: DesiredChange[] = [];
    const subscription = leader.desired$.pipe(filter((c) => c.type === 'request')).subscribe((change) => {
      requests.push(change);
      if (change.type !== 'request') return;
      const refusal = change.request.kind === 'setTimeout' ? new InvalidArgumentError('duration', 'bad') : undefined;
      const result = change.request.kind === 'takeSnapshot' ? 'snapshot-1@bucket' : undefined;
      leader.acknowledge(change.id, change.requestId, change.request.kind, refusal, result);
    });
    await follower.request('ws-requests', { kind: 'markActive', closed: false, ignoreIfActive: false });
    await expect(
      follower.request('ws-requests', { kind: 'setTimeout', timeout: 'workspace', duration: 'x' }),
    ).rejects.toMatchObject({ code: 'invalid-argument', field: 'duration' });
    // A content operation's result comes back with the answer.
    await expect(follower.request('ws-requests', { kind: 'takeSnapshot', returnImmediately: true })).resolves.toBe(
      'snapshot-1@bucket',
    );
    expect(requests.map((c) => (c.type === 'request' ? c.request.kind : c.type))).toEqual([
      'markActive',
      'setTimeout',
      'takeSnapshot',
    ]);
    subscription.unsubscribe();
    // A new leader does not make the answered changes again.
    await leader.close();
    const next = repository();
    await next.load();
    expect(next.promote().filter((c) => c.type === 'request')).toEqual([]);
  });

  it('two starts of one id at once: one wins with its own Secret, the other is refused and leaves nothing', async () => {
    const leader = repository();
    const follower = repository();
    await leader.load();
    await follower.load();
    leader.promote();
    const id = 'ws-raced';
    const tokenOf = (who: string): string => `token-of-${who}-${'x'.repeat(16)}`;
    const results = await Promise.allSettled([
      leader.create(makeRecord({ id, statusVersion: 0, owner: 'alice', ownerToken: tokenOf('alice') })),
      follower.create(makeRecord({ id, statusVersion: 0, owner: 'mallory', ownerToken: tokenOf('mallory') })),
    ]);
    const won = results.findIndex((r) => r.status === 'fulfilled');
    expect(won).toBeGreaterThanOrEqual(0);
    const lost = results[1 - won]!;
    expect(lost.status).toBe('rejected');
    expect((lost as PromiseRejectedResult).reason).toMatchObject({ code: 'already-exists' });
    const winner = won === 0 ? 'alice' : 'mallory';
    // The object names the winner's Secret, holding the winner's token, and the leader runs it with that token.
    const secret = await secretOf(id);
    expect(Buffer.from(secret.data!['ownerToken']!, 'base64').toString()).toBe(tokenOf(winner));
    await expect.poll(() => leader.get(id)?.ownerToken).toBe(tokenOf(winner));
    // The loser's Secret is gone: the only Secret of this id left is the one the object names.
    await expect
      .poll(async () => {
        const list = await cluster.request<{ items: { metadata: { name: string } }[] }>(
          'GET',
          `/api/v1/namespaces/${namespace}/secrets`,
        );
        return list.body.items.map((i) => i.metadata.name).filter((n) => n.startsWith(`ws-${id}-`));
      })
      .toEqual([secret.name]);
  });

  it('the leader deletes a Secret no object names (a replica died between Secret and object), and only that one', async () => {
    const leader = repository({ orphanSecretGraceMs: 300, sweepIntervalMs: 100 });
    await leader.load();
    leader.promote();
    const id = 'ws-orphaned';
    // What a replica killed between its two creates leaves behind.
    const orphan = `ws-${id}-secrets-0123456789ab`;
    const created = await cluster.request('POST', `/api/v1/namespaces/${namespace}/secrets`, {
      apiVersion: 'v1',
      kind: 'Secret',
      metadata: {
        name: orphan,
        labels: { 'app.kubernetes.io/managed-by': 'workbay' },
        annotations: { 'workbay.dev/instance-id': id },
      },
      stringData: { ownerToken: 'left-behind' },
    });
    expect(created.status).toBe(201);
    // The client's retry of that start succeeds (its own Secret has its own name).
    const started = await leader.create(makeRecord({ id, statusVersion: 0 }));
    expect(started.id).toBe(id);
    await expect.poll(() => secretStatus(orphan), { timeout: 10_000 }).toBe(404);
    const kept = await secretOf(id);
    expect(kept.status).toBe(200);
    expect(kept.name).not.toBe(orphan);
  });

  it('a leader whose writes are behind takes the starts of followers over later, and loses none of them', async () => {
    // A backlog of one: every start but the first waits for the writes before it.
    const leader = repository({ maxWriteBacklog: 1 });
    const follower = repository();
    await leader.load();
    await follower.load();
    leader.promote();
    const ids = Array.from({ length: 5 }, (_, i) => `ws-backlog-${i}`);
    const adopted = new Set<string>();
    const subscription = leader.desired$.subscribe((c) => c.type === 'adopt' && adopted.add(c.id));
    const answered = await Promise.all(ids.map((id) => follower.create(makeRecord({ id, statusVersion: 0 }))));
    expect(answered.map((r) => r.phase)).toEqual(ids.map(() => 'pending'));
    expect([...adopted].sort()).toEqual(ids);
    subscription.unsubscribe();
  });
});
