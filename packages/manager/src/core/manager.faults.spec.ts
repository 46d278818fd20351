/**
 * Fault injection at the core's seams (a fake runtime and a fake daemon; everything else real, including the
 * file store): a runtime that cannot list its instances at start-up, a kill that fails, a daemon whose dispose
 * fails, a stop that arrives while its start is still being accepted. Each ends in the state the invariants demand.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AlreadyExistsError, NotFoundError, ResourceExhaustedError, UnavailableError } from '@workbay/api';
import type { RuntimeEvent, RuntimeWorkspaceSpec, RuntimeWorkspaceState, WorkspaceRuntime } from '@workbay/api';
import { Subject } from 'rxjs';
import { afterEach, describe, expect, it } from 'vitest';
import { resolveManagerConfig } from '../config.js';
import type { ContentService } from '../content/content-service.js';
import { emptyConditions } from '../domain/status.js';
import type { StartWorkspaceInput, StopPolicy, WorkspaceRecord } from '../domain/types.js';
import { createSilentLogger } from '../logger.js';
import { FileWorkspaceStore } from '../store/file-store.js';
import { makeRecord } from '../test-support/records.js';
import { MaintenanceMode } from './maintenance.js';
import { WorkspaceManagerCore } from './manager.js';

/** TEST ONLY: a runtime whose failures the test chooses. */
class FakeRuntime implements WorkspaceRuntime {
  readonly kind = 'fake';
  readonly events = new Subject<RuntimeEvent>();
  readonly events$ = this.events.asObservable();
  readonly live = new Map<string, RuntimeWorkspaceState>();
  listFailures = 0;
  listCalls = 0;
  stopFails = false;
  stopCalls = 0;

  state(instanceId: string, ready = true): RuntimeWorkspaceState {
    return {
      instanceId,
      status: 'running',
      ready,
      pid: 4242,
      nodeName: 'node',
      host: '127.0.0.1',
      startedAt: new Date(),
    };
  }
  async start(spec: RuntimeWorkspaceSpec): Promise<RuntimeWorkspaceState> {
    const state = this.state(spec.instanceId);
    this.live.set(spec.instanceId, state);
    return state;
  }
  async stop(instanceId: string): Promise<void> {
    this.stopCalls += 1;
    if (this.stopFails) throw new Error('EPERM: operation not permitted (kill)');
    this.live.delete(instanceId);
  }
  async inspect(instanceId: string): Promise<RuntimeWorkspaceState | undefined> {
    return this.live.get(instanceId);
  }
  async list(): Promise<RuntimeWorkspaceState[]> {
    this.listCalls += 1;
    if (this.listFailures > 0) {
      this.listFailures -= 1;
      throw new Error('cannot read the runtime state directory');
    }
    return [...this.live.values()];
  }
  async close(): Promise<void> {}
}

/** TEST ONLY: a daemon that records what it was asked. */
class FakeContent implements ContentService {
  readonly disposed: Array<{ id: string; backup: boolean }> = [];
  disposeFails = false;
  /** Thrown by every DisposeWorkspace when set (counted in disposeCalls). */
  disposeError: Error | undefined;
  disposeCalls = 0;
  snapshotExists = true;
  async initWorkspace(): Promise<{ contentLocation?: string }> {
    return {};
  }
  async waitForInit(): Promise<void> {}
  async isWorkspaceExists(): Promise<boolean> {
    return true;
  }
  async takeSnapshot(): Promise<string> {
    return 'snapshot@bucket';
  }
  async deleteSnapshot(): Promise<boolean> {
    return this.snapshotExists;
  }
  async backupWorkspace(): Promise<string> {
    return 'backup';
  }
  async disposeWorkspace(id: string, backup: boolean): Promise<{ gitStatus?: undefined }> {
    this.disposeCalls += 1;
    if (this.disposeError) throw this.disposeError;
    if (this.disposeFails) throw new UnavailableError('daemon unavailable');
    this.disposed.push({ id, backup });
    return {};
  }
  close(): void {}
}

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function setup(
  records: WorkspaceRecord[],
  runtime: FakeRuntime,
  content = new FakeContent(),
  leadership?: { isLeader$: Subject<boolean>; lost: () => void },
) {
  const dir = await mkdtemp(join(tmpdir(), 'wb-core-faults-'));
  const config = resolveManagerConfig(
    {
      stateDir: join(dir, 'state'),
      workingArea: join(dir, 'work'),
      idePorts: { from: 41000, to: 41099 },
      stopGrace: { normally: '100ms', immediately: '100ms', abort: '100ms' },
      daemon: { disposeAttempts: 2, retryBackoff: '10ms' },
      timeouts: { checkInterval: '1h' },
    },
    { baseDir: dir },
  );
  const store = new FileWorkspaceStore(config.stateDir);
  await store.load();
  for (const record of records) await store.save(record);
  const core = new WorkspaceManagerCore({
    config,
    store: new FileWorkspaceStore(config.stateDir),
    runtime,
    content,
    maintenance: new MaintenanceMode({ enabled: false, file: join(dir, 'maintenance'), pollIntervalMs: 60_000 }),
    logger: createSilentLogger(),
    recovery: { attempts: 3, backoffMs: 5, recheckMs: 20 },
    leadership: leadership && { isLeader$: leadership.isLeader$.asObservable() },
    onLeadershipLost: leadership?.lost,
  });
  cleanups.push(async () => {
    await core.close();
    await rm(dir, { recursive: true, force: true });
  });
  return { core, content };
}

