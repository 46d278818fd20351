/**
 * The daemon's core: the content of the workspaces on this node, from initialization to disposal, in domain
 * terms (the gRPC edge in `grpc/` maps the wire messages onto this class).
 *
 * The invariants of the architecture brief live here:
 * 1. A workspace whose backup exists is restored from it (never re-initialized); a failed restore fails loudly.
 * 2. Only `ready` content is backed up; `init-failed` and `deleting` content never is. The outcome of a
 *    disposal (final backup, git status) is persisted before any content is deleted.
 * 3. The previous backup stays readable while a new one uploads (the storage backend's atomic upload and the
 *    chunked manifest commit).
 * 5. Dispose and backup are idempotent and survive restarts: state is on disk, a finished disposal leaves a
 *    tombstone that answers a repeated dispose with the same result.
 */
import { mkdir } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { Subject } from 'rxjs';
import type { Observable, Subscription } from 'rxjs';
import { OwnerSlots } from '@workbay/api';
import type { PluginLogger } from '@workbay/api';
import { BackupStore } from './backup/backup-store.js';
import { WorkspaceBackups } from './content/backups.js';
import { WorkspaceDisposal } from './content/disposal.js';
import { housekeeping } from './content/housekeeping.js';
import { WorkspaceInitialization } from './content/initialization.js';
import type { Workspace } from './content/registry.js';
import { WorkspaceRegistry } from './content/registry.js';
import type {
  ContentEvent,
  ContentServiceOptions,
  DisposeWorkspaceResult,
  InitWorkspaceResult,
  WorkspaceInfo,
} from './content/types.js';
import type { InitWorkspaceInput } from './content/validate.js';
import { UnavailableError, errorMessage } from './errors.js';
import { Git } from './git/git.js';
import type { InitProgress } from './initializer/progress.js';
import type { BackupRecord, SessionState } from './session/session-store.js';
import { SessionStore } from './session/session-store.js';
import { NodeHostIdClaims } from './session/host-id-claims.js';
import { HostIdAllocator } from './session/host-ids.js';
import { prepareWorkingArea } from './content/host-modes.js';

export type {
  BackupReason,
  BackupSettings,
  ContentEvent,
  ContentLifecycleHooks,
  ContentServiceOptions,
  DisposeWorkspaceResult,
  InitWorkspaceResult,
  WorkspaceInfo,
} from './content/types.js';
export type { InitWorkspaceInput } from './content/validate.js';

/**
 * The parts below share one {@link WorkspaceRegistry} (state, locks, tracked operations):
 * - initialization (`content/initialization.ts`): InitWorkspace, WaitForInit, InitProgress;
 * - backups and snapshots (`content/backups.ts`), periodic backups included;
 * - disposal (`content/disposal.ts`): final backup, git status, deletion, tombstones;
 * - here: start-up with the recovery of every session on disk, stop, housekeeping.
 */
export class WorkspaceContentService {
  private readonly registry: WorkspaceRegistry;
  private readonly backups: BackupStore | undefined;
  private readonly git: Git;
  private readonly logger: PluginLogger;
  /** Host ids of workspaces; undefined when the daemon is not root (content stays the daemon user's). */
  private readonly hostIds: HostIdAllocator | undefined;
  private readonly backupRuns: WorkspaceBackups;
  private readonly initialization: WorkspaceInitialization;
  private readonly disposal: WorkspaceDisposal;
  private readonly events = new Subject<ContentEvent>();
  private housekeepingTimer: NodeJS.Timeout | undefined;
  private quotaSubscription: Subscription | undefined;
  private stopping = false;
  private started = false;

  /** Every workspace on this node, re-emitted on each change. */
  readonly workspaces$: Observable<readonly WorkspaceInfo[]>;
  /** Lifecycle events (initialized, backed up, disposed, quota exceeded, ...). */
  readonly events$: Observable<ContentEvent> = this.events.asObservable();

