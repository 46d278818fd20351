/**
 * Start slots are shared fairly and a stop ends the initialization it interrupts (red team round 12, G2): one
 * owner's starts from slow remotes filled every slot of the node and held other owners' starts PENDING, and their
 * stops waited for the slow content. Real manager, real daemon, a real slow HTTP server as the content's source.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { workspacePhase, wsman } from '@workbay/api';
import { startHarness, startRequest, startSlowFileServer, waitForPhase } from '../test-support/harness.js';
import type { Harness } from '../test-support/harness.js';

describe('start slots: one owner cannot hold the node, and a stop ends a slow initialization', () => {
  let h: Harness;
  let slow: Awaited<ReturnType<typeof startSlowFileServer>>;
  beforeAll(async () => {
    // Three slots for the node, one per owner (a fifth of three, at least one).
    h = await startHarness({ config: { maxConcurrentStarts: 3 } });
    slow = await startSlowFileServer(120_000);
  });
  afterAll(async () => {
    await slow?.close();
    await h?.close();
  });

  const phaseOf = async (id: string): Promise<string> =>
    workspacePhase.fromProto((await h.client.describeWorkspace({ id })).status!.phase);

  it("mallory's slow starts wait for her own share; alice's start runs; a stop of mallory's ends it at once", async () => {
    const mallory = [1, 2, 3].map(() => startRequest({ owner: 'mallory', initializer: slow.initializer }));
    for (const request of mallory) await h.client.startWorkspace(request);
    await waitForPhase(h.client, mallory[0]!.id, 'initializing');
    expect(await phaseOf(mallory[1]!.id)).toBe('pending');
    expect(await phaseOf(mallory[2]!.id)).toBe('pending');

    const alice = startRequest({ owner: 'alice' });
    await h.client.startWorkspace(alice);
    await waitForPhase(h.client, alice.id, 'running', 30_000);

    // The download of mallory's first start would take two minutes: her stop ends it instead of waiting.
    const stopAsked = Date.now();
    await h.client.stopWorkspace({ id: mallory[0]!.id, policy: wsman.StopWorkspacePolicy.NORMALLY });
    await waitForPhase(h.client, mallory[0]!.id, 'stopped', 30_000);
    expect(Date.now() - stopAsked).toBeLessThan(30_000);
    // Her share passes to her next start.
    await waitForPhase(h.client, mallory[1]!.id, 'initializing', 30_000);
    expect(await phaseOf(mallory[2]!.id)).toBe('pending');

    for (const id of [mallory[1]!.id, mallory[2]!.id, alice.id])
      await h.client.stopWorkspace({ id, policy: wsman.StopWorkspacePolicy.IMMEDIATELY });
    for (const id of [mallory[1]!.id, mallory[2]!.id, alice.id]) await waitForPhase(h.client, id, 'stopped', 30_000);
  });
});
