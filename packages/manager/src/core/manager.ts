/**
 * The manager's core, a thin coordinator: it owns no lifecycle logic of its own. The pieces:
 * - `lifecycle/transition.ts`: the lifecycle as a pure function `(record, event) → (record', effects)`;
 * - `lifecycle/effects.ts`: performs effects (runtime, daemon, ports, start slots) and reports outcomes as events;
 * - `repository.ts`: records, persistence and status_version (the file store today);
 * - `timeout-enforcer.ts` and `recovery.ts`: timeouts, and what a restarted manager finds.
 * Every event goes through {@link WorkspaceManagerCore.dispatch}: transition, commit, run the effects.
 *
 * Proto types never appear here; see `../grpc/` for the wire edge.
 *
 * @module
 */
import { FailedPreconditionError } from '@workbay/api';
import type { WorkspaceRuntime } from '@workbay/api';
import type { Observable, Subscription } from 'rxjs';
import type { ManagerConfig, ResolvedClass } from '../config.js';
import { matchesFilter } from '../domain/status.js';
import type {
  AdmissionLevel,
  DescribeResult,
  MetadataFilter,
  PortProtocol,
  PortVisibility,
  StartWorkspaceInput,
  StartWorkspaceResult,
  StopPolicy,
  TimeoutKind,
  WorkspaceClassInfo,
  WorkspaceRecord,
} from '../domain/types.js';
import { validateInstanceId, validateStartInput } from '../domain/validation.js';
import type { Logger } from '../logger.js';
import type { ManagerMetrics } from '../metrics.js';
import { assembleCore } from './assembly.js';
import type { ManagerCoreOptions } from './assembly.js';
import type { ChangeRouter } from './change-router.js';
import { stopReasonOf } from './change-router.js';
import { assertNoMaintenance } from './content-operations.js';
import type { ContentOperations } from './content-operations.js';
import type { EffectRunner } from './lifecycle/effects.js';
import { labelsOf } from './lifecycle/effects.js';
import type { LifecycleEvent, TransitionContext } from './lifecycle/events.js';
import { transition } from './lifecycle/transition.js';
import type { MaintenanceMode } from './maintenance.js';
import type { IdePorts } from './port-allocator.js';
import { newRecord } from './records.js';
import type { WorkspaceUrls } from './records.js';
import { portMapOf } from './recovery.js';
import type { Recovery } from './recovery.js';
import type { RecordOperations } from './record-operations.js';
import type { DesiredChange, ReplicatedRepository, WorkspaceRepository } from './repository.js';
import type { StartAdmission } from './start-admission.js';
import type { StatusUpdate } from './status-bus.js';
import type { TimeoutEnforcer } from './timeout-enforcer.js';

export type { ManagerCoreOptions } from './assembly.js';

export class WorkspaceManagerCore {
  private readonly config: ManagerConfig;
  private readonly runtime: WorkspaceRuntime;
  private readonly maintenance: MaintenanceMode;
  private readonly metrics?: ManagerMetrics;
  private readonly logger: Logger;
  private readonly now: () => number;
  private readonly ports: IdePorts;
  private readonly classOf: (record: WorkspaceRecord) => ResolvedClass;
  private readonly urls: WorkspaceUrls;
  private readonly repo: WorkspaceRepository;
  private readonly runner: EffectRunner;
  private readonly timeouts: TimeoutEnforcer;
  private readonly recovery: Recovery;
  private readonly contentOps: ContentOperations;
  private readonly recordOps: RecordOperations;
  private readonly admission: StartAdmission;
  private readonly changes: ChangeRouter;
  private readonly replicated?: ReplicatedRepository;
  private readonly subscriptions: Subscription[] = [];
  private leading = false;
  private started = false;
  private closing = false;