  constructor(private readonly options: ContentServiceOptions) {
    this.registry = new WorkspaceRegistry(new SessionStore(options.workingArea), options.metrics);
    this.workspaces$ = this.registry.workspaces$;
    this.logger = options.logger;
    // Git as a workspace's user sees no workspace's content but the one it works on (SpawnPlan.hide).
    this.git = new Git(join(options.workingArea, '.tmp'), options.git, [options.workingArea]);
    this.backups = options.storage
      ? new BackupStore(options.storage, options.layout, {
          format: options.backup.format,
          compression: options.backup.compression,
          logger: options.logger,
          ...(options.backup.packSize !== undefined ? { packSize: options.backup.packSize } : {}),
          ...(options.backup.uploadConcurrency !== undefined
            ? { uploadConcurrency: options.backup.uploadConcurrency }
            : {}),
          ...(options.backup.xattrs !== undefined ? { xattrs: options.backup.xattrs } : {}),
          allowSpecialFiles: options.allowSpecialFiles ?? false,
          restoreSlots: restoreSlotsOf(options.backup.restoreConcurrency ?? 3),
        })
      : undefined;
    const root = options.runsAsRoot ?? process.getuid?.() === 0;
    const ids = options.workspaceIds ?? { base: 200_000, count: 65_536 };
    this.hostIds = root
      ? new HostIdAllocator(
          ids,
          ids.claimsDir && !ids.shared ? new NodeHostIdClaims(ids.claimsDir, resolve(options.workingArea)) : undefined,
        )
      : undefined;
    const emit = (event: ContentEvent): void => this.events.next(event);
    const shared = { registry: this.registry, options, backups: this.backups, logger: this.logger, emit };
    this.backupRuns = new WorkspaceBackups({ ...shared, stopping: () => this.stopping });
    const parts = { ...shared, backupRuns: this.backupRuns, git: this.git, hostIds: this.hostIds };
    this.initialization = new WorkspaceInitialization({
      ...parts,
      contentLocation: (instanceId) => this.contentLocation(instanceId),
    });
    this.disposal = new WorkspaceDisposal(parts);
  }

  /** The workspaces on this node as last published (what `workspaces$` emits). */
  getWorkspaces(): readonly WorkspaceInfo[] {
    return this.registry.getSnapshot();
  }

  get backupStore(): BackupStore | undefined {
    return this.backups;
  }

  contentLocation(instanceId: string): string {
    return join(this.options.workingArea, instanceId);
  }

  // ------------------------------------------------------------------------------------------------------------
  // Start, restart recovery, stop

