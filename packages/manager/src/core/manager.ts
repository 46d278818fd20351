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
import { FailedPreconditionError, Semaphore } from '@workbay/api';
import type { WorkspaceRuntime } from '@workbay/api';
import type { Observable, Subscription } from 'rxjs';
import type { ManagerConfig, ResolvedClass } from '../config.js';
import type { ContentService } from '../content/content-service.js';
import type { SnapshotStore } from '../content/snapshot-store.js';
import { matchesFilter } from '../domain/status.js';
import type {
  AdmissionLevel,
  DescribeResult,
  StopReason,
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
import { ReservedEndpoints } from '../proxy/exposure.js';
import type { WorkspaceStore } from '../store/file-store.js';
import { ContentOperations, assertNoMaintenance } from './content-operations.js';
import { EffectRunner, labelsOf } from './lifecycle/effects.js';
import type { LifecycleEvent, TransitionContext } from './lifecycle/events.js';
import { transition } from './lifecycle/transition.js';
import type { MaintenanceMode } from './maintenance.js';
import { observeChange } from './observer.js';
import { FixedPort, PortAllocator } from './port-allocator.js';
import type { IdePorts } from './port-allocator.js';
import { WorkspaceUrls, contentDirOf, newRecord, runtimeSpecOf } from './records.js';
import { Recovery, portMapOf } from './recovery.js';
import { FileWorkspaceRepository } from './repository.js';
import type { DesiredChange, RecordRequest, ReplicatedRepository, WorkspaceRepository } from './repository.js';
import type { StatusUpdate } from './status-bus.js';
import { RecordOperations } from './record-operations.js';
import { StartAdmission } from './start-admission.js';
import { TimeoutEnforcer } from './timeout-enforcer.js';

/**
 * What the core is built from; `startManager` (app.ts) assembles it.
 *
 * @internal Exported for tests that build a core without the servers around it.
 */
export interface ManagerCoreOptions {
  readonly config: ManagerConfig;
  /** Where records live unless `repository` is given. */
  readonly store?: WorkspaceStore;
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
  /** Where records live; by default the file store above (`store`). The Kubernetes runtime brings its own. */
  readonly repository?: WorkspaceRepository;
  /**
   * With several replicas: whether this one leads (a Lease). Only the leader runs the lifecycle, recovery and
   * timeouts; followers serve reads and record starts and stops in a {@link ReplicatedRepository}. Without it this
   * manager always leads.
   */
  readonly leadership?: { readonly isLeader$: Observable<boolean> };
  /** Called when this replica stops leading (the caller exits: a restarted process rejoins as a follower). */
  readonly onLeadershipLost?: () => void;
  /** How `runtime.list()` is retried at start-up, and how often INTERRUPTED workspaces are checked again. */
  readonly recovery?: { readonly attempts: number; readonly backoffMs: number; readonly recheckMs: number };
}

export class WorkspaceManagerCore {
  private readonly config: ManagerConfig;
  private readonly runtime: WorkspaceRuntime;
  private readonly maintenance: MaintenanceMode;
  private readonly metrics?: ManagerMetrics;
  private readonly logger: Logger;
  private readonly now: () => number;
  private readonly ports: IdePorts;
  private readonly classes: ReadonlyMap<string, ResolvedClass>;
  private readonly urls: WorkspaceUrls;
  private readonly repo: WorkspaceRepository;
  private readonly runner: EffectRunner;
  private readonly timeouts: TimeoutEnforcer;
  private readonly recovery: Recovery;
  private readonly contentOps: ContentOperations;
  private readonly recordOps: RecordOperations;
  private readonly admission: StartAdmission;
  private readonly replicated?: ReplicatedRepository;
  private readonly subscriptions: Subscription[] = [];
  private leading = false;
  private started = false;
  private closing = false;

  /** @internal Built by `startManager`; embedders get the running core as `RunningManager.core`. */
  constructor(private readonly options: ManagerCoreOptions) {
    const config = (this.config = options.config);
    this.runtime = options.runtime;
    this.maintenance = options.maintenance;
    this.metrics = options.metrics;
    this.logger = options.logger;
    this.now = options.now ?? Date.now;
    this.ports = options.runtime.addressPerInstance
      ? new FixedPort(config.idePorts.from)
      : new PortAllocator(config.idePorts.from, config.idePorts.to);
    this.classes = new Map(config.workspaceClasses.map((c) => [c.id, c]));
    this.urls = new WorkspaceUrls(config, options.proxyAddress ?? (() => config.proxy.address));
    if (!options.repository && !options.store) throw new Error('the manager core needs a store or a repository');
    this.repo =
      options.repository ??
      new FileWorkspaceRepository({
        store: options.store!,
        historySize: config.subscribe.historySize,
        logger: this.logger,
        onChange: (previous, next) => observeChange(previous, next, this.logger, this.metrics, this.now()),
      });
    if (options.leadership && options.repository && 'promote' in options.repository) {
      this.replicated = options.repository as ReplicatedRepository;
    }
    const dispatch = (id: string, event: LifecycleEvent): void => this.dispatch(id, event);
    this.runner = new EffectRunner({
      runtime: options.runtime,
      content: options.content,
      ports: this.ports,
      startSlots: new Semaphore(config.maxConcurrentStarts),
      logger: this.logger,
      metrics: this.metrics,
      daemonRetry: { attempts: config.daemon.disposeAttempts, backoffMs: config.daemon.retryBackoffMs },
      // 200 ms doubling over 6 attempts covers ~6 s: an API server restarting (the kubernetes runtime's stop is
      // an API call) is waited out instead of failing the stop and keeping the content without a final backup.
      killRetry: { attempts: 6, backoffMs: 200 },
      workingArea: config.workingArea,
      runtimeSpec: (r) => runtimeSpecOf(r, this.classOf(r), contentDirOf(r, config.workingArea)),
      storageQuotaOf: (r) => this.classOf(r).resources.diskBytes,
      get: (id) => this.repo.get(id),
      dispatch,
    });
    this.timeouts = new TimeoutEnforcer({
      settings: config.timeouts,
      stoppedRetentionMs: config.stoppedRetentionMs,
      now: this.now,
      paused: () => this.closing || this.maintenance.isEnabled(),
      list: () => this.repo.list(),
      busy: (id) => this.runner.isBusy(id),
      dispatch,
      forget: (id) => this.repo.forget(id),
      logger: this.logger,
    });
    const recovery = options.recovery ?? { attempts: 5, backoffMs: 500, recheckMs: 10_000 };
    this.recovery = new Recovery({
      runtime: options.runtime,
      get: (id) => this.repo.get(id),
      list: () => this.repo.list(),
      dispatch,
      logger: this.logger,
      listRetry: recovery,
      recheckMs: recovery.recheckMs,
      orphanGraceMs: config.stopGrace.abortMs,
    });
    this.admission = new StartAdmission(config, this.classes, this.repo, (id) => this.runner.isBusy(id));
    this.recordOps = new RecordOperations({
      repo: this.repo,
      config,
      urls: this.urls,
      reservedEndpoints: options.reservedEndpoints ?? new ReservedEndpoints(),
      now: this.now,
    });
    this.contentOps = new ContentOperations({
      repo: this.repo,
      content: options.content,
      snapshots: options.snapshots,
      maintenance: options.maintenance,
      metrics: this.metrics,
      logger: this.logger,
      workingArea: config.workingArea,
    });
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
    await this.recovery.recover(records);
    if (this.replicated) {
      const replicated = this.replicated;
      const act = (change: DesiredChange): void => {
        if (change.type === 'adopt') return this.dispatch(change.id, { type: 'resume' });
        if (change.type === 'stop') {
          const reason = stopReasonOf(change.policy);
          return this.dispatch(change.id, { type: 'stop-requested', policy: change.policy, byRequest: true, reason });
        }
        const { id, requestId, request } = change;
        Promise.resolve()
          .then(() => this.applyRequest(id, request))
          .then(
            (result) => replicated.acknowledge(id, requestId, request.kind, undefined, result ?? undefined),
            // Deliberate: the refusal is the answer; the follower that asked returns it to its client.
            (error: unknown) => replicated.acknowledge(id, requestId, request.kind, error),
          );
      };
      this.subscriptions.push(this.replicated.desired$.subscribe(act));
      for (const change of pending) act(change);
    }
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
    for (const effect of effects) this.runner.run(id, effect);
  }

  /**
   * Followers record starts and stops as desired state; the other changes need the leader's runtime and daemon
   * connections, so a follower refuses them (clients retry on the leader, e.g. through the manager Service).
   */
  private assertLeading(what: string): void {
    if (!this.leading) {
      throw new FailedPreconditionError(`${what}: this manager replica is not leading; send it to the leading replica`);
    }
  }

  private transitionContext(): TransitionContext {
    const g = this.config.stopGrace;
    return { now: this.now(), graceMs: { normally: g.normallyMs, immediately: g.immediatelyMs, abort: g.abortMs } };
  }

  private classOf(record: WorkspaceRecord): ResolvedClass {
    return this.classes.get(record.spec.className) ?? this.classes.get(this.config.defaultWorkspaceClass)!;
  }

  // Operations (one per RPC) ------------------------------------------------------------------------------------

  /** StartWorkspace: validates, persists the record (PENDING) durably, then starts the lifecycle. */
  async startWorkspace(input: StartWorkspaceInput): Promise<StartWorkspaceResult> {
    assertNoMaintenance(this.maintenance, 'starting a workspace');
    if (!this.leading && !this.replicated) throw new FailedPreconditionError('this manager is not leading');
    const validated = validateStartInput(input);
    const className = this.admission.resolveClass(input.spec!.className);
    this.admission.assertStartable(input.id, input.metadata!.metaId);
    const record = newRecord(input, validated, className, this.urls, this.now());
    const leadingWhenRecorded = this.leading;
    const published = await this.admission.whileAccepting(record, () => this.repo.create(record));
    this.metrics?.startsTotal.inc(labelsOf(published));
    const { id, metaId, owner, type } = published;
    this.logger.info({ workspace: id, metaId, owner, class: className, type }, 'workspace accepted');
    // Recorded as a follower: the leader adopts it, even when that is this replica, promoted meanwhile (its
    // takeover resumed the workspace already; resuming it again here would start it twice: found by the failover
    // spec, a second pod creation answered 409 and failed the workspace).
    if (leadingWhenRecorded) this.dispatch(id, { type: 'resume' });
    return { url: published.url, ownerToken: published.ownerToken };
  }

  /** StopWorkspace. Unknown ids are ignored, as in the original. */
  async stopWorkspace(id: string, policy: StopPolicy): Promise<void> {
    validateInstanceId(id, 'id');
    assertNoMaintenance(this.maintenance, 'stopping a workspace');
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
    await this.applyOrForward(id, { kind: 'markActive', ...options });
  }

  /** SetTimeout (see RecordOperations.setTimeout). */
  async setTimeout(id: string, kind: TimeoutKind, duration: string): Promise<void> {
    await this.applyOrForward(id, { kind: 'setTimeout', timeout: kind, duration });
  }

  /** ControlPort: exposes (or re-exposes with new settings) or removes a port. */
  async controlPort(
    id: string,
    expose: boolean,
    port: { readonly port: number; readonly visibility: PortVisibility; readonly protocol: PortProtocol } | undefined,
  ): Promise<void> {
    await this.applyOrForward(id, { kind: 'controlPort', expose, port });
  }

  async controlAdmission(id: string, level: AdmissionLevel): Promise<void> {
    await this.applyOrForward(id, { kind: 'controlAdmission', level });
  }

  /**
   * A change to a workspace: made here when this replica leads, else recorded on the workspace's object for the
   * leader, answered once the leader made it (with its result, or its refusal as the error).
   */
  private async applyOrForward(id: string, request: RecordRequest): Promise<string | undefined> {
    if (!this.leading && this.replicated) {
      validateInstanceId(id, 'id');
      return this.replicated.request(id, request);
    }
    // With leadership but no shared store, a follower has nobody to hand the change to.
    if (!this.leading && this.options.leadership) this.assertLeading(request.kind);
    return (await this.applyRequest(id, request)) ?? undefined;
  }

  private applyRequest(id: string, request: RecordRequest): void | Promise<string | void> {
    switch (request.kind) {
      case 'markActive':
        return this.recordOps.markActive(id, request);
      case 'setTimeout':
        return this.recordOps.setTimeout(id, request.timeout, request.duration);
      case 'controlPort':
        return this.recordOps.controlPort(id, request.expose, request.port);
      case 'controlAdmission':
        return this.recordOps.controlAdmission(id, request.level);
      case 'takeSnapshot':
        return this.contentOps.takeSnapshot(id, request.returnImmediately);
      case 'backupWorkspace':
        return this.contentOps.backupWorkspace(id);
      case 'updateSshKeys':
        return this.contentOps.updateSshKeys(id, request.keys);
    }
  }

  async takeSnapshot(id: string, returnImmediately: boolean): Promise<string> {
    return (await this.applyOrForward(id, { kind: 'takeSnapshot', returnImmediately })) ?? '';
  }

  async backupWorkspace(id: string): Promise<string> {
    return (await this.applyOrForward(id, { kind: 'backupWorkspace' })) ?? '';
  }

  /** Any replica: snapshots live in the storage, not in a workspace's record. */
  deleteVolumeSnapshot(volumeHandle: string, softDelete: boolean): Promise<boolean> {
    return this.contentOps.deleteVolumeSnapshot(volumeHandle, softDelete);
  }

  async updateSshKeys(id: string, keys: readonly string[]): Promise<void> {
    await this.applyOrForward(id, { kind: 'updateSshKeys', keys });
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

function stopReasonOf(policy: StopPolicy): StopReason {
  return policy === 'abort' ? 'aborted' : 'regular-stop';
}
