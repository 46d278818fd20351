import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { workspaceConditionBool, workspacePhase, wsman } from '@workbay/api';
import { startHarness, startRequest, waitForPhase } from '../test-support/harness.js';
import type { Harness } from '../test-support/harness.js';

describe('workspace lifecycle over gRPC', () => {
  let h: Harness;
  beforeAll(async () => {
    h = await startHarness();
  });
  afterAll(async () => {
    await h?.close();
  });

  it('starts a workspace to RUNNING and stops it NORMALLY with a final backup', async () => {
    const request = startRequest();
    const response = await h.client.startWorkspace(request);
    expect(response.ownerToken).toMatch(/^[A-Za-z0-9_-]{32}$/);
    expect(response.url).toBe(`http://${h.running.proxyAddress}/ws/${request.id}/`);
    const running = await waitForPhase(h.client, request.id, 'running');
    expect(workspaceConditionBool.fromProto(running.conditions!.deployed)).toBe(true);
    await h.client.stopWorkspace({ id: request.id, policy: wsman.StopWorkspacePolicy.NORMALLY });
    const stopped = await waitForPhase(h.client, request.id, 'stopped');
    expect(stopped.conditions!.failed).toBe('');
    expect(workspaceConditionBool.fromProto(stopped.conditions!.finalBackupComplete)).toBe(true);
    expect(workspaceConditionBool.fromProto(stopped.conditions!.stoppedByRequest)).toBe(true);
    expect(workspacePhase.fromProto(stopped.phase)).toBe('stopped');
  });
});