  /** Loads the sessions on disk and picks every live workspace up again. */
  async start(): Promise<void> {
    if (this.started) return;
    this.started = true;
    await prepareWorkingArea(this.options.workingArea);
    await mkdir(join(this.options.workingArea, '.tmp'), { recursive: true, mode: 0o700 });
    this.quotaSubscription = this.options.quota.exceeded$.subscribe((event) => {
      this.options.metrics.quotaExceeded.inc();
      this.events.next({
        type: 'quota-exceeded',
        instanceId: event.workspaceId,
        usedBytes: event.usedBytes,
        limitBytes: event.limitBytes,
      });
    });
    const sessions = await this.registry.store.list((file, error) =>
      this.logger.error({ file, err: errorMessage(error) }, 'unreadable session state; leaving it alone'),
    );
    // Every id on disk stays taken, also of workspaces whose recovery fails below: their content keeps its owner.
    const contested = await this.hostIds?.adopt(
      sessions.flatMap((state) => (state.hostUser ? [state.hostUser.uid] : [])),
    );
    if (contested?.length) {
      this.logger.error(
        { ids: contested.slice(0, 20), count: contested.length },
        'workspace host ids also held by another daemon of this node (both ran before ids were claimed node-wide): their workspaces share a host uid until one is disposed',
      );
    }
    for (const state of sessions) {
      const ws: Workspace = { state, pending: new Set() };
      this.registry.add(ws);
      try {
        await this.recover(ws);
      } catch (error) {
        // Not registered: nothing may use (back up, dispose, serve) content whose recovery failed. Its state and
        // content stay on disk untouched (housekeeping leaves them alone), so the next start tries again.
        this.backupRuns.stopPeriodic(ws);
        this.registry.delete(state.instanceId);
        this.logger.error(
          { instanceId: state.instanceId, phase: state.phase, err: errorMessage(error) },
          'could not recover workspace after restart; it is not served until a restart recovers it',
        );
      }
    }
    this.registry.publish();
    this.options.diskGuard.start();
    if (this.options.housekeeping.intervalMs > 0) {
      this.housekeepingTimer = setInterval(
        () =>
          void this.registry.track(this.housekeeping()).catch((error: unknown) =>
            // A periodic run has no caller: the log is where its failure goes; the next run tries again.
            this.logger.warn({ err: errorMessage(error) }, 'housekeeping failed'),
          ),
        this.options.housekeeping.intervalMs,
      );
      this.housekeepingTimer.unref();
    }
    this.logger.info({ workspaces: sessions.length, workingArea: this.options.workingArea }, 'content service started');
  }

  private async recover(ws: Workspace): Promise<void> {
    const { state } = ws;
    switch (state.phase) {
      case 'initializing':
        // The directory holds whatever the interrupted initializer wrote: never trust or back it up.
        await this.registry.persist(ws, {
          phase: 'init-failed',
          failure: 'the daemon restarted while the workspace was initializing',
        });
        this.logger.warn(
          { instanceId: state.instanceId },
          'initialization was interrupted by a restart; marked failed',
        );
        return;
      case 'disposing':
        // The final backup did not finish, deletion had not started: the content is intact.
        await this.registry.persist(ws, { phase: 'ready' });
        await this.restoreQuota(ws);
        this.backupRuns.schedulePeriodic(ws);
        return;
      case 'ready':
        await this.restoreQuota(ws);
        this.backupRuns.schedulePeriodic(ws);
        return;
      case 'backed-up':
      case 'deleting':
        // The disposal outcome is recorded; finish deleting.
        void this.registry
          .track(this.registry.lock.run(state.instanceId, () => this.disposal.deleteContent(ws)))
          .catch((error: unknown) =>
            this.logger.error({ instanceId: state.instanceId, err: errorMessage(error) }, 'resuming deletion failed'),
          );
        return;
      case 'init-failed':
        return;
    }
  }

  private async restoreQuota(ws: Workspace): Promise<void> {
    const handle = ws.state.quota;
    if (!handle || handle.mode === 'none') return;
    if (handle.mode !== this.options.quota.mode) {
      this.logger.warn(
        { instanceId: ws.state.instanceId, mode: handle.mode, current: this.options.quota.mode },
        'workspace quota mode differs from the configured one',
      );
      return;
    }
    await this.options.quota.restore(ws.state.instanceId, ws.state.contentLocation, handle);
    // Dormant kept content is read-only again, and holds no disk promise (content/disposal.ts); if it cannot be, it
    // keeps its promise and a resume makes it writable as usual.
    if (ws.state.dormant && ws.state.phase === 'ready')
      await this.options.quota.makeDormant?.(ws.state.instanceId, ws.state.contentLocation, handle);
    // A re-mounted image may be on another loop device; the rule is set again either way (idempotent).
    if (ws.state.phase === 'ready')
      await this.options.quota.limitIo?.(ws.state.instanceId, ws.state.contentLocation, handle);
  }

