import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { workspacePhase, wsman } from '@workbay/api';
import {
  startHarness,
  startRequest,
  startSlowFileServer,
  waitForPhase,
  waitForStatus,
} from '../test-support/harness.js';
import type { Harness } from '../test-support/harness.js';

describe('timeout rules with short configured durations', () => {
  let h: Harness;
  beforeAll(async () => {
    h = await startHarness({
      config: {
        maxConcurrentStarts: 1,
        timeouts: {
          initialization: '800ms',
          startup: '1500ms',
          headlessWorkspace: '1s',
          contentFinalization: '1s',
          stopping: '1s',
          checkInterval: '100ms',
        },
        stopGrace: { normally: '20s', immediately: '500ms', abort: '500ms' },
      },
    });
  });
  afterAll(async () => {
    await h?.close();
  });

  const stoppedWith = async (id: string, rule: string): Promise<wsman.WorkspaceStatus> => {
    const stopped = await waitForPhase(h.client, id, 'stopped', 30_000);
    expect(stopped.conditions!.timeout).toMatch(new RegExp(`^workspace timed out \\(${rule}\\): `));
    return stopped;
  };

  it('pending (initialization) and creating/initializing (startup)', async () => {
    const slow = await startSlowFileServer(4000);
    const first = startRequest({ initializer: slow.initializer });
    const second = startRequest();
    await h.client.startWorkspace(first);
    await waitForPhase(h.client, first.id, 'initializing');
    // Only one start at a time: the second waits in PENDING until the initialization timeout.
    await h.client.startWorkspace(second);
    expect(workspacePhase.fromProto((await h.client.describeWorkspace({ id: second.id })).status!.phase)).toBe(
      'pending',
    );
    await stoppedWith(second.id, 'initialization');
    const stopped = await stoppedWith(first.id, 'startup');
    expect(stopped.conditions!.timeout).toMatch(/starting up took [0-9.]+s, longer than the 1.5s allowed$/);
    await slow.close();
  });

  async function running(options: Parameters<typeof startRequest>[0] = {}): Promise<string> {
    const request = startRequest(options);
    await h.client.startWorkspace(request);
    await waitForPhase(h.client, request.id, 'running');
    return request.id;
  }

  it('running without user activity (startup)', async () => {
    const id = await running();
    await stoppedWith(id, 'no-activity');
  });

  it('inactivity: last activity + spec.timeout', async () => {
    const id = await running({ spec: { timeout: '1s' } });
    await h.client.markActive({ id });
    await stoppedWith(id, 'inactivity');
  });

  it('closed: last activity + spec.closed_timeout after MarkActive(closed)', async () => {
    const id = await running({ spec: { timeout: '1h', closedTimeout: '1s' } });
    await h.client.markActive({ id, closed: true });
    await stoppedWith(id, 'closed');
    const stops = await h.running.metrics.stopsTotal.get();
    expect(stops.values.some((v) => v.labels.reason === 'tab-closed' && v.value >= 1)).toBe(true);
  });

  it('SetTimeout moves the inactivity deadline', async () => {
    const id = await running({ spec: { timeout: '1h' } });
    await h.client.markActive({ id });
    await new Promise((r) => setTimeout(r, 300));
    expect(workspacePhase.fromProto((await h.client.describeWorkspace({ id })).status!.phase)).toBe('running');
    await h.client.setTimeout({ id, duration: '500ms', type: wsman.TimeoutType.WORKSPACE_TIMEOUT });
    await stoppedWith(id, 'inactivity');
  });

  it('maximum lifetime: spec.maximum_lifetime, regardless of activity', async () => {
    const id = await running({ spec: { timeout: '1h', maximumLifetime: '1s' } });
    await h.client.markActive({ id });
    await stoppedWith(id, 'max-lifetime');
  });

  it('headless: created + headlessWorkspace', async () => {
    const id = await running({ image: 'test/sleeper', type: wsman.WorkspaceType.PREBUILD });
    await stoppedWith(id, 'headless');
  });

  it('stopping: a stop that takes too long is forced to STOPPED with the reason', async () => {
    const id = await running({ image: 'test/stubborn', spec: { timeout: '1h' } });
    await h.client.markActive({ id });
    // NORMALLY has a 20 s grace period here and the process ignores SIGTERM.
    await h.client.stopWorkspace({ id, policy: wsman.StopWorkspacePolicy.NORMALLY });
    const stopped = await waitForStatus(h.client, id, (s) => workspacePhase.fromProto(s.phase) === 'stopped', 15_000);
    expect(stopped.conditions!.timeout).toMatch(/^workspace timed out \(content-finalization\)/);
    expect(stopped.conditions!.failed).toMatch(/did not finish stopping in time/);
    // The process was killed.
    const deadline = Date.now() + 10_000;
    while ((await h.running.runtime.inspect(id)) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    expect(await h.running.runtime.inspect(id)).toBeUndefined();
  });
});