  /** @internal Built by `startManager`; embedders get the running core as `RunningManager.core`. */
  constructor(private readonly options: ManagerCoreOptions) {
    this.config = options.config;
    this.runtime = options.runtime;
    this.maintenance = options.maintenance;
    this.metrics = options.metrics;
    this.logger = options.logger;
    this.now = options.now ?? Date.now;
    const parts = assembleCore(options, {
      dispatch: (id, event) => this.dispatch(id, event),
      isClosing: () => this.closing,
      isLeading: () => this.leading,
      now: this.now,
    });
    this.ports = parts.ports;
    this.repo = parts.repo;
    this.replicated = parts.replicated;
    this.runner = parts.runner;
    this.timeouts = parts.timeouts;
    this.recovery = parts.recovery;
    this.admission = parts.admission;
    this.recordOps = parts.recordOps;
    this.contentOps = parts.contentOps;
    this.changes = parts.changes;
    this.urls = parts.urls;
    this.classOf = parts.classOf;
  }

  // Observation -------------------------------------------------------------------------------------------------

  /** Every published status change, in status_version order. */
  get status$(): Observable<WorkspaceRecord> {
    return this.repo.status$;
  }

  /** The current state of a workspace (synchronous snapshot). */
  getWorkspace(id: string): WorkspaceRecord | undefined {
    return this.repo.get(id);
  }

  /** Workspaces matching the filter, oldest first. */
  listWorkspaces(filter?: MetadataFilter): WorkspaceRecord[] {
    const out: WorkspaceRecord[] = [];
    for (const record of this.repo.list()) if (matchesFilter(record, filter)) out.push(record);
    return out.sort((a, b) => a.createdAt - b.createdAt || (a.id < b.id ? -1 : 1));
  }

  /** All records (for metrics); do not hold on to the iterator across awaits. */
  allWorkspaces(): IterableIterator<WorkspaceRecord> {
    return this.repo.list();
  }

  get workspaceCount(): number {
    return this.repo.size;
  }

  /** The newest status_version published. */
  get statusVersion(): number {
    return this.repo.version;
  }

  /**
   * Updates after `version` from the bounded history (or `resync-required` when it no longer holds them), then
   * live ones; subscribe whenever convenient, nothing falls in between. `version` 0: live updates only.
   */
  updatesSince(version: number): Observable<StatusUpdate> {
    return this.repo.updatesSince(version);
  }

  /** The configured timeouts (defaults and caps). */
  get timeoutSettings(): ManagerConfig['timeouts'] {
    return this.config.timeouts;
  }

  isMaintenanceEnabled(): boolean {
    return this.maintenance.isEnabled();
  }

  // Start-up and shutdown ---------------------------------------------------------------------------------------

  /**
   * Loads the records; a leader (or a manager without leadership) then re-adopts what still runs, resumes
   * interrupted flows and starts the timeout loop. A follower waits until it leads.
   */
  async start(): Promise<void> {
    if (this.started) return;
    this.started = true;
    const loaded = await this.repo.load();
    if (loaded.corrupt.length > 0) {
      this.logger.error({ files: loaded.corrupt }, 'unreadable workspace records were moved aside (*.corrupt)');
    }
    const leadership = this.options.leadership;
    if (!leadership) {
      await this.lead();
    } else {
      this.subscriptions.push(
        leadership.isLeader$.subscribe((leading) => {
          if (leading && !this.leading) {
            this.lead().catch((error: unknown) => {
              // Leading half-way is worse than not at all: give the lease up by leaving (the caller exits).
              this.logger.error({ err: error }, 'cannot take over as the leading manager');
              this.options.onLeadershipLost?.();
            });
          } else if (!leading && this.leading) {
            this.logger.warn('this manager lost its leadership; stopping its work');
            this.leading = false;
            this.options.onLeadershipLost?.();
          }
        }),
      );
    }
    this.logger.info(
      { workspaces: loaded.records.length, statusVersion: this.repo.version, leading: this.leading },
      'workspace manager core started',
    );
  }

