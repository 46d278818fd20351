/**
 * How the core's parts are put together: the repository (the file store unless one is given), ports, the effect
 * runner, timeouts, recovery, admission, the record and content operations, and the change router. The core only
 * coordinates them (see manager.ts).
 *
 * @module
 */
import { OwnerSlots } from '@workbay/api';
import type { WorkspaceRuntime } from '@workbay/api';
import type { Observable } from 'rxjs';
import type { ManagerConfig, ResolvedClass } from '../config.js';
import type { ContentService } from '../content/content-service.js';
import type { SnapshotStore } from '../content/snapshot-store.js';
import type { WorkspaceRecord } from '../domain/types.js';
import type { Logger } from '../logger.js';
import type { ManagerMetrics } from '../metrics.js';
import { ReservedEndpoints } from '../proxy/exposure.js';
import type { WorkspaceStore } from '../store/file-store.js';
import { ChangeRouter } from './change-router.js';
import { ContentOperations } from './content-operations.js';
import { EffectRunner } from './lifecycle/effects.js';
import type { LifecycleEvent } from './lifecycle/events.js';
import type { MaintenanceMode } from './maintenance.js';
import { observeChange } from './observer.js';
import { FixedPort, PortAllocator } from './port-allocator.js';
import type { IdePorts } from './port-allocator.js';
import { WorkspaceUrls, contentDirOf, runtimeSpecOf } from './records.js';
import { Recovery } from './recovery.js';
import { FileWorkspaceRepository } from './repository.js';
import type { ReplicatedRepository, WorkspaceRepository } from './repository.js';
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

/** What the parts need of the core itself. */
export interface CoreHooks {
  readonly dispatch: (id: string, event: LifecycleEvent) => void;
  readonly isClosing: () => boolean;
  readonly isLeading: () => boolean;
  readonly now: () => number;
}

export interface CoreParts {
  readonly ports: IdePorts;
  readonly classes: ReadonlyMap<string, ResolvedClass>;
  readonly urls: WorkspaceUrls;
  readonly repo: WorkspaceRepository;
  readonly replicated?: ReplicatedRepository;
  readonly runner: EffectRunner;
  readonly timeouts: TimeoutEnforcer;
  readonly recovery: Recovery;
  readonly admission: StartAdmission;
  readonly recordOps: RecordOperations;
  readonly contentOps: ContentOperations;
  readonly changes: ChangeRouter;
  readonly classOf: (record: WorkspaceRecord) => ResolvedClass;
}

export function assembleCore(options: ManagerCoreOptions, hooks: CoreHooks): CoreParts {
  const { config, logger, metrics, maintenance } = options;
  const { dispatch, now } = hooks;
  const ports = options.runtime.addressPerInstance
    ? new FixedPort(config.idePorts.from)
    : new PortAllocator(config.idePorts.from, config.idePorts.to);
  const classes = new Map(config.workspaceClasses.map((c) => [c.id, c]));
  const classOf = (record: WorkspaceRecord): ResolvedClass =>
    classes.get(record.spec.className) ?? classes.get(config.defaultWorkspaceClass)!;
  const urls = new WorkspaceUrls(config, options.proxyAddress ?? (() => config.proxy.address));
  if (!options.repository && !options.store) throw new Error('the manager core needs a store or a repository');
  const repo =
    options.repository ??
    new FileWorkspaceRepository({
      store: options.store!,
      historySize: config.subscribe.historySize,
      logger,
      onChange: (previous, next) => observeChange(previous, next, logger, metrics, now()),
    });
  const replicated =
    options.leadership && options.repository && 'promote' in options.repository
      ? (options.repository as ReplicatedRepository)
      : undefined;
  const runner = new EffectRunner({
    runtime: options.runtime,
    content: options.content,
    ports,
    // An owner's starts beyond its share wait without standing before other owners' (red team round 12, G2).
    startSlots: new OwnerSlots(config.maxConcurrentStarts, config.maxConcurrentStartsPerOwner),
    logger,
    metrics,
    daemonRetry: { attempts: config.daemon.disposeAttempts, backoffMs: config.daemon.retryBackoffMs },
    // 200 ms doubling over 6 attempts covers ~6 s: an API server restarting (the kubernetes runtime's stop is
    // an API call) is waited out instead of failing the stop and keeping the content without a final backup.
    killRetry: { attempts: 6, backoffMs: 200 },
    workingArea: config.workingArea,
    runtimeSpec: (r) => runtimeSpecOf(r, classOf(r), contentDirOf(r, config.workingArea)),
    storageQuotaOf: (r) => classOf(r).resources.diskBytes,
    get: (id) => repo.get(id),
    dispatch,
  });
  const timeouts = new TimeoutEnforcer({
    settings: config.timeouts,
    stoppedRetentionMs: config.stoppedRetentionMs,
    now,
    paused: () => hooks.isClosing() || maintenance.isEnabled(),
    list: () => repo.list(),
    busy: (id) => runner.isBusy(id),
    dispatch,
    forget: (id) => repo.forget(id),
    logger,
  });
  const retry = options.recovery ?? { attempts: 5, backoffMs: 500, recheckMs: 10_000 };
  const recovery = new Recovery({
    runtime: options.runtime,
    get: (id) => repo.get(id),
    list: () => repo.list(),
    dispatch,
    logger,
    listRetry: retry,
    recheckMs: retry.recheckMs,
    orphanGraceMs: config.stopGrace.abortMs,
  });
  const admission = new StartAdmission(config, classes, repo, (id) => runner.isBusy(id));
  const recordOps = new RecordOperations({
    repo,
    config,
    urls,
    reservedEndpoints: options.reservedEndpoints ?? new ReservedEndpoints(),
    now,
  });
  const contentOps = new ContentOperations({
    repo,
    content: options.content,
    snapshots: options.snapshots,
    maintenance,
    metrics,
    logger,
    workingArea: config.workingArea,
  });
  const changes = new ChangeRouter({
    recordOps,
    contentOps,
    replicated,
    elected: options.leadership !== undefined,
    isLeading: hooks.isLeading,
    dispatch,
  });
  return {
    ports,
    classes,
    urls,
    repo,
    replicated,
    runner,
    timeouts,
    recovery,
    admission,
    recordOps,
    contentOps,
    changes,
    classOf,
  };
}
