/**
 * Failover on a real API server: two `workbay up` replicas share the Lease; the leader is SIGKILLed while 20
 * workspaces are starting; the survivor takes over and every workspace ends RUNNING exactly once (one pod each,
 * none lost, none created twice), and a Subscribe client connected to the survivor before the kill saw every
 * transition of every workspace.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AlreadyExistsError } from '@workbay/api';
import { startRequest } from '../security/harness.js';
import { startKubernetesHarness } from './harness.js';
import type { KubernetesHarness, Replica } from './harness.js';
import { UpdateRecorder, expectPhase, isPhase, sleep } from './kit.js';

const leaseDurationSeconds = 3;
const renewIntervalMs = 500;
let h: KubernetesHarness;

beforeAll(async () => {
  h = await startKubernetesHarness({
    replicas: 2,
    leaseDurationSeconds,
    renewIntervalMs,
    // Pods stay Pending for a while (an image pull), so that the kill meets workspaces mid-start.
    podStartDelayMs: 1_500,
  });
}, 240_000);

afterAll(async () => {
  await h?.close();
});

interface Lease {
  spec?: { holderIdentity?: string; acquireTime?: string; renewTime?: string; leaseTransitions?: number };
}

describe('failover between two manager replicas', () => {
  it('SIGKILL of the leader while 20 workspaces start: the survivor takes over, each ends RUNNING exactly once', async () => {
    const leader = await h.waitForLeader();
    const survivor = h.replicas.find((r) => r !== leader)!;
    const recorder = new UpdateRecorder(survivor.client);
    // The stream is live once it delivered a workspace started after it was opened.
    await survivor.client.startWorkspace(startRequest({ id: 'fo-marker', owner: 'marker' }));
    await recorder.waitFor('fo-marker', isPhase('running'));

    const ids = Array.from({ length: 20 }, (_, i) => `fo-${String(i).padStart(2, '0')}`);
    let answered = 0;
    let killed = false;
    // Alternate replicas; a call to the leader that the kill cuts off is sent again to the survivor (a client
    // that talks to any replica does that); ALREADY_EXISTS then means the first call had been recorded.
    const start = async (id: string, i: number): Promise<void> => {
      await sleep(i * 60);
      const first: Replica = i % 2 === 0 ? leader : survivor;
      try {
        await first.client.startWorkspace(startRequest({ id, owner: 'failover' }));
      } catch (error) {
        if (first === survivor || !killed) throw error;
        await survivor.client.startWorkspace(startRequest({ id, owner: 'failover' })).catch((retry: unknown) => {
          if (!(retry instanceof AlreadyExistsError)) throw retry;
        });
      }
      answered++;
    };
    const starts = ids.map((id, i) => start(id, i));
    while (answered < 8) await sleep(20);
    const before = (await h.get<Lease>(leasePath()))!;
    expect(before.spec?.holderIdentity).toBe(leader.identity);
    killed = true;
    await leader.kill('SIGKILL');
    const killedAt = Date.now();
    await Promise.all(starts);

    // The survivor holds the Lease, acquired no later than a lease duration after the dead leader's last renewal
    // (plus one renewal period for the survivor's next try; the Lease's own timestamps, not the test's clock).
    const taken = await h.waitForLeader();
    expect(taken.identity).toBe(survivor.identity);
    const after = (await h.get<Lease>(leasePath()))!;
    const gapMs = Date.parse(after.spec!.acquireTime!) - Date.parse(before.spec!.renewTime!);
    console.log(`failover: lease taken over ${gapMs} ms after the last renewal (${Date.now() - killedAt} ms now)`);
    expect(after.spec!.leaseTransitions).toBeGreaterThan(before.spec!.leaseTransitions ?? 0);

    for (const id of ids) await expectPhase(survivor.client, id, 'running');

    // One pod per workspace, each created once and Running: none lost, none created twice.
    const pods = await h.workspacePods();
    const names = pods.map((p) => p.metadata!.name!).sort();
    expect(names).toEqual(['ws-fo-marker', ...ids.map((id) => `ws-${id}`)].sort());
    expect(pods.every((p) => p.status?.phase === 'Running' && !p.metadata?.deletionTimestamp)).toBe(true);
    for (const id of ids) {
      const uids = h.pods.uids(`ws-${id}`);
      expect(uids, id).toHaveLength(1);
      expect(h.pods.ranAt(uids[0]!), id).toBe(true);
    }

    // The survivor's Subscribe client saw every transition of every workspace, RUNNING exactly once, in order.
    await Promise.all(ids.map((id) => recorder.waitFor(id, isPhase('running'))));
    expect(recorder.error).toBeUndefined();
    for (const id of ids) {
      expect(recorder.phases(id), id).toEqual(['pending', 'creating', 'initializing', 'running']);
      const versions = recorder.of(id).map((s) => s.statusVersion);
      expect(versions, id).toEqual([...versions].sort((a, b) => a - b));
      expect(new Set(versions).size, id).toBe(versions.length);
    }
    expect(gapMs).toBeLessThanOrEqual(leaseDurationSeconds * 1000 + 2 * renewIntervalMs + 1000);
    recorder.close();
  }, 300_000);
});

function leasePath(): string {
  return '/apis/coordination.k8s.io/v1/namespaces/workbay/leases/workbay-manager-leader';
}
