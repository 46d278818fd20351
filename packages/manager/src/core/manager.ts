/**
 * The manager's domain core: owns every workspace record, drives each workspace through its lifecycle
 * (PENDING → CREATING → INITIALIZING → RUNNING → STOPPING → STOPPED), enforces the timeout rules and publishes
 * every visible change on the status bus with a strictly increasing status_version.
 *
 * Rules it keeps:
 * - Records are immutable; each change replaces the record, persists it and (if visible) publishes it.
 * - Failures are recorded once (the first wins), and every failure path ends in STOPPED with the reason in
 *   `conditions.failed` (invariant 4).
 * - The final backup is requested only for content that was initialised, never when aborted; the daemon
 *   records completion before deleting (invariant 2), and dispose is retried while the daemon is unavailable
 *   (invariant 5).
 * - Everything a restart needs is on disk: a restarted manager re-adopts running workspaces, resumes
 *   interrupted starts and stops, and fails those whose process died meanwhile.
 *
 * Proto types never appear here; see `../grpc/` for the wire edge.
 *
 * @module
 */
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import {
  AlreadyExistsError,
  FailedPreconditionError,
  InvalidArgumentError,
  NotFoundError,
  UnavailableError,
  isRetryableError,
  isWorkbayError,
} from '@workbay/api';
import type { RuntimeWorkspaceSpec, RuntimeWorkspaceState, WorkspaceRuntime } from '@workbay/api';
import type { Observable, Subscription } from 'rxjs';
import type { ManagerConfig, ResolvedClass } from '../config.js';
import type { ContentService } from '../content/content-service.js';
import type { SnapshotStore } from '../content/snapshot-store.js';
import { parseSnapshotHandle } from '../content/snapshot-store.js';
import {
  differsVisibly,
  emptyConditions,
  isStarting,
  matchesFilter,
  withConditions,
  withFailure,
  withPhase,
  withProgress,
} from '../domain/status.js';
import { renderTemplate } from '../domain/templates.js';
import type { UrlVariables } from '../domain/templates.js';
import { evaluateTimeout } from '../domain/timeouts.js';
import type {
  AdmissionLevel,
  DescribeResult,
  GitStatusInfo,
  MetadataFilter,
  PortProtocol,
  PortSpec,
  PortVisibility,
  StartWorkspaceInput,
  StartWorkspaceResult,
  StopPolicy,
  StopReason,
  TimeoutKind,
  WorkspaceClassInfo,
  WorkspaceRecord,
} from '../domain/types.js';
import { parseOptionalDuration, validateInstanceId, validateSshKey, validateStartInput } from '../domain/validation.js';
import type { Logger } from '../logger.js';
import type { ManagerMetrics } from '../metrics.js';
import { ReservedEndpoints, validateExposure, validatePortNumber } from '../proxy/exposure.js';
import { errnoOf } from '../store/file-store.js';
import type { WorkspaceStore } from '../store/file-store.js';
import type { MaintenanceMode } from './maintenance.js';
import { PortAllocator } from './port-allocator.js';
import { writeAuthorizedKeys } from './ssh-keys.js';
import { StatusBus } from './status-bus.js';
import type { ResumeResult } from './status-bus.js';

export interface ManagerCoreOptions {
  readonly config: ManagerConfig;
  readonly store: WorkspaceStore;
  readonly runtime: WorkspaceRuntime;
  readonly content: ContentService;
  /** Where DeleteVolumeSnapshot deletes when `storage` is configured; without it, the daemon deletes. */
  readonly snapshots?: SnapshotStore;
  readonly maintenance: MaintenanceMode;
  readonly metrics?: ManagerMetrics;
  readonly logger: Logger;
  /** host:port of the port proxy, for the `{{proxy}}` URL variable (known once the proxy listens). */
  readonly proxyAddress?: () => string;
  /** The manager's and daemon's own ports, which ControlPort refuses on a shared host (see proxy/exposure.ts). */
  readonly reservedEndpoints?: ReservedEndpoints;
  readonly now?: () => number;
}

interface Flow {
  readonly kind: 'start' | 'stop';
  readonly controller: AbortController;
  readonly done: Promise<void>;
}

/** Thrown inside flows when they were aborted (by a stop or by shutdown). */
class FlowAborted extends Error {
  constructor() {
    super('flow aborted');
    this.name = 'FlowAborted';
  }
}

function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(new FlowAborted());
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(new FlowAborted());
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

function checkAborted(signal: AbortSignal): void {
  if (signal.aborted) throw new FlowAborted();
}

/** A counting semaphore whose waiters are served in order and can give up (abort). */
class Semaphore {
  private readonly waiters: Array<{ resolve: () => void; reject: (error: Error) => void }> = [];
  private free: number;

  constructor(size: number) {
    this.free = size;
  }

  acquire(signal: AbortSignal): Promise<void> {
    if (signal.aborted) return Promise.reject(new FlowAborted());
    if (this.free > 0) {
      this.free -= 1;
      return Promise.resolve();
    }
    return new Promise((resolve, reject) => {
      const waiter = {
        resolve: () => {
          signal.removeEventListener('abort', onAbort);
          resolve();
        },
        reject,
      };
      const onAbort = (): void => {
        const index = this.waiters.indexOf(waiter);
        if (index >= 0) this.waiters.splice(index, 1);
        reject(new FlowAborted());
      };
      signal.addEventListener('abort', onAbort, { once: true });
      this.waiters.push(waiter);
    });
  }

  release(): void {
    const next = this.waiters.shift();
    if (next) next.resolve();
    else this.free += 1;
  }
}

/** 32 random characters from the URL-safe base64 alphabet (24 bytes of entropy). */
export function createOwnerToken(): string {
  return randomBytes(24).toString('base64url');
}

