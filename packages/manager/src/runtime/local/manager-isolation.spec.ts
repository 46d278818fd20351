import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { wsman } from '@workbay/api';
import { listLinks, listNetns } from '@workbay/nsinsider';
import { startHarness, startRequest, testImages, waitForPhase } from '../../test-support/harness.js';
import type { Harness } from '../../test-support/harness.js';
import type { LocalRuntime, LocalWorkspaceState } from './local-runtime.js';

// The whole manager (gRPC, daemon, proxy) on the real local runtime with isolation on, as `workbay up` runs as
// root: a started workspace is isolated, the proxy reaches its IDE at its own address, stop takes its network down.
const isRoot = process.getuid?.() === 0;

describe.runIf(isRoot)('the manager on the isolated local runtime', () => {
  let h: Harness;
  beforeAll(async () => {
    h = await startHarness({
      config: {
        runtime: {
          kind: 'local',
          isolation: 'namespaces',
          readiness: { intervalMs: 50 },
          exitPollIntervalMs: 100,
          images: testImages,
        },
      },
    });
  });
  afterAll(async () => {
    await h?.close();
  });

  it('starts an isolated workspace that the proxy reaches, and stop removes its network', async () => {
    const runtime = h.running.runtime as LocalRuntime;
    expect(runtime.isolation.namespaces).toBe(true);
    const request = startRequest();
    const { ownerToken } = await h.client.startWorkspace(request);
    await waitForPhase(h.client, request.id, 'running');

    const state = (await runtime.inspect(request.id)) as LocalWorkspaceState;
    expect(state.namespaced).toBe(true);
    expect(state.host).toBe(state.net!.address);
    // The content owner is the workspace's host identity; never host root.
    console.log(`workspace ${request.id}: host uid ${state.hostUid}, notice: ${state.notice ?? '(none)'}`);
    expect(state.hostUid).toBeGreaterThan(0);

    const res = await fetch(`http://${h.running.proxyAddress}/ws/${request.id}/api/info`, {
      headers: { 'x-workbay-owner-token': ownerToken },
    });
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ instanceId: request.id, contentDir: '/workspace' });

    await h.client.stopWorkspace({ id: request.id, policy: wsman.StopWorkspacePolicy.IMMEDIATELY });
    const stopped = await waitForPhase(h.client, request.id, 'stopped');
    expect(stopped.conditions!.failed).toBe('');
    expect((await listLinks(state.net!.ifName)).filter((l) => l.alias.endsWith(` ${request.id}`))).toEqual([]);
    expect(await listNetns(state.net!.netns)).not.toContain(state.net!.netns);
  });
});