  /** Stops timers and waits (bounded) for running operations. Content and state stay on disk. */
  async stop(): Promise<void> {
    this.stopping = true;
    if (this.housekeepingTimer) clearInterval(this.housekeepingTimer);
    for (const ws of this.registry.all()) this.backupRuns.stopPeriodic(ws);
    await this.registry.settle(this.options.shutdownTimeoutMs ?? 30_000);
    this.quotaSubscription?.unsubscribe();
    this.options.diskGuard.stop();
    await this.options.quota.close();
    await this.git.dispose();
    this.registry.close();
    this.events.complete();
  }

  private assertRunning(): void {
    if (this.stopping) throw new UnavailableError('the daemon is shutting down');
  }

  // ------------------------------------------------------------------------------------------------------------
  // The RPCs, each in its part

  async initWorkspace(input: InitWorkspaceInput): Promise<InitWorkspaceResult> {
    this.assertRunning();
    return this.initialization.initWorkspace(input);
  }

  /**
   * Resolves once initialization is done; rejects with its failure, or NOT_FOUND when the workspace is unknown
   * (or its registration failed while waiting).
   */
  waitForInit(instanceId: string): Promise<void> {
    return this.initialization.waitForInit(instanceId);
  }

  /** Whether the workspace still initializes and what a retrying step last reported; NOT_FOUND when unknown. */
  initProgress(instanceId: string): { readonly initializing: boolean; readonly progress?: InitProgress } {
    return this.initialization.initProgress(instanceId);
  }

  isWorkspaceExists(instanceId: string): boolean {
    return this.registry.has(instanceId);
  }

  /** The session state of a workspace (for tests and diagnostics). */
  describe(instanceId: string): SessionState | undefined {
    return this.registry.get(instanceId)?.state;
  }

  async backupWorkspace(instanceId: string): Promise<BackupRecord> {
    this.assertRunning();
    return this.backupRuns.backupWorkspace(instanceId);
  }

  /**
   * Takes a snapshot (`snapshot-<unixnano>.tar`); resolves with `<object>@<bucket>`. With `returnImmediately`
   * it answers as soon as the name is known and uploads in the background.
   */
  async takeSnapshot(instanceId: string, options: { returnImmediately?: boolean } = {}): Promise<string> {
    this.assertRunning();
    return this.backupRuns.takeSnapshot(instanceId, options);
  }

  /** Deletes a snapshot given as `<object>@<bucket>` (never a backup: INVALID_ARGUMENT; missing: NOT_FOUND). */
  async deleteSnapshot(qualified: string): Promise<void> {
    this.assertRunning();
    return this.backupRuns.deleteSnapshot(qualified);
  }

  /**
   * Final backup (unless `backup` is false), git status, then deletion. The outcome is persisted before any
   * content is deleted, and a repeated call returns the same outcome.
   */
  async disposeWorkspace(
    instanceId: string,
    options: { backup: boolean; backupLogs?: boolean },
  ): Promise<DisposeWorkspaceResult> {
    this.assertRunning();
    return this.disposal.dispose(instanceId, options);
  }

  // ------------------------------------------------------------------------------------------------------------
  // Housekeeping

  /**
   * Removes working-area directories without session state older than the orphan age (content left by
   * crashes before state was written), images without a workspace, and old tombstones.
   */
  housekeeping(now = Date.now()): Promise<{ removed: string[] }> {
    return housekeeping(
      {
        workingArea: this.options.workingArea,
        isRegistered: (id) => this.registry.has(id),
        store: this.registry.store,
        hostOps: this.options.hostOps,
        metrics: this.options.metrics,
        logger: this.logger,
        orphanAgeMs: this.options.housekeeping.orphanAgeMs,
        tombstoneTtlMs: this.options.housekeeping.tombstoneTtlMs,
      },
      now,
    );
  }
}

/** A restore's fair share: all but one of the slots for one owner, from 3 on (as backups'). */
function restoreSlotsOf(concurrency: number): OwnerSlots {
  return new OwnerSlots(concurrency, concurrency >= 3 ? concurrency - 1 : concurrency);
}
