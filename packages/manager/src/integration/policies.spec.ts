import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AlreadyExistsError, workspaceConditionBool, workspacePhase, wsman } from '@workbay/api';
import { startHarness, startRequest, waitForPhase } from '../test-support/harness.js';
import type { Harness } from '../test-support/harness.js';

const bool = (v: wsman.WorkspaceConditionBool | undefined) => workspaceConditionBool.fromProto(v ?? 0);

describe('stop policies and failure paths', () => {
  let h: Harness;
  beforeAll(async () => {
    h = await startHarness();
  });
  afterAll(async () => {
    await h?.close();
  });

  async function running(options: Parameters<typeof startRequest>[0] = {}): Promise<string> {
    const request = startRequest(options);
    await h.client.startWorkspace(request);
    await waitForPhase(h.client, request.id, 'running');
    return request.id;
  }

  it.each([
    ['NORMALLY', wsman.StopWorkspacePolicy.NORMALLY],
    ['IMMEDIATELY', wsman.StopWorkspacePolicy.IMMEDIATELY],
  ])('%s: stopped by request with a final backup', async (_name, policy) => {
    const id = await running();
    await h.client.stopWorkspace({ id, policy });
    const stopping = (await h.client.describeWorkspace({ id })).status!;
    expect(['stopping', 'stopped']).toContain(workspacePhase.fromProto(stopping.phase));
    const stopped = await waitForPhase(h.client, id, 'stopped');
    expect(bool(stopped.conditions!.stoppedByRequest)).toBe(true);
    expect(bool(stopped.conditions!.aborted)).toBe(false);
    expect(bool(stopped.conditions!.finalBackupComplete)).toBe(true);
    expect(stopped.conditions!.failed).toBe('');
    expect(h.daemon.disposed.get(id)).toEqual({ backup: true });
  });

  it('ABORT: no final backup, aborted condition', async () => {
    const id = await running();
    await h.client.stopWorkspace({ id, policy: wsman.StopWorkspacePolicy.ABORT });
    const stopped = await waitForPhase(h.client, id, 'stopped');
    expect(bool(stopped.conditions!.aborted)).toBe(true);
    expect(bool(stopped.conditions!.finalBackupComplete)).toBe(false);
    expect(h.daemon.disposed.get(id)).toEqual({ backup: false });
  });

  it('grace periods: a process ignoring SIGTERM is killed after the grace period and the stop completes', async () => {
    const id = await running({ image: 'test/stubborn' });
    await h.client.stopWorkspace({ id, policy: wsman.StopWorkspacePolicy.IMMEDIATELY });
    const stopped = await waitForPhase(h.client, id, 'stopped', 15_000);
    expect(stopped.conditions!.failed).toBe('');
    expect(await h.running.runtime.inspect(id)).toBeUndefined();
  });

  it('a more urgent stop escalates a running NORMALLY stop to ABORT (no backup)', async () => {
    h.daemon.options.disposeDelayMs = 0;
    const id = await running({ image: 'test/stubborn' });
    await h.client.stopWorkspace({ id, policy: wsman.StopWorkspacePolicy.NORMALLY });
    await h.client.stopWorkspace({ id, policy: wsman.StopWorkspacePolicy.ABORT });
    const stopped = await waitForPhase(h.client, id, 'stopped', 15_000);
    expect(bool(stopped.conditions!.aborted)).toBe(true);
    expect(h.daemon.disposed.get(id)).toEqual({ backup: false });
  });

  it('content initialization failure: STOPPED with the reason, no backup', async () => {
    const request = startRequest({
      initializer: {
        spec: {
          $case: 'git',
          value: {
            remoteUri: `file://${h.dir}/no-such-repo`,
            upstreamRemoteUri: '',
            targetMode: 0,
            cloneTaget: '',
            checkoutLocation: 'project',
            fullClone: false,
          },
        },
      },
    });
    await h.client.startWorkspace(request);
    const stopped = await waitForPhase(h.client, request.id, 'stopped');
    expect(stopped.conditions!.failed).toMatch(/^Content initialization failed: git clone failed/);
    expect(bool(stopped.conditions!.finalBackupComplete)).toBe(false);
    expect(h.daemon.calls).not.toContain(`dispose:${request.id}:true`);
  });

  it('a workspace process that cannot start: STOPPED with the reason', async () => {
    const request = startRequest({ image: 'test/missing' });
    await h.client.startWorkspace(request);
    const stopped = await waitForPhase(h.client, request.id, 'stopped');
    expect(stopped.conditions!.failed).not.toBe('');
  });

  it('a workspace process that exits: failed, then backed up and STOPPED', async () => {
    const request = startRequest({ image: 'test/crasher' });
    await h.client.startWorkspace(request);
    const stopped = await waitForPhase(h.client, request.id, 'stopped');
    expect(stopped.conditions!.failed).toMatch(/exited unexpectedly.*3/);
    expect(bool(stopped.conditions!.finalBackupComplete)).toBe(true);
    expect(h.daemon.disposed.get(request.id)).toEqual({ backup: true });
  });

  it('a headless prebuild that succeeds: its snapshot is the result, no failure', async () => {
    const request = startRequest({ image: 'test/task-ok', type: wsman.WorkspaceType.PREBUILD });
    await h.client.startWorkspace(request);
    const stopped = await waitForPhase(h.client, request.id, 'stopped');
    expect(stopped.spec!.headless).toBe(true);
    expect(stopped.conditions!.failed).toBe('');
    expect(stopped.conditions!.headlessTaskFailed).toBe('');
    expect(stopped.conditions!.snapshot).toMatch(/snapshot-\d+\.tar@workbay-user-alice$/);
    expect(bool(stopped.conditions!.finalBackupComplete)).toBe(true);
  });

  it('a headless task that fails: headless_task_failed, not failed', async () => {
    const request = startRequest({ image: 'test/task-fail', type: wsman.WorkspaceType.PREBUILD });
    await h.client.startWorkspace(request);
    const stopped = await waitForPhase(h.client, request.id, 'stopped');
    expect(stopped.conditions!.headlessTaskFailed).toMatch(/headless task failed: .*7/);
    expect(stopped.conditions!.failed).toBe('');
    expect(stopped.conditions!.snapshot).toBe('');
  });

  it('retries DisposeWorkspace while the daemon is unavailable', async () => {
    const id = await running();
    h.daemon.options.failDisposeTimes = 2;
    await h.client.stopWorkspace({ id, policy: wsman.StopWorkspacePolicy.IMMEDIATELY });
    const stopped = await waitForPhase(h.client, id, 'stopped');
    expect(stopped.conditions!.failed).toBe('');
    expect(bool(stopped.conditions!.finalBackupComplete)).toBe(true);
  });

  it('a final backup that keeps failing: STOPPED with "Backup failed"', async () => {
    const id = await running();
    h.daemon.options.failDisposeTimes = 10;
    await h.client.stopWorkspace({ id, policy: wsman.StopWorkspacePolicy.IMMEDIATELY });
    const stopped = await waitForPhase(h.client, id, 'stopped');
    h.daemon.options.failDisposeTimes = 0;
    expect(stopped.conditions!.failed).toMatch(/^Backup failed: daemon is restarting/);
    expect(bool(stopped.conditions!.finalBackupComplete)).toBe(false);
  });

  it('a stop during initialization ends in STOPPED without a backup', async () => {
    h.daemon.options.initDelayMs = 1500;
    const request = startRequest();
    await h.client.startWorkspace(request);
    await waitForPhase(h.client, request.id, 'initializing');
    await h.client.stopWorkspace({ id: request.id, policy: wsman.StopWorkspacePolicy.NORMALLY });
    h.daemon.options.initDelayMs = 0;
    const stopped = await waitForPhase(h.client, request.id, 'stopped');
    expect(bool(stopped.conditions!.finalBackupComplete)).toBe(false);
    expect(h.daemon.calls).not.toContain(`dispose:${request.id}:true`);
  });

  it('ALREADY_EXISTS for a running duplicate id or meta id; a stopped id can start again', async () => {
    const request = startRequest();
    await h.client.startWorkspace(request);
    await expect(h.client.startWorkspace(request)).rejects.toBeInstanceOf(AlreadyExistsError);
    const sameMeta = startRequest({ metaId: request.metadata!.metaId });
    await expect(h.client.startWorkspace(sameMeta)).rejects.toThrow(/already has an instance/);
    await waitForPhase(h.client, request.id, 'running');
    await h.client.stopWorkspace({ id: request.id, policy: wsman.StopWorkspacePolicy.ABORT });
    await waitForPhase(h.client, request.id, 'stopped');
    const again = await h.client.startWorkspace(request);
    expect(again.ownerToken).toHaveLength(32);
    await waitForPhase(h.client, request.id, 'running');
    await h.client.stopWorkspace({ id: request.id, policy: wsman.StopWorkspacePolicy.ABORT });
    await waitForPhase(h.client, request.id, 'stopped');
  });
});
