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
import { lchown, mkdir, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { BehaviorSubject, Subject } from 'rxjs';
import type { Observable, Subscription } from 'rxjs';
import type { PluginLogger } from '@workbay/api';
import { BackupStore } from './backup/backup-store.js';
import {
  assertBackupable,
  assertContentPresent,
  gitStatusOfContent,
  specGitLocations,
} from './content/content-checks.js';
import type { UploadDeps } from './content/backup-run.js';
import { uploadBackup, uploadSnapshot } from './content/backup-run.js';
import { housekeeping } from './content/housekeeping.js';
import { populateContent } from './content/populate.js';
import { splitQualified } from './content/ownership.js';
import { writeReadyMarker } from './content/ready-marker.js';
import type {
  BackupReason,
  ContentEvent,
  ContentServiceOptions,
  DisposeWorkspaceResult,
  InitWorkspaceResult,
  WorkspaceInfo,
} from './content/types.js';
import type { InitWorkspaceInput } from './content/validate.js';
import { validateInitWorkspace } from './content/validate.js';
import {
  AlreadyExistsError,
  FailedPreconditionError,
  NotFoundError,
  UnavailableError,
  WorkspaceStateError,
  errorMessage,
} from './errors.js';
import { Git } from './git/git.js';
import type { GitStatusSummary } from './git/git-status.js';
import type { InitProgress } from './initializer/progress.js';
import type { ContentSource } from './initializer/types.js';
import { redactSpec } from './initializer/types.js';
import type { BackupRecord, DisposalRecord, SessionState } from './session/session-store.js';
import { SessionStore } from './session/session-store.js';
import { HostIdAllocator } from './session/host-ids.js';
import { quote } from './util/bounds.js';
import { KeyedMutex, Semaphore } from './util/concurrency.js';
import { ownTree } from './util/own-tree.js';

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

interface Workspace {
  state: SessionState;
  /**
   * Settles when initialization ended (either way), or when the workspace was never registered after all. Set
   * together with the `initializing` phase, so that WaitForInit has something to wait for from the first moment
   * the workspace exists; undefined for workspaces loaded from disk (their initialization cannot be running).
   */
  init?: Promise<void>;
  initError?: unknown;
  /** The latest progress an initializer step reported while initialization runs (the InitProgress RPC). */
  progress?: InitProgress;
  periodic?: NodeJS.Timeout;
  /** Snapshots answered early (return_immediately) and still uploading. */
  readonly pending: Set<Promise<unknown>>;
}

export class WorkspaceContentService {
  private readonly workspaces = new Map<string, Workspace>();
  private readonly lock = new KeyedMutex();
  private readonly slots: Semaphore;
  private readonly store: SessionStore;
  private readonly backups: BackupStore | undefined;
  private readonly git: Git;
  private readonly logger: PluginLogger;
  /** Host ids of workspaces; undefined when the daemon is not root (content stays the daemon user's). */
  private readonly hostIds: HostIdAllocator | undefined;
  private readonly inflight = new Set<Promise<unknown>>();
  /** Snapshot uploads still running, by `<object>@<bucket>`: a deletion waits for them. */
  private readonly uploadingSnapshots = new Map<string, Promise<unknown>>();
  private readonly snapshot = new BehaviorSubject<readonly WorkspaceInfo[]>([]);
  private readonly events = new Subject<ContentEvent>();
  private housekeepingTimer: NodeJS.Timeout | undefined;
  private quotaSubscription: Subscription | undefined;
  private stopping = false;
  private started = false;

  /** Every workspace on this node, re-emitted on each change. */
  readonly workspaces$: Observable<readonly WorkspaceInfo[]> = this.snapshot.asObservable();
  /** Lifecycle events (initialized, backed up, disposed, quota exceeded, ...). */
  readonly events$: Observable<ContentEvent> = this.events.asObservable();

  constructor(private readonly options: ContentServiceOptions) {
    this.slots = new Semaphore(options.backup.concurrency);
    this.store = new SessionStore(options.workingArea);
    this.logger = options.logger;
    this.git = new Git(join(options.workingArea, '.tmp'), options.git);
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
        })
      : undefined;
    const root = options.runsAsRoot ?? process.getuid?.() === 0;
    this.hostIds = root ? new HostIdAllocator(options.workspaceIds ?? { base: 200_000, count: 65_536 }) : undefined;
  }

  /** The workspaces right now. */
  getWorkspaces(): readonly WorkspaceInfo[] {
    return this.snapshot.getValue();
  }

  get backupStore(): BackupStore | undefined {
    return this.backups;
  }

  contentLocation(instanceId: string): string {
    return join(this.options.workingArea, instanceId);
  }

  private publish(): void {
    const infos: WorkspaceInfo[] = [...this.workspaces.values()].map(({ state }) => ({
      instanceId: state.instanceId,
      workspaceId: state.workspaceId,
      owner: state.owner,
      phase: state.phase,
      contentLocation: state.contentLocation,
      ...(state.lastBackup ? { lastBackupAt: state.lastBackup.at } : {}),
      ...(state.quota ? { quotaBytes: state.quota.bytes } : {}),
    }));
    this.snapshot.next(infos);
    this.options.metrics.workspaces.reset();
    for (const info of infos) this.options.metrics.workspaces.inc({ phase: info.phase });
  }

  private async persist(ws: Workspace, patch: Partial<SessionState>): Promise<void> {
    ws.state = { ...ws.state, ...patch, updatedAt: new Date().toISOString() };
    await this.store.save(ws.state);
    this.publish();
  }

  /** Tracks an operation so that `stop()` can wait for it. */
  private track<T>(promise: Promise<T>): Promise<T> {
    this.inflight.add(promise);
    void promise.then(
      () => this.inflight.delete(promise),
      () => this.inflight.delete(promise),
    );
    return promise;
  }

  // ------------------------------------------------------------------------------------------------------------
  // Start, restart recovery, stop

  /** Loads the sessions on disk and picks every live workspace up again. */
  async start(): Promise<void> {
    if (this.started) return;
    this.started = true;
    await mkdir(this.options.workingArea, { recursive: true, mode: 0o755 });
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
    const sessions = await this.store.list((file, error) =>
      this.logger.error({ file, err: errorMessage(error) }, 'unreadable session state; leaving it alone'),
    );
    // Every id on disk stays taken, also of workspaces whose recovery fails below: their content keeps its owner.
    for (const state of sessions) if (state.hostUser) this.hostIds?.reserve(state.hostUser.uid);
    for (const state of sessions) {
      const ws: Workspace = { state, pending: new Set() };
      this.workspaces.set(state.instanceId, ws);
      try {
        await this.recover(ws);
      } catch (error) {
        // Not registered: nothing may use (back up, dispose, serve) content whose recovery failed. Its state and
        // content stay on disk untouched (housekeeping leaves them alone), so the next start tries again.
        this.stopPeriodic(ws);
        this.workspaces.delete(state.instanceId);
        this.logger.error(
          { instanceId: state.instanceId, phase: state.phase, err: errorMessage(error) },
          'could not recover workspace after restart; it is not served until a restart recovers it',
        );
      }
    }
    this.publish();
    this.options.diskGuard.start();
    if (this.options.housekeeping.intervalMs > 0) {
      this.housekeepingTimer = setInterval(
        () =>
          void this.track(this.housekeeping()).catch((error: unknown) =>
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
        await this.persist(ws, {
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
        await this.persist(ws, { phase: 'ready' });
        await this.restoreQuota(ws);
        this.schedulePeriodic(ws);
        return;
      case 'ready':
        await this.restoreQuota(ws);
        this.schedulePeriodic(ws);
        return;
      case 'backed-up':
      case 'deleting':
        // The disposal outcome is recorded; finish deleting.
        void this.track(this.lock.run(state.instanceId, () => this.deleteContent(ws))).catch((error: unknown) =>
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
  }

  /** Stops timers and waits (bounded) for running operations. Content and state stay on disk. */
  async stop(): Promise<void> {
    this.stopping = true;
    if (this.housekeepingTimer) clearInterval(this.housekeepingTimer);
    for (const ws of this.workspaces.values()) this.stopPeriodic(ws);
    const timeout = this.options.shutdownTimeoutMs ?? 30_000;
    await Promise.race([
      Promise.allSettled([...this.inflight]),
      new Promise((resolve) => setTimeout(resolve, timeout).unref()),
    ]);
    this.quotaSubscription?.unsubscribe();
    this.options.diskGuard.stop();
    await this.options.quota.close();
    await this.git.dispose();
    this.snapshot.complete();
    this.events.complete();
  }

  private assertRunning(): void {
    if (this.stopping) throw new UnavailableError('the daemon is shutting down');
  }

  private require(instanceId: string): Workspace {
    const ws = this.workspaces.get(instanceId);
    if (!ws) throw new NotFoundError(`workspace ${quote(instanceId)} does not exist on this node`);
    return ws;
  }

  // ------------------------------------------------------------------------------------------------------------
  // InitWorkspace, WaitForInit, IsWorkspaceExists

  async initWorkspace(input: InitWorkspaceInput): Promise<InitWorkspaceResult> {
    this.assertRunning();
    // Everything is checked before anything is registered or written: a refused request leaves no trace.
    validateInitWorkspace(input, {
      layout: this.options.layout,
      hasStorage: this.backups !== undefined,
      git: this.git.policy,
    });
    if (this.workspaces.has(input.instanceId))
      throw new AlreadyExistsError(`workspace '${input.instanceId}' already exists on this node`);
    const now = new Date().toISOString();
    const contentLocation = this.contentLocation(input.instanceId);
    const hostId = this.hostIds?.allocate();
    const ws: Workspace = {
      state: {
        version: 1,
        instanceId: input.instanceId,
        owner: input.owner,
        workspaceId: input.workspaceId || input.instanceId,
        contentLocation,
        phase: 'initializing',
        createdAt: now,
        updatedAt: now,
        remoteStorageDisabled: input.remoteStorageDisabled,
        initializer: redactSpec(input.initializer),
        storageQuotaBytes: input.storageQuotaBytes,
        gitLocations: specGitLocations(input.initializer),
        ...(hostId !== undefined ? { hostUser: { uid: hostId, gid: hostId } } : {}),
      },
      pending: new Set(),
    };
    // Registered before the first await: a concurrent InitWorkspace for the same id gets ALREADY_EXISTS, and a
    // concurrent WaitForInit waits on `ws.init` (settled in every outcome below).
    let settle!: () => void;
    ws.init = new Promise<void>((resolve) => (settle = resolve));
    this.workspaces.set(input.instanceId, ws);
    try {
      await this.options.diskGuard.assertSpace();
      await this.store.removeTombstone(input.instanceId);
      await this.store.save(ws.state);
    } catch (error) {
      this.workspaces.delete(input.instanceId);
      if (hostId !== undefined) this.hostIds?.release(hostId);
      settle();
      throw error;
    }
    this.publish();
    let result: InitWorkspaceResult | undefined;
    await this.track(
      this.initialize(ws, input).then(
        (r) => {
          result = r;
        },
        (error: unknown) => {
          ws.initError = error;
        },
      ),
    ).finally(() => {
      // Progress describes a running initialization only.
      ws.progress = undefined;
      settle();
    });
    if (ws.initError !== undefined) throw ws.initError;
    return result as InitWorkspaceResult;
  }

  private async initialize(ws: Workspace, input: InitWorkspaceInput): Promise<InitWorkspaceResult> {
    const started = performance.now();
    const root = ws.state.contentLocation;
    const logger = this.logger.child({ instanceId: input.instanceId, workspaceId: ws.state.workspaceId });
    let source: ContentSource = 'from-other';
    try {
      await mkdir(root, { recursive: true, mode: 0o755 });
      const quotaBytes = input.storageQuotaBytes > 0 ? input.storageQuotaBytes : this.options.defaultQuotaBytes;
      if (quotaBytes > 0 && this.options.quota.mode !== 'none') {
        const handle = await this.options.quota.apply(input.instanceId, root, quotaBytes);
        await this.persist(ws, { quota: handle });
      }
      // A clean slate: children only, the directory itself may carry the quota (mount point).
      for (const name of await readdir(root)) await rm(join(root, name), { recursive: true, force: true });
      // The content directory's owner IS the workspace's host identity (isolation contract); after the quota,
      // which may have mounted an image here.
      const owner = ws.state.hostUser;
      if (owner) await lchown(root, owner.uid, owner.gid);

      const populated = await populateContent(
        {
          backups: input.remoteStorageDisabled ? undefined : this.backups,
          git: this.git,
          metrics: this.options.metrics,
          settings: this.options.initializer,
          logger,
          progress: (progress) => {
            ws.progress = progress;
          },
        },
        ws.state,
        input.initializer,
      );
      source = populated.source;
      const { metrics, gitLocations } = populated;
      await writeReadyMarker(
        root,
        {
          source,
          metrics: metrics.map((m) => ({ type: m.type, durationMs: m.durationMs, bytes: m.bytes })),
          instanceId: input.instanceId,
          workspaceId: ws.state.workspaceId,
          readyAt: new Date().toISOString(),
        },
        owner,
        logger,
      );
      if (owner && !populated.contentOwned) {
        // Whatever the initializer wrote as root (or with the archive's owners) becomes the workspace's. An
        // initializer that wrote as the workspace's user (git) needs no walk.
        const owned = await ownTree(root, owner.uid, owner.gid);
        if (owned.changed > 0) logger.info({ ...owned, uid: owner.uid }, 'gave the content to the workspace user');
      }
      await this.options.lifecycle?.contentReady({
        instanceId: input.instanceId,
        workspaceId: ws.state.workspaceId,
        contentLocation: root,
        ...(owner ? { hostUser: owner } : {}),
      });
      await this.persist(ws, {
        phase: 'ready',
        init: { source, metrics, finishedAt: new Date().toISOString() },
        gitLocations,
      });
      this.options.metrics.initializeSeconds.observe(
        { source, outcome: 'success' },
        (performance.now() - started) / 1000,
      );
      this.events.next({ type: 'initialized', instanceId: input.instanceId, source });
      this.schedulePeriodic(ws);
      logger.info({ source, durationMs: Math.round(performance.now() - started) }, 'workspace content ready');
      return { contentLocation: root, source, metrics };
    } catch (error) {
      const message = errorMessage(error);
      this.options.metrics.initializeSeconds.observe(
        { source, outcome: 'failure' },
        (performance.now() - started) / 1000,
      );
      await this.persist(ws, { phase: 'init-failed', failure: message }).catch((persistError: unknown) =>
        logger.error({ err: errorMessage(persistError) }, 'could not record the failed initialization'),
      );
      this.events.next({ type: 'init-failed', instanceId: input.instanceId, error: message });
      logger.warn({ err: message }, 'workspace initialization failed');
      throw error;
    }
  }

  /**
   * Resolves once initialization is done; rejects with its failure, or NOT_FOUND when the workspace is unknown
   * (or its registration failed while waiting).
   */
  async waitForInit(instanceId: string): Promise<void> {
    let ws = this.require(instanceId);
    while (ws.state.phase === 'initializing') {
      const waitedOn = ws;
      // Without a running init (loaded from disk; recovery marks those failed) there is nothing to wait for.
      if (ws.init) await ws.init;
      ws = this.require(instanceId);
      if (ws === waitedOn && ws.state.phase === 'initializing') {
        throw new FailedPreconditionError(`initialization of workspace '${instanceId}' is not running on this node`);
      }
    }
    if (ws.state.phase === 'init-failed') {
      if (ws.initError !== undefined) throw ws.initError;
      throw new FailedPreconditionError(
        `initialization of workspace '${instanceId}' failed: ${ws.state.failure ?? 'unknown reason'}`,
      );
    }
  }

  /**
   * How the workspace's initialization is going: whether it still runs and what a retrying step last reported.
   * NOT_FOUND when the workspace is unknown.
   */
  initProgress(instanceId: string): { readonly initializing: boolean; readonly progress?: InitProgress } {
    const ws = this.require(instanceId);
    const initializing = ws.state.phase === 'initializing';
    return initializing && ws.progress ? { initializing, progress: ws.progress } : { initializing };
  }

  isWorkspaceExists(instanceId: string): boolean {
    return this.workspaces.has(instanceId);
  }

  /** The session state of a workspace (for tests and diagnostics). */
  describe(instanceId: string): SessionState | undefined {
    return this.workspaces.get(instanceId)?.state;
  }

  // ------------------------------------------------------------------------------------------------------------
  // Backups and snapshots

  private assertBackupable(ws: Workspace, operation: string, allowDisposing = false): BackupStore {
    return assertBackupable(ws.state, this.backups, operation, allowDisposing);
  }

  private assertContentPresent(ws: Workspace, operation: string): Promise<void> {
    return assertContentPresent(ws.state, this.options.hostOps, this.logger, operation);
  }

  private get uploads(): UploadDeps {
    return {
      slots: this.slots,
      metrics: this.options.metrics,
      logger: this.logger,
      attempts: this.options.backup.attempts,
      initialBackoffMs: this.options.backup.initialBackoffMs,
    };
  }

  /** Runs one backup with the node-wide concurrency limit and retries. Caller holds the workspace lock. */
  private async runBackup(ws: Workspace, reason: BackupReason): Promise<BackupRecord> {
    const backups = this.assertBackupable(ws, 'back it up', reason === 'final');
    await this.assertContentPresent(ws, 'back it up');
    try {
      const result = await uploadBackup(this.uploads, backups, ws.state, reason);
      const record: BackupRecord = {
        url: result.url,
        at: new Date().toISOString(),
        format: result.format,
        uploadedBytes: result.uploadedBytes,
        contentBytes: result.contentBytes,
      };
      await this.persist(ws, { lastBackup: record });
      this.events.next({ type: 'backed-up', instanceId: ws.state.instanceId, reason, url: result.url });
      return record;
    } catch (error) {
      this.events.next({ type: 'backup-failed', instanceId: ws.state.instanceId, reason, error: errorMessage(error) });
      throw error;
    }
  }

  async backupWorkspace(instanceId: string): Promise<BackupRecord> {
    this.assertRunning();
    const ws = this.require(instanceId);
    return this.track(this.lock.run(instanceId, () => this.runBackup(ws, 'explicit')));
  }

  /**
   * Takes a snapshot (`snapshot-<unixnano>.tar`); resolves with `<object>@<bucket>`. With `returnImmediately`
   * it answers as soon as the name is known and uploads in the background.
   */
  async takeSnapshot(instanceId: string, options: { returnImmediately?: boolean } = {}): Promise<string> {
    this.assertRunning();
    const ws = this.require(instanceId);
    const backups = this.assertBackupable(ws, 'take a snapshot');
    await this.assertContentPresent(ws, 'take a snapshot');
    const ref = { owner: ws.state.owner, workspaceId: ws.state.workspaceId };
    const target = backups.snapshotName(ref);
    const upload = this.track(uploadSnapshot(this.uploads, backups, ws.state, target));
    ws.pending.add(upload);
    this.uploadingSnapshots.set(target.url, upload);
    const settled = (): void => {
      ws.pending.delete(upload);
      this.uploadingSnapshots.delete(target.url);
    };
    void upload.then(settled, settled);
    if (options.returnImmediately) return target.url;
    await upload;
    return target.url;
  }

  /**
   * Deletes a snapshot taken by {@link takeSnapshot}, given as `<object>@<bucket>`. Only snapshot objects can be
   * named (never a backup or its chunks: INVALID_ARGUMENT); a missing one is NOT_FOUND. A snapshot still
   * uploading (return_immediately) is deleted once its upload ended, so that it cannot reappear.
   */
  async deleteSnapshot(qualified: string): Promise<void> {
    this.assertRunning();
    if (!this.backups) throw new FailedPreconditionError('this daemon has no remote storage; it holds no snapshots');
    const backups = this.backups;
    splitQualified(qualified, 'snapshot'); // bounded before anything quotes it
    const { bucket, name } = backups.parseSnapshotName(qualified, 'snapshot');
    const uploading = this.uploadingSnapshots.get(qualified);
    if (uploading) await Promise.allSettled([uploading]);
    await this.track(backups.deleteSnapshot(qualified, 'snapshot'));
    this.logger.info({ bucket, name }, 'snapshot deleted');
  }

  private schedulePeriodic(ws: Workspace): void {
    const period = this.options.backup.periodMs;
    if (period <= 0 || !this.backups || ws.state.remoteStorageDisabled || this.stopping) return;
    this.stopPeriodic(ws);
    ws.periodic = setTimeout(() => {
      ws.periodic = undefined;
      void this.track(
        this.lock.run(ws.state.instanceId, async () => {
          if (ws.state.phase !== 'ready' || this.workspaces.get(ws.state.instanceId) !== ws) return;
          await this.runBackup(ws, 'periodic');
        }),
      )
        .catch(() => undefined) // logged and counted in runBackup
        .finally(() => {
          if (ws.state.phase === 'ready' && this.workspaces.get(ws.state.instanceId) === ws) this.schedulePeriodic(ws);
        });
    }, period);
    ws.periodic.unref();
  }

  private stopPeriodic(ws: Workspace): void {
    if (ws.periodic) clearTimeout(ws.periodic);
    ws.periodic = undefined;
  }

  // ------------------------------------------------------------------------------------------------------------
  // Disposal

  /**
   * Final backup (unless `backup` is false), git status, then deletion. The outcome is persisted before any
   * content is deleted, and a repeated call returns the same outcome.
   */
  async disposeWorkspace(
    instanceId: string,
    options: { backup: boolean; backupLogs?: boolean },
  ): Promise<DisposeWorkspaceResult> {
    this.assertRunning();
    return this.track(
      this.lock.run(instanceId, async () => {
        const ws = this.workspaces.get(instanceId);
        if (!ws) {
          const tombstone = await this.store.loadTombstone(instanceId);
          if (tombstone) return this.resultOf(tombstone.disposal);
          throw new NotFoundError(`workspace '${instanceId}' does not exist on this node`);
        }
        if (ws.state.phase === 'initializing')
          throw new WorkspaceStateError(instanceId, 'still initializing', 'dispose it');
        const started = performance.now();
        let disposal = ws.state.disposal;
        if (!disposal) {
          this.stopPeriodic(ws);
          if (ws.state.phase === 'init-failed') {
            // Nothing trustworthy to back up; the last good backup (if any) stays as it is.
            disposal = { backupRequested: options.backup, recordedAt: new Date().toISOString() };
          } else {
            await this.persist(ws, { phase: 'disposing' });
            await Promise.allSettled([...ws.pending]);
            const status = await this.gitStatusOf(ws);
            if (options.backupLogs && this.backups && !ws.state.remoteStorageDisabled) {
              await this.backups.uploadLogs(
                ws.state.contentLocation,
                { owner: ws.state.owner, workspaceId: ws.state.workspaceId },
                instanceId,
              );
            }
            let backup: BackupRecord | undefined;
            if (options.backup && !ws.state.remoteStorageDisabled) {
              try {
                backup = await this.runBackup(ws, 'final');
              } catch (error) {
                // Content stays; a retried dispose backs up again.
                await this.persist(ws, { phase: 'ready' });
                this.schedulePeriodic(ws);
                this.options.metrics.finalizeSeconds.observe(
                  { backup: 'true', outcome: 'failure' },
                  (performance.now() - started) / 1000,
                );
                throw error;
              }
            }
            disposal = {
              backupRequested: options.backup,
              ...(backup ? { backup } : {}),
              ...(status ? { gitStatus: status } : {}),
              recordedAt: new Date().toISOString(),
            };
          }
          // Recorded before anything is deleted (invariant 2).
          await this.persist(ws, { phase: 'backed-up', disposal });
        }
        await this.deleteContent(ws);
        this.options.metrics.finalizeSeconds.observe(
          { backup: String(options.backup), outcome: 'success' },
          (performance.now() - started) / 1000,
        );
        return this.resultOf(disposal);
      }),
    );
  }

  private resultOf(disposal: DisposalRecord): DisposeWorkspaceResult {
    return {
      ...(disposal.gitStatus ? { gitStatus: disposal.gitStatus } : {}),
      ...(disposal.backup ? { backup: disposal.backup } : {}),
    };
  }

  private gitStatusOf(ws: Workspace): Promise<GitStatusSummary | undefined> {
    return gitStatusOfContent(this.git, ws.state, this.logger);
  }

  /** Removes content, quota and state, leaving a tombstone. Caller holds the workspace lock. */
  private async deleteContent(ws: Workspace): Promise<void> {
    const { state } = ws;
    await Promise.allSettled([...ws.pending]);
    if (state.phase !== 'deleting') await this.persist(ws, { phase: 'deleting' });
    await this.options.lifecycle?.deleting(state.instanceId);
    if (state.quota && state.quota.mode !== 'none') {
      await this.options.quota.release(state.instanceId, state.contentLocation, state.quota);
    }
    await rm(state.contentLocation, { recursive: true, force: true, maxRetries: 3 });
    await this.store.saveTombstone({
      version: 1,
      instanceId: state.instanceId,
      workspaceId: state.workspaceId,
      disposedAt: new Date().toISOString(),
      disposal: ws.state.disposal ?? { backupRequested: false, recordedAt: new Date().toISOString() },
    });
    await this.store.remove(state.instanceId);
    this.workspaces.delete(state.instanceId);
    // Freed only now: the content it owned is gone.
    if (state.hostUser) this.hostIds?.release(state.hostUser.uid);
    this.publish();
    this.events.next({ type: 'disposed', instanceId: state.instanceId });
    this.logger.info({ instanceId: state.instanceId }, 'workspace disposed');
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
        isRegistered: (id) => this.workspaces.has(id),
        store: this.store,
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