  /** Whether this manager runs the lifecycle (always, without a leadership option). */
  get isLeading(): boolean {
    return this.leading;
  }

  /** Takes over the lifecycle: runtime events, recovery, the timeout loop and (replicated) desired changes. */
  private async lead(): Promise<void> {
    const pending = this.replicated?.promote() ?? [];
    this.leading = true;
    const records = [...this.repo.list()];
    for (const record of records) {
      if (record.phase !== 'stopped' && record.progress.idePort) this.ports.reserve(record.progress.idePort);
    }
    this.subscriptions.push(
      this.runtime.events$.subscribe((event) => {
        const state = { ...event.state, portMap: portMapOf(event.state) };
        this.dispatch(
          event.instanceId,
          event.type === 'ready' ? { type: 'runtime-ready', state } : { type: 'runtime-exited', state },
        );
      }),
    );
    // Desired changes that arrive while recovery runs (a follower's start taken over meanwhile) wait for it: the
    // stream does not replay, and acting before recovery could start a workspace recovery then resumes again
    // (a takeover lost this way left a workspace PENDING forever in the failover spec).
    const early: DesiredChange[] = [];
    let recovered = false;
    if (this.replicated) {
      this.subscriptions.push(
        this.replicated.desired$.subscribe((change) => (recovered ? this.changes.act(change) : early.push(change))),
      );
    }
    await this.recovery.recover(records);
    recovered = true;
    for (const change of [...pending, ...early]) this.changes.act(change);
    this.timeouts.start();
    if (this.options.leadership) this.logger.info({ workspaces: records.length }, 'leading the workspace lifecycle');
  }

