import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FailedPreconditionError, workspacePhase, wsman } from '@workbay/api';
import { phaseOf, startHarness, startRequest, waitForPhase } from '../test-support/harness.js';
import type { Harness } from '../test-support/harness.js';

describe('operations: metrics, health, maintenance mode', () => {
  let h: Harness;
  beforeAll(async () => {
    h = await startHarness({ config: { maintenance: { pollInterval: '100ms' } } });
  });
  afterAll(async () => {
    await h?.close();
  });

  const ops = (path: string, init?: RequestInit) => fetch(`http://${h.running.metricsAddress}${path}`, init);
  const setMaintenance = async (body: object) => {
    const res = await ops('/admin/maintenance', { method: 'PUT', body: JSON.stringify(body) });
    expect(res.status).toBe(200);
    return (await res.json()) as { enabled: boolean };
  };

  it('serves /live, /ready and Prometheus metrics with the workbay_manager_ prefix', async () => {
    const request = startRequest();
    await h.client.startWorkspace(request);
    await waitForPhase(h.client, request.id, 'running');
    await h.client.stopWorkspace({ id: request.id, policy: wsman.StopWorkspacePolicy.NORMALLY });
    await waitForPhase(h.client, request.id, 'stopped');
    expect((await ops('/live')).status).toBe(200);
    expect((await ops('/ready')).status).toBe(200);
    const text = await (await ops('/metrics')).text();
    for (const name of [
      'workbay_manager_workspace_startup_seconds_bucket{',
      'workbay_manager_workspace_pending_seconds_count{type="regular",class="g1-standard"}',
      'workbay_manager_workspace_creating_seconds_count{type="regular",class="g1-standard"}',
      'workbay_manager_workspace_starts_total{type="regular",class="g1-standard"} 1',
      'workbay_manager_workspace_stops_total{reason="regular-stop",type="regular",class="g1-standard"} 1',
      'workbay_manager_workspace_backups_total{type="regular",class="g1-standard"} 1',
      'workbay_manager_workspace_phase_total{phase="stopped",type="regular",class="g1-standard"} 1',
      'workbay_manager_subscribers 0',
      'workbay_manager_maintenance_enabled 0',
      // The TCP shedder runs only under `workbay up` on cgroup v1: nothing shed here.
      'workbay_manager_proxy_shed_transfers_total 0',
      'workbay_manager_proxy_cooldown_refusals_total 0',
      'workbay_manager_proxy_pressure_refusals_total 0',
      'workbay_manager_process_resident_memory_bytes',
    ]) {
      expect(text).toContain(name);
    }
  });

  it('maintenance: start, stop and snapshot answer FAILED_PRECONDITION, and timeouts pause', async () => {
    const request = startRequest({ spec: { timeout: '700ms' } });
    await h.client.startWorkspace(request);
    await waitForPhase(h.client, request.id, 'running');
    await h.client.markActive({ id: request.id });
    expect(await setMaintenance({ enabled: true })).toMatchObject({ enabled: true });
    await expect(h.client.startWorkspace(startRequest())).rejects.toThrow(FailedPreconditionError);
    await expect(h.client.startWorkspace(startRequest())).rejects.toThrow(/maintenance/);
    await expect(h.client.stopWorkspace({ id: request.id })).rejects.toBeInstanceOf(FailedPreconditionError);
    await expect(h.client.takeSnapshot({ id: request.id })).rejects.toBeInstanceOf(FailedPreconditionError);
    expect(await (await ops('/metrics')).text()).toContain('workbay_manager_maintenance_enabled 1');
    // Well past the 700 ms inactivity timeout: still running, because timeouts are paused.
    await new Promise((r) => setTimeout(r, 1500));
    expect(await phaseOf(h.client, request.id)).toBe('running');
    expect(await setMaintenance({ enabled: false })).toMatchObject({ enabled: false });
    const stopped = await waitForPhase(h.client, request.id, 'stopped');
    expect(stopped.conditions!.timeout).toMatch(/\(inactivity\)/);
  });

  it('maintenance through the file switch, with an expiry', async () => {
    const file = join(h.running.config.stateDir, 'maintenance.json');
    await writeFile(file, JSON.stringify({ enabledUntil: new Date(Date.now() + 1500).toISOString() }));
    await new Promise((r) => setTimeout(r, 400));
    await expect(h.client.startWorkspace(startRequest())).rejects.toBeInstanceOf(FailedPreconditionError);
    await new Promise((r) => setTimeout(r, 1500));
    const request = startRequest();
    await h.client.startWorkspace(request);
    expect(workspacePhase.fromProto((await h.client.describeWorkspace({ id: request.id })).status!.phase)).not.toBe(
      'stopped',
    );
    await waitForPhase(h.client, request.id, 'running');
    await h.client.stopWorkspace({ id: request.id, policy: wsman.StopWorkspacePolicy.ABORT });
  });

  it('rejects malformed admin requests', async () => {
    expect((await ops('/admin/maintenance', { method: 'PUT', body: '{' })).status).toBe(400);
    expect((await ops('/admin/maintenance', { method: 'PUT', body: '{"enabled":"yes"}' })).status).toBe(400);
    expect((await ops('/nope')).status).toBe(404);
  });
});
