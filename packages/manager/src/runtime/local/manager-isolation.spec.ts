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

  it('reserves the network while the content is produced; a failed initialization leaves none behind', async () => {
    const runtime = h.running.runtime as LocalRuntime;
    const calls: string[] = [];
    const prepare = runtime.prepare.bind(runtime);
    const start = runtime.start.bind(runtime);
    const spied = runtime as { prepare: LocalRuntime['prepare']; start: LocalRuntime['start'] };
    spied.prepare = (spec) => {
      calls.push(`prepare ${spec.instanceId}`);
      return prepare(spec);
    };
    spied.start = (spec) => {
      calls.push(`start ${spec.instanceId}`);
      return start(spec);
    };
    try {
      const ok = startRequest();
      await h.client.startWorkspace(ok);
      await waitForPhase(h.client, ok.id, 'running');
      const state = (await runtime.inspect(ok.id)) as LocalWorkspaceState;
      // Prepared as the content began (the start then waits for what is still being reserved, and takes it).
      expect(calls).toEqual([`prepare ${ok.id}`, `start ${ok.id}`]);
      expect(state.net!.netns.endsWith(ok.id)).toBe(true);
      await h.client.stopWorkspace({ id: ok.id, policy: wsman.StopWorkspacePolicy.IMMEDIATELY });
      await waitForPhase(h.client, ok.id, 'stopped');
      expect(await listNetns(state.net!.netns)).toEqual([]);

      // A repository that does not exist: the content fails, the start never comes, the stop gives the network back.
      calls.length = 0;
      const failing = startRequest({
        initializer: {
          spec: {
            $case: 'git',
            value: {
              remoteUri: `file:///nonexistent/${process.pid}.git`,
              upstreamRemoteUri: '',
              targetMode: 0,
              cloneTaget: 'main',
              checkoutLocation: 'repo',
              fullClone: false,
            },
          },
        },
      });
      await h.client.startWorkspace(failing);
      const stopped = await waitForPhase(h.client, failing.id, 'stopped');
      expect(stopped.conditions!.failed).toMatch(/Content initialization failed/);
      expect(calls.filter((c) => c.startsWith('start'))).toEqual([]);
      expect(calls[0]).toBe(`prepare ${failing.id}`);
      expect((await listNetns('wb-')).filter((n) => n.endsWith(failing.id))).toEqual([]);
    } finally {
      spied.prepare = prepare;
      spied.start = start;
    }
  });
});