export class WorkspaceManagerCore {
  private readonly config: ManagerConfig;
  private readonly store: WorkspaceStore;
  private readonly runtime: WorkspaceRuntime;
  private readonly content: ContentService;
  private readonly snapshots?: SnapshotStore;
  private readonly maintenance: MaintenanceMode;
  private readonly metrics?: ManagerMetrics;
  private readonly logger: Logger;
  private readonly now: () => number;
  private readonly proxyAddress: () => string;
  private readonly reservedEndpoints: ReservedEndpoints;
  private readonly ports: PortAllocator;
  private readonly classes: ReadonlyMap<string, ResolvedClass>;
  private bus: StatusBus;
  private readonly flows = new Map<string, Flow>();
  /** Ids and meta ids of StartWorkspace calls waiting for their record to be durable. */
  private readonly accepting = new Set<string>();
  private readonly startSlots: Semaphore;
  private runtimeEvents: Subscription | undefined;
  private timeoutTimer: NodeJS.Timeout | undefined;
  private started = false;
  private closing = false;

  constructor(options: ManagerCoreOptions) {
    this.config = options.config;
    this.store = options.store;
    this.runtime = options.runtime;
    this.content = options.content;
    this.snapshots = options.snapshots;
    this.maintenance = options.maintenance;
    this.metrics = options.metrics;
    this.logger = options.logger;
    this.now = options.now ?? Date.now;
    this.proxyAddress = options.proxyAddress ?? (() => this.config.proxy.address);
    this.reservedEndpoints = options.reservedEndpoints ?? new ReservedEndpoints();
    this.ports = new PortAllocator(this.config.idePorts.from, this.config.idePorts.to);
    this.classes = new Map(this.config.workspaceClasses.map((c) => [c.id, c]));
    this.bus = new StatusBus(this.config.subscribe.historySize);
    this.startSlots = new Semaphore(this.config.maxConcurrentStarts);
  }

  // -------------------------------------------------------------------------------------------------------------
  // Observation

  /** Every published status change, in status_version order. */
  get status$(): Observable<WorkspaceRecord> {
    return this.bus.status$;
  }

  /** The current state of a workspace (synchronous snapshot). */
  getWorkspace(id: string): WorkspaceRecord | undefined {
    return this.bus.getWorkspace(id);
  }

  /** Workspaces matching the filter, oldest first. */
  listWorkspaces(filter?: MetadataFilter): WorkspaceRecord[] {
    const out: WorkspaceRecord[] = [];
    for (const record of this.bus.getWorkspaces()) if (matchesFilter(record, filter)) out.push(record);
    return out.sort((a, b) => a.createdAt - b.createdAt || (a.id < b.id ? -1 : 1));
  }

  /** All records (for metrics); do not hold on to the iterator across awaits. */
  allWorkspaces(): IterableIterator<WorkspaceRecord> {
    return this.bus.getWorkspaces();
  }

  get workspaceCount(): number {
    return this.bus.size;
  }

  /** The newest status_version published. */
  get statusVersion(): number {
    return this.bus.version;
  }

  /** Updates after `version` from the bounded history; call synchronously after subscribing to `status$`. */
  resumeFrom(version: number): ResumeResult {
    return this.bus.since(version);
  }

  /** The configured timeouts (defaults and caps). */
  get timeoutSettings(): ManagerConfig['timeouts'] {
    return this.config.timeouts;
  }

  isMaintenanceEnabled(): boolean {
    return this.maintenance.isEnabled();
  }

  // -------------------------------------------------------------------------------------------------------------
  // Startup and shutdown

  /** Loads the records, re-adopts what still runs, resumes interrupted flows and starts the timeout loop. */
  async start(): Promise<void> {
    if (this.started) return;
    this.started = true;
    const loaded = await this.store.load();
    if (loaded.corrupt.length > 0) {
      this.logger.error({ files: loaded.corrupt }, 'unreadable workspace records were moved aside (*.corrupt)');
    }
    this.bus = new StatusBus(this.config.subscribe.historySize, loaded.versionFloor);
    for (const record of loaded.records) {
      this.bus.seed(record);
      if (record.phase !== 'stopped' && record.progress.idePort) this.ports.reserve(record.progress.idePort);
    }
    this.runtimeEvents = this.runtime.events$.subscribe((event) => {
      if (event.type === 'ready') this.onRuntimeReady(event.instanceId, event.state);
      else this.onRuntimeExited(event.instanceId, event.state);
    });
    await this.recover(loaded.records);
    this.timeoutTimer = setInterval(() => this.checkTimeouts(), Math.max(10, this.config.timeouts.checkIntervalMs));
    this.timeoutTimer.unref();
    this.logger.info(
      { workspaces: loaded.records.length, statusVersion: this.bus.version },
      'workspace manager core started',
    );
  }

  private async recover(records: readonly WorkspaceRecord[]): Promise<void> {
    let states: RuntimeWorkspaceState[] = [];
    try {
      states = await this.runtime.list();
    } catch (error) {
      this.logger.error({ err: error }, 'cannot list the runtime instances; treating every instance as gone');
    }
    const byId = new Map(states.map((s) => [s.instanceId, s]));
    for (const stored of records) {
      const record = this.bus.getWorkspace(stored.id);
      if (!record || record.phase === 'stopped') continue;
      const state = byId.get(record.id);
      const alive = state !== undefined && state.status !== 'exited';
      const log = this.logger.child({ workspace: record.id });
      if (record.phase === 'stopping') {
        log.info('resuming the stop of a workspace');
        this.launchStop(record.id);
      } else if (isStarting(record.phase)) {
        log.info({ phase: record.phase, alive }, 'resuming the start of a workspace');
        this.launchStart(record.id);
      } else if (alive) {
        log.info({ pid: state.pid }, 're-adopted a running workspace');
        this.adopt(record.id, state);
        if (state.ready) this.onRuntimeReady(record.id, state);
      } else {
        const reason = state?.failure ?? 'the workspace process ended while the manager was not running';
        log.warn({ reason }, 'a running workspace is gone');
        this.failAndStop(record.id, `workspace process is gone: ${reason}`);
      }
    }
    // Instances nobody owns any more (their record is stopped or gone) are stopped.
    for (const state of states) {
      const record = this.bus.getWorkspace(state.instanceId);
      if (state.status === 'exited' || (record && record.phase !== 'stopped')) continue;
      this.logger.warn({ workspace: state.instanceId }, 'stopping an orphaned runtime instance');
      this.runtime
        .stop(state.instanceId, { gracePeriodMs: this.config.stopGrace.abortMs })
        .catch((error: unknown) =>
          this.logger.error({ err: error, workspace: state.instanceId }, 'cannot stop orphan'),
        );
    }
  }

