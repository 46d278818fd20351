/**
 * Watch resilience on a real API server: kube-apiserver is restarted (same etcd, same port) while workspaces are
 * starting and stopping. Every watch of both replicas (pods, Workspace objects, Secrets, the Lease) breaks; the
 * managers resume and lose nothing: every workspace reaches the phase it should, with one pod each (created once) for the running
 * ones, and a Subscribe client on the follower sees every workspace's final phase.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { workspaceConditionBool } from '@workbay/api';
import { startRequest } from '../security/harness.js';
import { startKubernetesHarness } from './harness.js';
import type { KubernetesHarness } from './harness.js';
import { UpdateRecorder, expectPhase, isPhase, phaseOf, wsman } from './kit.js';

let h: KubernetesHarness;

beforeAll(async () => {
  h = await startKubernetesHarness({
    replicas: 2,
    // Longer than an API server restart: this spec is about watches resuming, not about failover (and a replica
    // that did lose the lease exits and is started again, as its Deployment would).
    leaseDurationSeconds: 15,
    renewIntervalMs: 1_000,
    restartReplicas: true,
    podStartDelayMs: 1_000,
  });
}, 240_000);

afterAll(async () => {
  await h?.close();
});

const range = (prefix: string, n: number) => Array.from({ length: n }, (_, i) => `${prefix}-${i}`);

describe('the API server restarted mid-run', () => {
  it('managers resume their watches and lose nothing', async () => {
    const leader = await h.waitForLeader();
    const follower = h.replicas.find((r) => r !== leader)!;
    const recorder = new UpdateRecorder(follower.client, {
      mustMatch: { owner: 'resilience', metaId: '', annotations: {} },
    });
    const start = (id: string) => leader.client.startWorkspace(startRequest({ id, owner: 'resilience' }));
    const stop = (id: string) => leader.client.stopWorkspace({ id, policy: wsman.StopWorkspacePolicy.NORMALLY });

    const early = range('wr-a', 6);
    for (const id of early) await start(id);
    for (const id of early) await expectPhase(leader.client, id, 'running');
    await Promise.all(early.map((id) => recorder.waitFor(id, isPhase('running'))));

    // Starts and stops under way when the server goes away.
    const during = range('wr-b', 6);
    for (const id of during) await start(id);
    for (const id of early.slice(0, 3)) await stop(id);
    await h.cluster.restartApiServer();
    // And more once it is back.
    const after = range('wr-c', 3);
    for (const id of after) await start(id);
    await stop(early[3]!);

    const stopped = [...early.slice(0, 4)];
    const running = [...early.slice(4), ...during, ...after];
    for (const replica of [leader, follower]) {
      for (const id of running) await expectPhase(replica.client, id, 'running');
      for (const id of stopped) {
        const status = await expectPhase(replica.client, id, 'stopped');
        expect(status.conditions!.failed, id).toBe('');
        expect(workspaceConditionBool.fromProto(status.conditions!.finalBackupComplete), id).toBe(true);
      }
    }
    // One pod per running workspace, none for the stopped ones; each created once.
    await expect
      .poll(async () => (await h.workspacePods()).map((p) => p.metadata!.name!).sort(), { timeout: 60_000 })
      .toEqual(running.map((id) => `ws-${id}`).sort());
    for (const id of running) {
      const uids = h.pods.uids(`ws-${id}`);
      expect(uids, id).toHaveLength(1);
      expect(h.pods.ranAt(uids[0]!), id).toBe(true);
    }

    // The follower's Subscribe stream (opened before the restart) saw every workspace's final phase.
    for (const id of running) await recorder.waitFor(id, isPhase('running'));
    for (const id of stopped) await recorder.waitFor(id, isPhase('stopped'));
    expect(recorder.error).toBeUndefined();
    for (const id of [...running, ...stopped]) {
      const versions = recorder.of(id).map((s) => s.statusVersion);
      expect(versions, id).toEqual([...versions].sort((a, b) => a - b));
      expect(phaseOf(recorder.of(id).at(-1)), id).toBe(stopped.includes(id) ? 'stopped' : 'running');
    }
    // Nobody lost the lease over it (a replica that had would have exited and been replaced).
    expect(h.replicas.filter((r) => !r.alive())).toEqual([]);
    recorder.close();
  }, 400_000);
});