function runningRecord(id: string): WorkspaceRecord {
  const base = makeRecord({ id });
  return {
    ...base,
    phase: 'running',
    phaseTimes: { pending: 1, running: 2 },
    conditions: { ...emptyConditions, deployed: true },
    progress: { ...base.progress, idePort: 41050, initRequested: true, contentReady: true, everReady: true },
  };
}

function startInput(id: string, metaId = `meta-${id}`): StartWorkspaceInput {
  return {
    id,
    servicePrefix: '',
    metadata: { owner: 'owner-1', metaId, annotations: {} },
    type: 'regular',
    spec: {
      image: 'workspace-image',
      ideImage: { webRef: 'ide-image', supervisorRef: '', desktopRef: '', desktopPluginRef: '' },
      ideImageLayers: [],
      initializer: 'e30=',
      initializerKind: 'empty',
      ports: [],
      envvars: [],
      sysEnvvars: [],
      workspaceLocation: 'repo',
      timeout: '',
      closedTimeout: '',
      maximumLifetime: '',
      admission: 'owner-only',
      className: '',
      sshPublicKeys: [],
      featureFlags: [],
    },
  };
}

/** The message of what `body` throws (it must throw `type`). */
function thrownMessage(body: () => unknown, type: new (...args: never[]) => Error): string {
  try {
    body();
  } catch (error) {
    expect(error).toBeInstanceOf(type);
    return (error as Error).message;
  }
  throw new Error('expected an error');
}

async function until(predicate: () => boolean): Promise<void> {
  while (!predicate()) await new Promise((resolve) => setTimeout(resolve, 5));
}