  /**
   * Stops background work and waits for the store. Flows are interrupted without changing any workspace: a
   * restarted manager resumes them.
   */
  async close(): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    if (this.timeoutTimer) clearInterval(this.timeoutTimer);
    this.runtimeEvents?.unsubscribe();
    const flows = [...this.flows.values()];
    for (const flow of flows) flow.controller.abort();
    await Promise.allSettled(flows.map((f) => f.done));
    await this.store.flush();
    this.bus.complete();
  }

  // -------------------------------------------------------------------------------------------------------------
  // Record updates

  private commit(previous: WorkspaceRecord, next: WorkspaceRecord): WorkspaceRecord {
    if (next === previous) return previous;
    if (differsVisibly(previous, next)) {
      const version = this.bus.version + 1;
      this.store.reserveVersion(version);
      next = { ...next, statusVersion: version };
      this.persist(next);
      this.bus.publish(next);
      this.observe(previous, next);
    } else {
      this.bus.touch(next);
      this.persist(next);
    }
    return next;
  }

  /**
   * Writes the record in the background. A failed write is logged (by the store's onError) and retried with the
   * newest state of the record until it succeeds, so the last state of a workspace reaches the disk eventually.
   */
  private persist(record: WorkspaceRecord): void {
    this.store.save(record).catch((error: unknown) => {
      this.logger.error({ err: error, workspace: record.id }, 'cannot persist a workspace record; retrying');
      if (this.closing) return;
      const retry = setTimeout(() => {
        const current = this.bus.getWorkspace(record.id);
        if (current) this.persist(current);
      }, 1_000);
      retry.unref();
    });
  }

  /** Applies `change` to the current record of `id`; undefined if the workspace is gone. */
  private update(id: string, change: (record: WorkspaceRecord) => WorkspaceRecord): WorkspaceRecord | undefined {
    const current = this.bus.getWorkspace(id);
    if (!current) return undefined;
    return this.commit(current, change(current));
  }

  private observe(previous: WorkspaceRecord, next: WorkspaceRecord): void {
    const metrics = this.metrics;
    const log = this.logger.child({ workspace: next.id });
    if (previous.phase !== next.phase) {
      log.info({ from: previous.phase, to: next.phase, statusVersion: next.statusVersion }, 'phase changed');
    }
    if (previous.conditions.failed === '' && next.conditions.failed !== '') {
      log.warn({ failed: next.conditions.failed }, 'workspace failed');
      metrics?.failuresTotal.inc(labelsOf(next));
    }
    if (!metrics || previous.phase === next.phase) return;
    const labels = labelsOf(next);
    const times = next.phaseTimes;
    if (next.phase !== 'pending' && previous.phase === 'pending' && times.pending !== undefined) {
      metrics.pendingSeconds.observe(labels, (this.now() - times.pending) / 1000);
    }
    if (previous.phase === 'creating' && times.creating !== undefined) {
      metrics.creatingSeconds.observe(labels, (this.now() - times.creating) / 1000);
    }
    if (next.phase === 'running') metrics.startupSeconds.observe(labels, (this.now() - next.createdAt) / 1000);
    if (next.phase === 'stopped') {
      metrics.stopsTotal.inc({ reason: next.progress.stopReason ?? 'regular-stop', ...labels });
      const c = next.conditions;
      if (!next.progress.everReady && !c.aborted && !c.stoppedByRequest) metrics.startFailuresTotal.inc(labels);
    }
  }

  private nextStatusVersionFor(record: WorkspaceRecord): WorkspaceRecord {
    const version = this.bus.version + 1;
    this.store.reserveVersion(version);
    return { ...record, statusVersion: version };
  }

  // -------------------------------------------------------------------------------------------------------------
  // Flows

  private runFlow(id: string, kind: Flow['kind'], body: (signal: AbortSignal) => Promise<void>): void {
    const controller = new AbortController();
    const done = (async () => {
      try {
        await body(controller.signal);
      } catch (error) {
        if (error instanceof FlowAborted || controller.signal.aborted) return;
        this.logger.error({ err: error, workspace: id, flow: kind }, 'workspace flow failed unexpectedly');
        if (!this.closing) this.failAndStop(id, `internal error: ${errorMessage(error)}`);
      }
    })();
    const flow: Flow = { kind, controller, done };
    this.flows.set(id, flow);
    void done.finally(() => {
      if (this.flows.get(id) === flow) this.flows.delete(id);
    });
  }

  private launchStart(id: string): void {
    this.runFlow(id, 'start', (signal) => this.driveStart(id, signal));
  }

  private launchStop(id: string): void {
    const previous = this.flows.get(id);
    previous?.controller.abort();
    this.runFlow(id, 'stop', async (signal) => {
      // Let an interrupted start settle first so the two never touch the runtime at the same time.
      await previous?.done;
      checkAborted(signal);
      await this.driveStop(id, signal);
    });
  }

  private classOf(record: WorkspaceRecord): ResolvedClass {
    return this.classes.get(record.spec.className) ?? this.classes.get(this.config.defaultWorkspaceClass)!;
  }

  private contentDirOf(record: WorkspaceRecord): string {
    return record.progress.contentDir ?? join(this.config.workingArea, record.id);
  }

  private async driveStart(id: string, signal: AbortSignal): Promise<void> {
    // PENDING means waiting for capacity: at most maxConcurrentStarts starts run at once.
    await this.startSlots.acquire(signal);
    try {
      await this.driveStartWithSlot(id, signal);
    } finally {
      this.startSlots.release();
    }
  }

  private async driveStartWithSlot(id: string, signal: AbortSignal): Promise<void> {
    let record = this.bus.getWorkspace(id);
    if (!record || !isStarting(record.phase)) return;
    const log = this.logger.child({ workspace: id });

    // PENDING → CREATING: resources of the workspace on this machine.
    if (record.phase === 'pending') record = this.update(id, (r) => withPhase(r, 'creating', this.now()))!;
    if (!record.progress.idePort) {
      let port: number;
      try {
        port = await this.ports.allocate();
      } catch (error) {
        this.failAndStop(id, `cannot create the workspace: ${errorMessage(error)}`);
        return;
      }
      if (signal.aborted) {
        this.ports.release(port);
        throw new FlowAborted();
      }
      record = this.update(id, (r) => withProgress(r, { idePort: port }))!;
    }

    // CREATING → INITIALIZING: the daemon produces the content.
    if (record.phase === 'creating') record = this.update(id, (r) => withPhase(r, 'initializing', this.now()))!;
    if (!record.progress.contentReady) {
      record = this.update(id, (r) => withProgress(r, { initRequested: true }))!;
      const cls = this.classOf(record);
      let result: { contentLocation?: string; metrics?: WorkspaceRecord['initializerMetrics'] };
      try {
        result = await this.content.initWorkspace(
          {
            instanceId: id,
            owner: record.owner,
            metaId: record.metaId,
            initializer: record.spec.initializer,
            storageQuotaBytes: cls.resources.diskBytes,
          },
          signal,
        );
      } catch (error) {
        checkAborted(signal);
        if (isWorkbayError(error, 'already-exists')) {
          // A resumed start: the daemon has (or is producing) the content already.
          try {
            await this.content.waitForInit(id, signal);
            result = {};
          } catch (waitError) {
            checkAborted(signal);
            this.failAndStop(id, `Content initialization failed: ${errorMessage(waitError)}`);
            return;
          }
        } else {
          log.warn({ err: error }, 'content initialization failed');
          this.failAndStop(id, `Content initialization failed: ${errorMessage(error)}`);
          return;
        }
      }
      checkAborted(signal);
      const contentDir = result.contentLocation ?? join(this.config.workingArea, id);
      record = this.update(id, (r) => ({
        ...withProgress(r, { contentReady: true, contentDir }),
        initializerMetrics: result.metrics ?? r.initializerMetrics,
      }))!;
    }

    if (record.spec.sshPublicKeys.length > 0) {
      try {
        await writeAuthorizedKeys(this.contentDirOf(record), record.spec.sshPublicKeys);
      } catch (error) {
        // A refused write (e.g. `.ssh` a link out of the content) fails the start loudly, never silently (invariant 10).
        checkAborted(signal);
        log.warn({ err: error }, 'cannot write the SSH keys');
        this.failAndStop(id, `cannot write the SSH keys: ${errorMessage(error)}`);
        return;
      }
      checkAborted(signal);
    }

    // The workspace process.
    let state: RuntimeWorkspaceState | undefined;
    try {
      const existing = await this.runtime.inspect(id);
      checkAborted(signal);
      state = existing && existing.status !== 'exited' ? existing : await this.runtime.start(this.runtimeSpec(record));
    } catch (error) {
      checkAborted(signal);
      log.warn({ err: error }, 'the runtime could not start the workspace');
      this.failAndStop(id, `cannot start the workspace process: ${errorMessage(error)}`);
      return;
    }
    // Even when aborted now, record that it runs, so that the stop flow stops it.
    this.adopt(id, state);
    checkAborted(signal);
    if (state.status === 'exited') this.onRuntimeExited(id, state);
    else if (state.ready) this.onRuntimeReady(id, state);
  }

  private adopt(id: string, state: RuntimeWorkspaceState): void {
    this.update(id, (r) =>
      withConditions(
        withProgress(r, {
          runtimeHost: state.host,
          nodeName: state.nodeName,
          portMap: (state as { portMap?: Readonly<Record<string, number>> }).portMap ?? r.progress.portMap,
        }),
        { deployed: true },
      ),
    );
  }

  private runtimeSpec(record: WorkspaceRecord): RuntimeWorkspaceSpec {
    const cls = this.classOf(record);
    const contentDir = this.contentDirOf(record);
    const env: Record<string, string> = {};
    for (const e of record.spec.envvars) env[e.name] = e.value;
    // System variables win over user variables of the same name.
    for (const e of record.spec.sysEnvvars) env[e.name] = e.value;
    if (record.spec.git) {
      if (record.spec.git.username) {
        env.GIT_AUTHOR_NAME = record.spec.git.username;
        env.GIT_COMMITTER_NAME = record.spec.git.username;
      }
      if (record.spec.git.email) {
        env.GIT_AUTHOR_EMAIL = record.spec.git.email;
        env.GIT_COMMITTER_EMAIL = record.spec.git.email;
      }
    }
    Object.assign(env, {
      WORKBAY_WORKSPACE_ID: record.metaId,
      WORKBAY_INSTANCE_ID: record.id,
      WORKBAY_WORKSPACE_URL: record.url,
      WORKBAY_OWNER: record.owner,
      WORKBAY_WORKSPACE_CLASS: cls.id,
      WORKBAY_REPO_ROOT: join(contentDir, record.spec.workspaceLocation),
      WORKBAY_HEADLESS: String(record.type !== 'regular'),
    });
    return {
      instanceId: record.id,
      workspaceId: record.metaId,
      owner: record.owner,
      image: record.spec.image,
      url: record.url,
      headless: record.type !== 'regular',
      type: record.type,
      contentDir,
      env,
      ports: [
        record.progress.idePort,
        ...record.spec.ports.map((p) => p.port).filter((p) => p !== record.progress.idePort),
      ],
      className: cls.id,
      resources: {
        cpu: cls.resources.cpu,
        memoryBytes: cls.resources.memoryBytes,
        pids: cls.resources.pids,
        diskBytes: cls.resources.diskBytes,
      },
    };
  }

  private onRuntimeReady(id: string, state: RuntimeWorkspaceState): void {
    const record = this.bus.getWorkspace(id);
    if (!record || !isStarting(record.phase) || record.phase === 'pending') return;
    // Content must be ready before the process counts (it always is: the process starts after init).
    if (!record.progress.contentReady) return;
    this.update(id, (r) =>
      withConditions(
        withPhase(withProgress(r, { runtimeHost: state.host, nodeName: state.nodeName }), 'running', this.now()),
        { deployed: true },
      ),
    );
  }

  private onRuntimeExited(id: string, state: RuntimeWorkspaceState): void {
    const record = this.bus.getWorkspace(id);
    if (!record || record.phase === 'stopping' || record.phase === 'stopped') return;
    const reason =
      state.failure ?? (state.exitCode !== undefined ? `exit code ${state.exitCode}` : 'the process ended');
    if (record.type !== 'regular') {
      if (state.exitCode === 0 && !state.failure) {
        this.beginStop(id, { policy: 'normally', byRequest: false, reason: 'completed' });
      } else {
        // A failed headless task is the task's result, not a workspace failure (as in the original).
        this.update(id, (r) => withConditions(r, { headlessTaskFailed: `headless task failed: ${reason}` }));
        this.beginStop(id, { policy: 'normally', byRequest: false, reason: 'failed' });
      }
      return;
    }
    const message =
      state.exitCode === 0 && !state.failure
        ? 'the workspace process exited with code 0, but a regular workspace is not supposed to end by itself'
        : `the workspace process exited unexpectedly: ${reason}`;
    this.failAndStop(id, message);
  }

  /** Records the failure (first wins) and stops the workspace. */
  private failAndStop(id: string, reason: string): void {
    const record = this.update(id, (r) => withFailure(r, reason));
    if (!record) return;
    this.beginStop(id, {
      policy: 'immediately',
      byRequest: false,
      reason: record.progress.everReady ? 'failed' : 'start-failure',
    });
  }

  private graceOf(policy: StopPolicy | undefined): number {
    const g = this.config.stopGrace;
    return policy === 'abort' ? g.abortMs : policy === 'immediately' ? g.immediatelyMs : g.normallyMs;
  }

  private beginStop(id: string, options: { policy: StopPolicy; byRequest: boolean; reason: StopReason }): void {
    const record = this.bus.getWorkspace(id);
    if (!record || record.phase === 'stopped') return;
    if (record.phase === 'stopping') {
      // A second, more urgent request escalates: ABORT skips a backup that has not started, and a shorter grace
      // period is passed on to the runtime.
      const escalate = this.graceOf(options.policy) < this.graceOf(record.progress.stopPolicy);
      this.update(id, (r) =>
        withProgress(
          withConditions(r, {
            aborted: r.conditions.aborted || (options.policy === 'abort' && !r.progress.disposed),
            stoppedByRequest: r.conditions.stoppedByRequest || options.byRequest,
          }),
          escalate ? { stopPolicy: options.policy } : {},
        ),
      );
      if (escalate && record.conditions.deployed) {
        this.runtime
          .stop(id, { gracePeriodMs: this.graceOf(options.policy) })
          .catch((error: unknown) => this.logger.warn({ err: error, workspace: id }, 'escalated stop failed'));
      }
      return;
    }
    this.update(id, (r) =>
      withProgress(
        withConditions(withPhase(r, 'stopping', this.now()), {
          stoppedByRequest: r.conditions.stoppedByRequest || options.byRequest,
          aborted: r.conditions.aborted || options.policy === 'abort',
        }),
        { stopPolicy: options.policy, stopReason: r.progress.stopReason ?? options.reason },
      ),
    );
    this.launchStop(id);
  }

  private async driveStop(id: string, signal: AbortSignal): Promise<void> {
    let record = this.bus.getWorkspace(id);
    if (!record || record.phase !== 'stopping') return;
    const log = this.logger.child({ workspace: id });

    // 1. The process, within its grace period.
    try {
      await this.runtime.stop(id, { gracePeriodMs: this.graceOf(record.progress.stopPolicy) });
    } catch (error) {
      log.warn({ err: error }, 'the runtime could not stop the workspace cleanly; killing it');
      await this.runtime.stop(id, { gracePeriodMs: 0 }).catch(() => undefined);
    }
    checkAborted(signal);

    // 2. The content: final backup (unless aborted or never initialised), then removal.
    record = this.bus.getWorkspace(id)!;
    if (!record.progress.disposed && (record.progress.initRequested || record.progress.contentReady)) {
      await this.disposeContent(id, signal);
    }
    checkAborted(signal);

    // 3. Done.
    record = this.bus.getWorkspace(id)!;
    if (record.progress.idePort) this.ports.release(record.progress.idePort);
    this.update(id, (r) => withConditions(withPhase(r, 'stopped', this.now()), { deployed: false }));
  }

  private async disposeContent(id: string, signal: AbortSignal): Promise<void> {
    const record = this.bus.getWorkspace(id)!;
    const log = this.logger.child({ workspace: id });
    const labels = labelsOf(record);
    const contentReady = record.progress.contentReady;
    let backup = contentReady && !record.conditions.aborted && record.type !== 'imagebuild';
    let snapshotTaken = false;
    if (backup && record.type === 'prebuild') {
      // A prebuild's result is a snapshot that later workspaces start from, not a backup of its own.
      backup = false;
      if (!record.conditions.headlessTaskFailed) {
        try {
          const url = await this.withRetries(() => this.content.takeSnapshot(id, false), signal);
          snapshotTaken = true;
          this.update(id, (r) => withConditions(r, { snapshot: url }));
          this.metrics?.backupsTotal.inc(labels);
        } catch (error) {
          checkAborted(signal);
          this.metrics?.backupFailuresTotal.inc(labels);
          this.update(id, (r) => withFailure(r, `Snapshot failed: ${errorMessage(error)}`));
        }
      }
    }
    try {
      const result = await this.withRetries(() => this.disposeAfterInit(id, backup, !contentReady, signal), signal);
      if (backup) this.metrics?.backupsTotal.inc(labels);
      this.update(id, (r) => ({
        ...withConditions(withProgress(r, { disposed: true, contentReady: false }), {
          finalBackupComplete: backup || snapshotTaken,
        }),
        repo: result.gitStatus ?? r.repo,
      }));
    } catch (error) {
      checkAborted(signal);
      if (isWorkbayError(error, 'not-found') && !backup) {
        // Nothing to remove: the daemon never had (or already removed) the content.
        this.update(id, (r) => withProgress(r, { disposed: true, contentReady: false }));
        return;
      }
      log.error({ err: error, backup }, 'disposing the workspace content failed');
      if (backup) {
        this.metrics?.backupFailuresTotal.inc(labels);
        // The daemon keeps the content when the backup fails (invariant 2); the failure is reported loudly.
        this.update(id, (r) => withFailure(r, `Backup failed: ${errorMessage(error)}`));
      } else {
        this.update(id, (r) => withFailure(r, `Content disposal failed: ${errorMessage(error)}`));
      }
    }
  }

  /**
   * DisposeWorkspace, but first lets an initialisation that an interrupted start left running on the daemon finish
   * (the InitWorkspace call was cancelled, the daemon completes it anyway and refuses to dispose until then).
   */
  private async disposeAfterInit(
    id: string,
    backup: boolean,
    mayBeInitializing: boolean,
    signal: AbortSignal,
  ): Promise<{ gitStatus?: GitStatusInfo }> {
    for (let delay = 100; ; delay = Math.min(delay * 2, 2_000)) {
      if (mayBeInitializing) {
        await this.content.waitForInit(id, signal).catch(() => checkAborted(signal));
      }
      try {
        return await this.content.disposeWorkspace(id, backup, signal);
      } catch (error) {
        if (
          !mayBeInitializing ||
          !isWorkbayError(error, 'failed-precondition') ||
          !/initializ/.test(errorMessage(error))
        ) {
          throw error;
        }
        // The stopping timeout bounds this loop.
        await sleep(delay, signal);
      }
    }
  }

  /** Retries while the daemon is unavailable (a restart), with exponential backoff. */
  private async withRetries<T>(call: () => Promise<T>, signal: AbortSignal): Promise<T> {
    const attempts = this.config.daemon.disposeAttempts;
    let delay = this.config.daemon.retryBackoffMs;
    for (let attempt = 1; ; attempt += 1) {
      try {
        return await call();
      } catch (error) {
        if (signal.aborted || attempt >= attempts || !isRetryableError(error)) throw error;
        this.logger.warn({ err: error, attempt }, 'daemon call failed; retrying');
        await sleep(delay, signal);
        delay = Math.min(delay * 2, 30_000);
      }
    }
  }

  // -------------------------------------------------------------------------------------------------------------
  // Timeouts

  /** Applies the timeout rules once (the loop calls this every checkInterval; paused in maintenance). */
  checkTimeouts(): void {
    if (this.closing || this.maintenance.isEnabled()) return;
    const now = this.now();
    const stale: string[] = [];
    for (const record of this.bus.getWorkspaces()) {
      if (record.phase === 'stopped') {
        const stoppedAt = record.phaseTimes.stopped ?? record.createdAt;
        if (now - stoppedAt > this.config.stoppedRetentionMs && !this.flows.has(record.id)) stale.push(record.id);
        continue;
      }
      const verdict = evaluateTimeout(record, now, this.config.timeouts);
      if (!verdict) continue;
      this.logger.info({ workspace: record.id, rule: verdict.rule }, verdict.message);
      if (record.phase === 'stopping') {
        this.forceStopped(record.id, verdict.message);
      } else {
        this.update(record.id, (r) => withConditions(r, { timeout: verdict.message }));
        this.beginStop(record.id, {
          policy: 'normally',
          byRequest: false,
          reason: verdict.rule === 'closed' ? 'tab-closed' : 'timeout',
        });
      }
    }
    for (const id of stale) this.forget(id);
  }

  /** Stopping took too long: give up on it and end in STOPPED with the reason. */
  private forceStopped(id: string, message: string): void {
    this.flows.get(id)?.controller.abort();
    const record = this.update(id, (r) =>
      withFailure(
        withProgress(withConditions(r, { timeout: r.conditions.timeout || message }), { stopForced: true }),
        `the workspace did not finish stopping in time: ${message}`,
      ),
    );
    if (!record) return;
    this.runtime
      .stop(id, { gracePeriodMs: 0 })
      .catch((error: unknown) => this.logger.error({ err: error, workspace: id }, 'cannot kill the workspace'));
    if (record.progress.idePort) this.ports.release(record.progress.idePort);
    this.update(id, (r) => withConditions(withPhase(r, 'stopped', this.now()), { deployed: false }));
  }

  private forget(id: string): void {
    this.bus.forget(id);
    this.store.remove(id).catch((error: unknown) => {
      // The record stays on disk; a restart loads it as stopped and forgets it again after the retention.
      this.logger.error({ err: error, workspace: id }, 'cannot remove the record of a forgotten workspace');
    });
  }

  // -------------------------------------------------------------------------------------------------------------
  // Operations (one per RPC)

  private requireWorkspace(id: string, field = 'id'): WorkspaceRecord {
    validateInstanceId(id, field);
    const record = this.bus.getWorkspace(id);
    if (!record) throw new NotFoundError(`workspace ${id} does not exist`);
    return record;
  }

  private requireNotStopped(record: WorkspaceRecord): void {
    if (record.phase === 'stopped') throw new FailedPreconditionError(`workspace ${record.id} is stopped`);
  }

  private assertNoMaintenance(what: string): void {
    if (this.maintenance.isEnabled()) {
      throw new FailedPreconditionError(`the manager is under maintenance: ${what} is not possible right now`);
    }
  }

  private urlVariables(record: Pick<WorkspaceRecord, 'id' | 'servicePrefix' | 'metaId' | 'owner'>): UrlVariables {
    return {
      id: record.id,
      prefix: record.servicePrefix,
      metaId: record.metaId,
      owner: record.owner,
      proxy: this.proxyAddress(),
      domain: this.config.proxy.domain ?? '',
    };
  }

  private portSpec(
    record: Pick<WorkspaceRecord, 'id' | 'servicePrefix' | 'metaId' | 'owner'>,
    port: number,
    visibility: PortVisibility,
    protocol: PortProtocol,
  ): PortSpec {
    const url = renderTemplate(this.config.portUrlTemplate, { ...this.urlVariables(record), port });
    return { port, visibility, protocol, url };
  }

  /** StartWorkspace: validates, persists the record (PENDING) and starts the lifecycle. */
  async startWorkspace(input: StartWorkspaceInput): Promise<StartWorkspaceResult> {
    this.assertNoMaintenance('starting a workspace');
    const validated = validateStartInput(input);
    const spec = input.spec!;
    const metadata = input.metadata!;
    let className = spec.className || this.config.defaultWorkspaceClass;
    if (!this.classes.has(className)) {
      if (this.config.unknownClass === 'reject') {
        throw new InvalidArgumentError(
          'spec.class',
          `unknown workspace class '${className}'; known: ${[...this.classes.keys()].join(', ')}`,
        );
      }
      className = this.config.defaultWorkspaceClass;
    }
    const existing = this.bus.getWorkspace(input.id);
    if (existing && existing.phase !== 'stopped') {
      throw new AlreadyExistsError(`workspace ${input.id} already exists (phase ${existing.phase})`);
    }
    for (const other of this.bus.getWorkspaces()) {
      if (other.metaId === metadata.metaId && other.phase !== 'stopped' && other.id !== input.id) {
        throw new AlreadyExistsError(
          `workspace ${metadata.metaId} already has an instance that is not stopped: ${other.id} (phase ${other.phase})`,
        );
      }
    }
    if (this.accepting.has(input.id) || this.accepting.has(`meta:${metadata.metaId}`)) {
      throw new AlreadyExistsError(`workspace ${input.id} is being started`);
    }
    if (existing && this.flows.has(existing.id)) {
      throw new AlreadyExistsError(`workspace ${input.id} is still being cleaned up; retry shortly`);
    }
    const now = this.now();
    const identity = {
      id: input.id,
      servicePrefix: input.servicePrefix || input.id,
      metaId: metadata.metaId,
      owner: metadata.owner,
    };
    const url = renderTemplate(this.config.urlTemplate, this.urlVariables(identity));
    const record: WorkspaceRecord = {
      ...identity,
      annotations: { ...metadata.annotations },
      ...(metadata.team !== undefined ? { team: metadata.team } : {}),
      ...(metadata.project !== undefined ? { project: metadata.project } : {}),
      type: input.type,
      url,
      ownerToken: createOwnerToken(),
      spec: {
        image: spec.image,
        ideImage: spec.ideImage,
        ideImageLayers: [...spec.ideImageLayers],
        initializer: spec.initializer,
        initializerKind: spec.initializerKind,
        ports: spec.ports.map((p) => this.portSpec(identity, p.port, p.visibility, p.protocol)),
        envvars: validated.envvars,
        sysEnvvars: validated.sysEnvvars,
        workspaceLocation: spec.workspaceLocation,
        ...(spec.git ? { git: spec.git } : {}),
        ...(validated.timeoutMs !== undefined ? { timeoutMs: validated.timeoutMs } : {}),
        ...(validated.closedTimeoutMs !== undefined ? { closedTimeoutMs: validated.closedTimeoutMs } : {}),
        ...(validated.maximumLifetimeMs !== undefined ? { maximumLifetimeMs: validated.maximumLifetimeMs } : {}),
        admission: spec.admission,
        className,
        sshPublicKeys: spec.sshPublicKeys.map((k) => k.trim()),
        featureFlags: [...new Set(spec.featureFlags)],
      },
      phase: 'pending',
      conditions: emptyConditions,
      message: '',
      statusVersion: 0,
      createdAt: now,
      phaseTimes: { pending: now },
      progress: {
        contentReady: false,
        initRequested: false,
        everReady: false,
        closed: false,
        disposed: false,
        idePort: 0,
      },
    };
    // Durable first: the caller hears OK only once the record file and its directory entry are synced; a failed
    // write fails the call and leaves nothing behind (no file, nothing published, nothing started).
    this.accepting.add(record.id).add(`meta:${record.metaId}`);
    try {
      try {
        await this.store.save(this.nextStatusVersionFor(record));
      } catch (error) {
        await this.store.remove(record.id).catch((removeError: unknown) => {
          // Only a rename that succeeded before the directory sync failed can leave a file; say so loudly.
          this.logger.error({ err: removeError, workspace: record.id }, 'cannot remove a record whose save failed');
        });
        throw new UnavailableError(`cannot persist workspace ${record.id}: ${errnoOf(error)}`, { cause: error });
      }
    } finally {
      this.accepting.delete(record.id);
      this.accepting.delete(`meta:${record.metaId}`);
    }
    const published = this.nextStatusVersionFor(record);
    this.bus.publish(published);
    this.persist(published);
    this.metrics?.startsTotal.inc(labelsOf(published));
    this.logger.info(
      { workspace: published.id, metaId: published.metaId, owner: published.owner, class: className, type: input.type },
      'workspace accepted',
    );
    this.launchStart(published.id);
    return { url, ownerToken: published.ownerToken };
  }

  /** StopWorkspace. Unknown ids are ignored, as in the original. */
  stopWorkspace(id: string, policy: StopPolicy): void {
    validateInstanceId(id, 'id');
    this.assertNoMaintenance('stopping a workspace');
    const record = this.bus.getWorkspace(id);
    if (!record || record.phase === 'stopped') return;
    this.beginStop(id, { policy, byRequest: true, reason: policy === 'abort' ? 'aborted' : 'regular-stop' });
  }

  describeWorkspace(id: string): DescribeResult {
    const record = this.requireWorkspace(id);
    return {
      status: record,
      lastActivity: record.lastActivity !== undefined ? new Date(record.lastActivity).toISOString() : '',
    };
  }

  /** MarkActive: records user activity (and whether the IDE is closed). */
  markActive(id: string, options: { closed: boolean; ignoreIfActive: boolean }): void {
    const record = this.requireWorkspace(id);
    this.requireNotStopped(record);
    if (options.ignoreIfActive && record.conditions.firstUserActivity !== undefined) return;
    const now = this.now();
    this.update(id, (r) => ({
      ...withProgress(
        r.conditions.firstUserActivity === undefined ? withConditions(r, { firstUserActivity: now }) : r,
        { closed: options.closed },
      ),
      lastActivity: now,
    }));
  }

  /**
   * SetTimeout. `workspace` sets the inactivity timeout and, like the original, resets the closed timeout to
   * 0 (which disables the closed rule); `closed` sets the closed timeout.
   */
  setTimeout(id: string, kind: TimeoutKind, duration: string): void {
    validateInstanceId(id, 'id');
    if (duration === '') throw new InvalidArgumentError('duration', 'is required');
    const ms = parseOptionalDuration(duration, 'duration')!;
    const record = this.requireWorkspace(id);
    this.requireNotStopped(record);
    const capped = Math.min(ms, this.config.timeouts.maxWorkspaceTimeoutMs);
    this.update(id, (r) => ({
      ...r,
      spec:
        kind === 'workspace'
          ? { ...r.spec, timeoutMs: capped, closedTimeoutMs: 0 }
          : { ...r.spec, closedTimeoutMs: capped },
    }));
  }

  /** ControlPort: exposes (or re-exposes with new settings) or removes a port. */
  controlPort(
    id: string,
    expose: boolean,
    port: { readonly port: number; readonly visibility: PortVisibility; readonly protocol: PortProtocol } | undefined,
  ): void {
    validateInstanceId(id, 'id');
    if (!port) throw new InvalidArgumentError('spec', 'is required');
    validatePortNumber(port.port, 'spec.port');
    const record = this.requireWorkspace(id);
    this.requireNotStopped(record);
    validateExposure(record, port.port, expose, {
      reserved: this.reservedEndpoints,
      workspaces: this.bus.getWorkspaces(),
      idePorts: this.config.idePorts,
    });
    this.update(id, (r) => {
      const ports = r.spec.ports.filter((p) => p.port !== port.port);
      if (expose) ports.push(this.portSpec(r, port.port, port.visibility, port.protocol));
      ports.sort((a, b) => a.port - b.port);
      return { ...r, spec: { ...r.spec, ports } };
    });
  }

  controlAdmission(id: string, level: AdmissionLevel): void {
    const record = this.requireWorkspace(id);
    this.requireNotStopped(record);
    this.update(id, (r) => (r.spec.admission === level ? r : { ...r, spec: { ...r.spec, admission: level } }));
  }

  /** TakeSnapshot: the workspace must be running; returns `<object>@<bucket>`. */
  async takeSnapshot(id: string, returnImmediately: boolean): Promise<string> {
    const record = this.requireWorkspace(id);
    this.assertNoMaintenance('taking a snapshot');
    if (record.phase !== 'running') {
      throw new FailedPreconditionError(`workspace ${id} must be running to take a snapshot (it is ${record.phase})`);
    }
    const url = await this.content.takeSnapshot(id, returnImmediately);
    this.update(id, (r) => withConditions(r, { snapshot: url }));
    this.logger.info({ workspace: id, snapshot: url }, 'snapshot taken');
    return url;
  }

  /** BackupWorkspace: a backup of a running workspace's content. */
  async backupWorkspace(id: string): Promise<string> {
    const record = this.requireWorkspace(id);
    if (record.phase !== 'running' || !record.progress.contentReady) {
      throw new FailedPreconditionError(`workspace ${id} must be running to be backed up (it is ${record.phase})`);
    }
    const labels = labelsOf(record);
    try {
      const url = await this.content.backupWorkspace(id);
      this.metrics?.backupsTotal.inc(labels);
      this.logger.info({ workspace: id, backup: url }, 'backup taken');
      return url;
    } catch (error) {
      this.metrics?.backupFailuresTotal.inc(labels);
      throw error;
    }
  }

  /**
   * DeleteVolumeSnapshot: deletes the snapshot object named by `volumeHandle` (`<object>@<bucket>`), in the
   * configured `storage` when there is one, otherwise through the daemon (its DeleteSnapshot extension), which
   * holds the storage in the embedded default. NOT_FOUND when absent, unless `softDelete` (then `false`).
   */
  async deleteVolumeSnapshot(volumeHandle: string, softDelete: boolean): Promise<boolean> {
    const { bucket, name } = parseSnapshotHandle(volumeHandle, 'volume_handle');
    const deleted = this.snapshots
      ? await this.snapshots.deleteSnapshot(bucket, name)
      : await this.content.deleteSnapshot(volumeHandle).catch((error: unknown): never => {
          if (isWorkbayError(error, 'invalid-argument')) {
            throw new InvalidArgumentError('volume_handle', (error as InvalidArgumentError).reason, { cause: error });
          }
          if (isWorkbayError(error, 'unimplemented')) {
            throw new FailedPreconditionError(
              'the daemon cannot delete snapshots (no DeleteSnapshot): set `storage` (and its plugin) in the manager config',
              { cause: error },
            );
          }
          throw error;
        });
    if (!deleted && !softDelete) throw new NotFoundError(`snapshot ${volumeHandle} does not exist`);
    if (deleted) this.logger.info({ snapshot: volumeHandle }, 'snapshot deleted');
    return deleted;
  }

  /** UpdateSSHKey: replaces the authorised keys and writes them into the workspace. */
  async updateSshKeys(id: string, keys: readonly string[]): Promise<void> {
    validateInstanceId(id, 'id');
    if (keys.length === 0) throw new InvalidArgumentError('keys', 'at least one key is required');
    keys.forEach((key, i) => validateSshKey(key, `keys[${i}]`));
    const record = this.requireWorkspace(id);
    if (!record.progress.contentReady || (record.phase !== 'running' && record.phase !== 'initializing')) {
      throw new FailedPreconditionError(`workspace ${id} has no content to write keys to (it is ${record.phase})`);
    }
    const trimmed = keys.map((k) => k.trim());
    await writeAuthorizedKeys(this.contentDirOf(record), trimmed);
    this.update(id, (r) => ({ ...r, spec: { ...r.spec, sshPublicKeys: trimmed } }));
  }

  describeCluster(): { classes: WorkspaceClassInfo[]; preferred: string } {
    return {
      classes: this.config.workspaceClasses.map((c) => ({
        id: c.id,
        displayName: c.displayName,
        description: c.description,
        creditsPerMinute: c.creditsPerMinute,
      })),
      preferred: this.config.preferredWorkspaceClass,
    };
  }

  /** Where the proxy sends traffic for `port` of a workspace (the IDE when `port` is undefined). */
  routeOf(record: WorkspaceRecord, port?: number): { host: string; port: number } {
    const target = port ?? record.progress.idePort;
    const mapped = record.progress.portMap?.[String(target)];
    return { host: record.progress.runtimeHost ?? '127.0.0.1', port: mapped ?? target };
  }
}

function labelsOf(record: WorkspaceRecord): { type: string; class: string } {
  return { type: record.type, class: record.spec.className };
}
