import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AlreadyExistsError, workspaceConditionBool, workspacePhase, wsman } from '@workbay/api';
import { startHarness, startRequest, startSlowFileServer, waitForPhase } from '../test-support/harness.js';
import type { Harness } from '../test-support/harness.js';

const bool = (v: wsman.WorkspaceConditionBool | undefined) => workspaceConditionBool.fromProto(v ?? 0);

describe('stop policies and failure paths', () => {
  let h: Harness;
  beforeAll(async () => {
    // Retries span ~10 s (0.7+1.4+2.8+5.6): a SIGKILLed daemon is restarted 1 s later and takes a few seconds to
    // serve again on a loaded machine.
    h = await startHarness({ config: { daemon: { disposeAttempts: 5, retryBackoff: '700ms' } } });
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
  });

  it('ABORT: no final backup, aborted condition', async () => {
    const id = await running();
    await h.client.stopWorkspace({ id, policy: wsman.StopWorkspacePolicy.ABORT });
    const stopped = await waitForPhase(h.client, id, 'stopped');
    expect(bool(stopped.conditions!.aborted)).toBe(true);
    expect(bool(stopped.conditions!.finalBackupComplete)).toBe(false);
  });

  it('grace periods: a process ignoring SIGTERM is killed after the grace period and the stop completes', async () => {
    const id = await running({ image: 'test/stubborn' });
    await h.client.stopWorkspace({ id, policy: wsman.StopWorkspacePolicy.IMMEDIATELY });
    const stopped = await waitForPhase(h.client, id, 'stopped', 15_000);
    expect(stopped.conditions!.failed).toBe('');
    expect(await h.running.runtime.inspect(id)).toBeUndefined();
  });

  it('a more urgent stop escalates a running NORMALLY stop to ABORT (no backup)', async () => {
    const id = await running({ image: 'test/stubborn' });
    await h.client.stopWorkspace({ id, policy: wsman.StopWorkspacePolicy.NORMALLY });
    await h.client.stopWorkspace({ id, policy: wsman.StopWorkspacePolicy.ABORT });
    const stopped = await waitForPhase(h.client, id, 'stopped', 15_000);
    expect(bool(stopped.conditions!.aborted)).toBe(true);
    expect(bool(stopped.conditions!.finalBackupComplete)).toBe(false);
  });

  it.each([
    [
      'a missing Git repository',
      {
        $case: 'git',
        value: {
          remoteUri: 'file:///nonexistent/repo',
          upstreamRemoteUri: '',
          targetMode: 0,
          cloneTaget: '',
          checkoutLocation: 'project',
          fullClone: false,
        },
      },
    ],
    [
      'a missing snapshot',
      {
        $case: 'snapshot',
        value: { snapshot: 'workspaces/x/snapshot-1.tar@workbay-user-alice', fromVolumeSnapshot: false },
      },
    ],
    [
      'a backup initializer without a backup',
      { $case: 'backup', value: { checkoutLocation: '', fromVolumeSnapshot: false } },
    ],
  ] as const)('content initialization failure (%s): STOPPED with the reason, no backup', async (_name, spec) => {
    const request = startRequest({ initializer: { spec } as never });
    await h.client.startWorkspace(request);
    const stopped = await waitForPhase(h.client, request.id, 'stopped');
    expect(stopped.conditions!.failed).toMatch(/^Content initialization failed: /);
    expect(bool(stopped.conditions!.finalBackupComplete)).toBe(false);
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

  it('a stop during initialization ends in STOPPED without a backup', async () => {
    const slow = await startSlowFileServer(3000);
    const request = startRequest({ initializer: slow.initializer });
    await h.client.startWorkspace(request);
    await waitForPhase(h.client, request.id, 'initializing');
    await h.client.stopWorkspace({ id: request.id, policy: wsman.StopWorkspacePolicy.NORMALLY });
    const stopped = await waitForPhase(h.client, request.id, 'stopped');
    expect(bool(stopped.conditions!.finalBackupComplete)).toBe(false);
    expect(stopped.conditions!.failed).toBe('');
    await slow.close();
  });

  it('ALREADY_EXISTS for a running duplicate id or meta id, and for a stopped id of another workspace; a stopped id can start again', async () => {
    const request = startRequest();
    await h.client.startWorkspace(request);
    await expect(h.client.startWorkspace(request)).rejects.toBeInstanceOf(AlreadyExistsError);
    const sameMeta = startRequest({ metaId: request.metadata!.metaId });
    await expect(h.client.startWorkspace(sameMeta)).rejects.toThrow(/already has an instance/);
    await waitForPhase(h.client, request.id, 'running');
    await h.client.stopWorkspace({ id: request.id, policy: wsman.StopWorkspacePolicy.ABORT });
    await waitForPhase(h.client, request.id, 'stopped');
    // Another owner, or another workspace of the same owner, does not take over the stopped one's id (its record, and
    // content a failed final backup leaves on the node: red team round 9).
    for (const other of [
      startRequest({ id: request.id, owner: 'eve', metaId: request.metadata!.metaId }),
      startRequest({ id: request.id, metaId: 'another-workspace' }),
    ]) {
      await expect(h.client.startWorkspace(other)).rejects.toThrow(/belongs to another workspace/);
    }
    expect((await h.client.describeWorkspace({ id: request.id })).status!.metadata!.owner).toBe('alice');
    const again = await h.client.startWorkspace(request);
    expect(again.ownerToken).toHaveLength(32);
    await waitForPhase(h.client, request.id, 'running');
    await h.client.stopWorkspace({ id: request.id, policy: wsman.StopWorkspacePolicy.ABORT });
    await waitForPhase(h.client, request.id, 'stopped');
  });
  it('retries DisposeWorkspace while the daemon restarts (it crashed), and the backup completes', async () => {
    const id = await running();
    // SIGKILL the daemon; the supervisor starts it again on the same address about a second later.
    h.daemonProcess.kill('SIGKILL');
    await h.client.stopWorkspace({ id, policy: wsman.StopWorkspacePolicy.IMMEDIATELY });
    const stopped = await waitForPhase(h.client, id, 'stopped', 30_000);
    expect(stopped.conditions!.failed).toBe('');
    expect(bool(stopped.conditions!.finalBackupComplete)).toBe(true);
  });

  it('a final backup that cannot be taken (daemon gone for good): STOPPED with "Backup failed"', async () => {
    const id = await running();
    const daemon = h.daemonProcess;
    const address = daemon.address;
    daemon.restartOnExit = false;
    daemon.kill('SIGKILL');
    await h.client.stopWorkspace({ id, policy: wsman.StopWorkspacePolicy.IMMEDIATELY });
    const stopped = await waitForPhase(h.client, id, 'stopped', 30_000);
    expect(stopped.conditions!.failed).toMatch(/^Backup failed: /);
    expect(bool(stopped.conditions!.finalBackupComplete)).toBe(false);
    daemon.restartOnExit = true;
    await daemon.start(address);
  });
});