describe('core fault injection', () => {
  it('a runtime that cannot list at start-up: retried, then INTERRUPTED (never failed), RUNNING once it answers', async () => {
    const runtime = new FakeRuntime();
    runtime.live.set('ws-a', runtime.state('ws-a'));
    runtime.listFailures = 5; // more than the start-up attempts (3); the background re-check succeeds later
    const { core } = await setup([runningRecord('ws-a')], runtime);
    await core.start();
    expect(runtime.listCalls).toBe(3);
    const interrupted = core.getWorkspace('ws-a')!;
    expect(interrupted.phase).toBe('interrupted');
    expect(interrupted.conditions.failed).toBe('');
    expect(interrupted.message).toMatch(/runtime cannot be reached/);
    // Nothing was stopped or disposed underneath a workspace that may well be running.
    expect(runtime.stopCalls).toBe(0);
    await until(() => core.getWorkspace('ws-a')!.phase === 'running');
    expect(core.getWorkspace('ws-a')!.conditions.failed).toBe('');
    expect(core.getWorkspace('ws-a')!.message).toBe('');
  });

  it('an INTERRUPTED workspace whose process turns out gone fails and stops, with the reason', async () => {
    const runtime = new FakeRuntime();
    runtime.listFailures = 4;
    const { core } = await setup([runningRecord('ws-b')], runtime);
    await core.start();
    expect(core.getWorkspace('ws-b')!.phase).toBe('interrupted');
    await until(() => core.getWorkspace('ws-b')!.phase === 'stopped');
    expect(core.getWorkspace('ws-b')!.conditions.failed).toMatch(/workspace process is gone/);
  });

  it('a kill that fails: STOPPED with the reason, and no backup or deletion under a possibly live process', async () => {
    const runtime = new FakeRuntime();
    runtime.live.set('ws-c', runtime.state('ws-c'));
    const { core, content } = await setup([runningRecord('ws-c')], runtime);
    await core.start();
    expect(core.getWorkspace('ws-c')!.phase).toBe('running');
    runtime.stopFails = true;
    await core.stopWorkspace('ws-c', 'normally');
    await until(() => core.getWorkspace('ws-c')!.phase === 'stopped');
    const stopped = core.getWorkspace('ws-c')!;
    expect(stopped.conditions.failed).toMatch(/cannot stop the workspace process: EPERM.*content was kept/);
    expect(stopped.conditions.finalBackupComplete).toBe(false);
    expect(stopped.progress.disposed).toBe(false);
    expect(content.disposed).toEqual([]);
    // The polite stop, then every kill attempt.
    expect(runtime.stopCalls).toBe(1 + 6);
  });

  it('a final backup that fails: STOPPED with "Backup failed", content left to the daemon', async () => {
    const runtime = new FakeRuntime();
    runtime.live.set('ws-d', runtime.state('ws-d'));
    const content = new FakeContent();
    content.disposeFails = true;
    const { core } = await setup([runningRecord('ws-d')], runtime, content);
    await core.start();
    await core.stopWorkspace('ws-d', 'normally');
    await until(() => core.getWorkspace('ws-d')!.phase === 'stopped');
    expect(core.getWorkspace('ws-d')!.conditions.failed).toBe('Backup failed: daemon unavailable');
  });

  it('a final backup the storage is too full for is tried once, an unreachable daemon again (red team round 14, F9)', async () => {
    // Each attempt re-uploaded up to the free space: five of them on a full storage, for the same failure.
    for (const [error, calls] of [
      [new ResourceExhaustedError('the final backup failed: the storage is full (ENOSPC)'), 1],
      [new UnavailableError('daemon unavailable'), 2],
    ] as const) {
      const runtime = new FakeRuntime();
      runtime.live.set('ws-f', runtime.state('ws-f'));
      const content = new FakeContent();
      content.disposeError = error;
      const { core } = await setup([runningRecord('ws-f')], runtime, content);
      await core.start();
      await core.stopWorkspace('ws-f', 'normally');
      await until(() => core.getWorkspace('ws-f')!.phase === 'stopped');
      expect(core.getWorkspace('ws-f')!.conditions.failed).toContain('Backup failed');
      expect(content.disposeCalls, error.message).toBe(calls);
    }
  });

  it('a replica that does not lead changes nothing: no recovery, no runtime calls, mutations refused', async () => {
    const runtime = new FakeRuntime();
    runtime.live.set('ws-f', runtime.state('ws-f'));
    const isLeader$ = new Subject<boolean>();
    let lost = 0;
    const { core } = await setup([runningRecord('ws-f')], runtime, new FakeContent(), {
      isLeader$,
      lost: () => (lost += 1),
    });
    await core.start();
    expect(core.isLeading).toBe(false);
    expect(runtime.listCalls).toBe(0);
    // Reads are served from the records.
    expect(core.getWorkspace('ws-f')!.phase).toBe('running');
    await expect(core.takeSnapshot('ws-f', true)).rejects.toThrow(/not leading/);
    await expect(core.markActive('ws-f', { closed: false, ignoreIfActive: false })).rejects.toThrow(/not leading/);
    await expect(core.startWorkspace({ id: 'ws-new' } as never)).rejects.toThrow(/not leading/);
    await core.stopWorkspace('ws-f', 'normally');
    expect(runtime.stopCalls).toBe(0);
    expect(core.getWorkspace('ws-f')!.phase).toBe('running');

    // Elected: recovery re-adopts what runs; losing the lease hands control back to the caller.
    isLeader$.next(true);
    await until(() => runtime.listCalls === 1);
    expect(core.isLeading).toBe(true);
    await core.markActive('ws-f', { closed: false, ignoreIfActive: false });
    isLeader$.next(false);
    expect(lost).toBe(1);
    expect(core.isLeading).toBe(false);
  });
});