  /**
   * Stops background work and waits for the store. Effects in flight are interrupted without changing any
   * workspace: a restarted manager resumes them.
   */
  async close(): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    this.timeouts.stop();
    this.recovery.close();
    for (const subscription of this.subscriptions.splice(0)) subscription.unsubscribe();
    await this.runner.close();
    await this.repo.close();
  }

  // The lifecycle -----------------------------------------------------------------------------------------------

  /** One step of a workspace's lifecycle: the transition, its record committed, then its effects started. */
  private dispatch(id: string, event: LifecycleEvent): void {
    // A follower never acts: the leader does, from the same records.
    if (this.closing || !this.leading) return;
    const current = this.repo.get(id);
    if (!current) return;
    const { record, effects } = transition(current, event, this.transitionContext());
    try {
      this.repo.commit(current, record);
    } catch (error) {
      // Only the status_version lease can fail here (a full or read-only state disk): the change is not made,
      // and neither are its effects, rather than publishing a version a restart could hand out again.
      this.logger.error({ err: error, workspace: id, event: event.type }, 'cannot record a workspace change');
      return;
    }
    this.logger.debug(
      { workspace: id, event: event.type, phase: record.phase, effects: effects.map((e) => e.type) },
      'workspace transition',
    );
    for (const effect of effects) this.runner.run(id, effect);
  }

  private transitionContext(): TransitionContext {
    const g = this.config.stopGrace;
    return { now: this.now(), graceMs: { normally: g.normallyMs, immediately: g.immediatelyMs, abort: g.abortMs } };
  }

  // Operations (one per RPC) ------------------------------------------------------------------------------------

  /** StartWorkspace: validates, persists the record (PENDING) durably, then starts the lifecycle. */
  async startWorkspace(input: StartWorkspaceInput): Promise<StartWorkspaceResult> {
    assertNoMaintenance(this.maintenance, 'starting a workspace');
    if (!this.leading && !this.replicated) throw new FailedPreconditionError('this manager is not leading');
    const validated = validateStartInput(input);
    const className = this.admission.resolveClass(input.spec!.className);
    this.admission.assertStartable(input.id, input.metadata!.metaId, input.metadata!.owner);
    const record = newRecord(input, validated, className, this.urls, this.now());
    const leadingWhenRecorded = this.leading;
    // The lifecycle starts inside the acceptance: a stop that waits for it (see stopWorkspace) comes after the
    // resume, never before it.
    const published = await this.admission.whileAccepting(record, async () => {
      const created = await this.repo.create(record);
      this.metrics?.startsTotal.inc(labelsOf(created));
      const { id, metaId, owner, type } = created;
      this.logger.info({ workspace: id, metaId, owner, class: className, type }, 'workspace accepted');
      // Recorded as a follower: the leader adopts it, even when that is this replica, promoted meanwhile (its
      // takeover resumed the workspace already; resuming it again here would start it twice: found by the failover
      // spec, a second pod creation answered 409 and failed the workspace).
      if (leadingWhenRecorded) this.dispatch(id, { type: 'resume' });
      return created;
    });
    return { url: published.url, ownerToken: published.ownerToken };
  }

  /**
   * StopWorkspace. Unknown ids are ignored, as in the original, except an id whose StartWorkspace is still being
   * accepted (its record being made durable): the stop waits for that, then stops the new workspace. Dropping it
   * answered OK and left the workspace to run until its timeouts.
   */
  async stopWorkspace(id: string, policy: StopPolicy): Promise<void> {
    validateInstanceId(id, 'id');
    assertNoMaintenance(this.maintenance, 'stopping a workspace');
    const accepting = this.admission.acceptanceOf(id);
    if (accepting) await accepting;
    if (!this.leading && this.replicated) {
      if (this.repo.get(id)) await this.replicated.requestStop(id, policy);
      return;
    }
    this.dispatch(id, { type: 'stop-requested', policy, byRequest: true, reason: stopReasonOf(policy) });
  }

  describeWorkspace(id: string): DescribeResult {
    return this.recordOps.describeWorkspace(id);
  }

  /** MarkActive: records user activity (and whether the IDE is closed). */
  async markActive(id: string, options: { closed: boolean; ignoreIfActive: boolean }): Promise<void> {
    await this.changes.applyOrForward(id, { kind: 'markActive', ...options });
  }

  /** SetTimeout (see RecordOperations.setTimeout). */
  async setTimeout(id: string, kind: TimeoutKind, duration: string): Promise<void> {
    await this.changes.applyOrForward(id, { kind: 'setTimeout', timeout: kind, duration });
  }

  /** ControlPort: exposes (or re-exposes with new settings) or removes a port. */
  async controlPort(
    id: string,
    expose: boolean,
    port: { readonly port: number; readonly visibility: PortVisibility; readonly protocol: PortProtocol } | undefined,
  ): Promise<void> {
    await this.changes.applyOrForward(id, { kind: 'controlPort', expose, port });
  }

  async controlAdmission(id: string, level: AdmissionLevel): Promise<void> {
    await this.changes.applyOrForward(id, { kind: 'controlAdmission', level });
  }

  async takeSnapshot(id: string, returnImmediately: boolean): Promise<string> {
    return (await this.changes.applyOrForward(id, { kind: 'takeSnapshot', returnImmediately })) ?? '';
  }

  async backupWorkspace(id: string): Promise<string> {
    return (await this.changes.applyOrForward(id, { kind: 'backupWorkspace' })) ?? '';
  }

  /** Any replica: snapshots live in the storage, not in a workspace's record. */
  deleteVolumeSnapshot(volumeHandle: string, softDelete: boolean): Promise<boolean> {
    return this.contentOps.deleteVolumeSnapshot(volumeHandle, softDelete);
  }

  async updateSshKeys(id: string, keys: readonly string[]): Promise<void> {
    await this.changes.applyOrForward(id, { kind: 'updateSshKeys', keys });
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

  /** Applies the timeout rules once (tests; the enforcer's loop calls the same). */
  checkTimeouts(): void {
    this.timeouts.check();
  }
}
