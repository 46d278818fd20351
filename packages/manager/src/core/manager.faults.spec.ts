/**
 * Fault injection at the core's seams (a fake runtime and a fake daemon; everything else real, including the
 * file store): a runtime that cannot list its instances at start-up, a kill that fails, a daemon whose dispose
 * fails. Each ends in the state the invariants demand.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { UnavailableError } from '@workbay/api';
import type { RuntimeEvent, RuntimeWorkspaceSpec, RuntimeWorkspaceState, WorkspaceRuntime } from '@workbay/api';
import { Subject } from 'rxjs';
import { afterEach, describe, expect, it } from 'vitest';
import { resolveManagerConfig } from '../config.js';
import type { ContentService } from '../content/content-service.js';
import { emptyConditions } from '../domain/status.js';
import type { WorkspaceRecord } from '../domain/types.js';
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
    return true;
  }
  async backupWorkspace(): Promise<string> {
    return 'backup';
  }
  async disposeWorkspace(id: string, backup: boolean): Promise<{ gitStatus?: undefined }> {
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