describe('a stop that arrives while its start is still being accepted', () => {
  const policies: readonly StopPolicy[] = ['normally', 'immediately', 'abort'];

  it('Start then Stop at once (the Start not awaited) on many ids, twice: every workspace ends STOPPED by request', async () => {
    const runtime = new FakeRuntime();
    const { core } = await setup([], runtime);
    await core.start();
    const seen: WorkspaceRecord[] = [];
    const subscription = core.status$.subscribe((record) => seen.push(record));
    const ids = Array.from({ length: 24 }, (_, i) => `race-${i}`);
    // The second round starts ids whose previous instance is STOPPED (a new record replaces it).
    for (const round of [1, 2]) {
      const calls: Promise<unknown>[] = [];
      ids.forEach((id, i) => {
        calls.push(core.startWorkspace(startInput(id)));
        calls.push(core.stopWorkspace(id, policies[i % policies.length]!));
      });
      const outcomes = await Promise.allSettled(calls);
      expect(outcomes.filter((o) => o.status === 'rejected')).toEqual([]);
      // Every Stop has answered, so each workspace has begun to stop (a dropped stop left it going on to RUNNING).
      for (const id of ids) {
        expect(['stopping', 'stopped'], `${id} in round ${round}`).toContain(core.getWorkspace(id)!.phase);
      }
      await until(() => ids.every((id) => core.getWorkspace(id)!.phase === 'stopped'));
      for (const [i, id] of ids.entries()) {
        const record = core.getWorkspace(id)!;
        expect(record.conditions.stoppedByRequest, id).toBe(true);
        expect(record.conditions.failed, id).toBe('');
        expect(record.conditions.aborted, id).toBe(policies[i % policies.length] === 'abort');
        expect(record.progress.stopPolicy, id).toBe(policies[i % policies.length]);
      }
      // Nothing is left running on the node.
      expect([...runtime.live.keys()]).toEqual([]);
    }
    subscription.unsubscribe();
    // The stops are visible in the status stream: each instance went PENDING, then STOPPING, then STOPPED.
    const lifecycle = ['pending', 'stopping', 'stopped'];
    for (const id of ids) {
      const phases = seen.filter((r) => r.id === id).map((r) => r.phase);
      // The phases where each instance entered one of these, in order, without repeats.
      const entered = phases.filter((p, i) => lifecycle.includes(p) && p !== phases[i - 1]);
      expect(entered, id).toEqual([...lifecycle, ...lifecycle]);
    }
  });

  it('a Stop of an id that is neither known nor being started still answers OK and changes nothing', async () => {
    const runtime = new FakeRuntime();
    const { core } = await setup([], runtime);
    await core.start();
    const before = core.statusVersion;
    await expect(core.stopWorkspace('never-started', 'normally')).resolves.toBeUndefined();
    // Another id being accepted does not make the stop wait for it or act on it.
    const start = core.startWorkspace(startInput('other'));
    await expect(core.stopWorkspace('still-unknown', 'abort')).resolves.toBeUndefined();
    await start;
    expect(core.getWorkspace('never-started')).toBeUndefined();
    expect(core.getWorkspace('still-unknown')).toBeUndefined();
    expect(core.getWorkspace('other')!.conditions.stoppedByRequest).toBe(false);
    expect(core.statusVersion).toBeGreaterThan(before);
    expect(runtime.stopCalls).toBe(0);
  });
});

describe('error messages quote at most 64 characters of the request', () => {
  const longId = `w${'x'.repeat(126)}z`;

  it('NOT_FOUND of an unknown 128-character id (DescribeWorkspace, TakeSnapshot, BackupWorkspace)', async () => {
    const { core } = await setup([], new FakeRuntime());
    await core.start();
    const message = thrownMessage(() => core.describeWorkspace(longId), NotFoundError);
    expect(message).toBe(`workspace ${longId.slice(0, 61)}... does not exist`);
    await expect(core.takeSnapshot(longId, true)).rejects.toThrow(`workspace ${longId.slice(0, 61)}... does not exist`);
    await expect(core.backupWorkspace(longId)).rejects.toThrow(`workspace ${longId.slice(0, 61)}... does not exist`);
    // Short ids are quoted whole.
    expect(thrownMessage(() => core.describeWorkspace('ws-short'), NotFoundError)).toBe(
      'workspace ws-short does not exist',
    );
  });

  it('NOT_FOUND of a long snapshot handle (DeleteVolumeSnapshot)', async () => {
    const content = new FakeContent();
    content.snapshotExists = false;
    const { core } = await setup([], new FakeRuntime(), content);
    await core.start();
    const handle = `owner/workspaces/${longId}/snapshot-1.tar@bucket`;
    const error = await core.deleteVolumeSnapshot(handle, false).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(NotFoundError);
    expect((error as Error).message).toBe(`snapshot ${handle.slice(0, 61)}... does not exist`);
    await expect(core.deleteVolumeSnapshot(handle, true)).resolves.toBe(false);
  });

  it('ALREADY_EXISTS of a 128-character id', async () => {
    const { core } = await setup([], new FakeRuntime());
    await core.start();
    const first = core.startWorkspace(startInput(longId, 'meta-long'));
    // Being accepted, then not stopped: both refusals quote the id shortened.
    await expect(core.startWorkspace(startInput(longId, 'meta-long'))).rejects.toThrow(
      new AlreadyExistsError(`workspace ${longId.slice(0, 61)}... is being started`).message,
    );
    await first;
    const again = await core.startWorkspace(startInput(longId, 'meta-long')).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(again).toBeInstanceOf(AlreadyExistsError);
    expect((again as Error).message).toMatch(new RegExp(`^workspace ${longId.slice(0, 61)}\\.\\.\\. already exists`));
    expect((again as Error).message).not.toContain(longId);
    await core.stopWorkspace(longId, 'abort');
    await until(() => core.getWorkspace(longId)!.phase === 'stopped');
  });
});
