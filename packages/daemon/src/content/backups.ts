/**
 * Backups and snapshots of the content service: explicit, periodic and final backups under the node-wide
 * concurrency limit, snapshots (answered early with `returnImmediately`), and their deletion. Only `ready`
 * content is backed up, and a final backup also `disposing` content (invariant 2, checked by content-checks).
 */
import type { BackupStore } from '../backup/backup-store.js';
import { FailedPreconditionError, errorMessage } from '../errors.js';
import type { BackupRecord } from '../session/session-store.js';
import { OwnerSlots } from '@workbay/api';
import type { UploadDeps } from './backup-run.js';
import { uploadBackup, uploadSnapshot } from './backup-run.js';
import { assertBackupable, assertContentPresent } from './content-checks.js';
import { splitQualified } from './ownership.js';
import { SnapshotBudget, snapshotLimitDefaults } from './snapshot-budget.js';
import type { ContentPartDeps, Workspace } from './registry.js';
import type { BackupReason, ContentServiceOptions } from './types.js';

export interface WorkspaceBackupsDeps extends ContentPartDeps {
  readonly options: Pick<ContentServiceOptions, 'backup' | 'metrics' | 'hostOps' | 'snapshots' | 'quota'>;
  /** True once the service is stopping: no new periodic backups are scheduled. */
  readonly stopping: () => boolean;
}

export class WorkspaceBackups {
  private readonly slots: OwnerSlots;
  /** Bounds on snapshots (none without storage, where there are no snapshots). */
  private readonly budget: SnapshotBudget | undefined;
  /** Snapshot uploads still running, by `<object>@<bucket>`: a deletion waits for them. */
  private readonly uploadingSnapshots = new Map<string, Promise<unknown>>();

  constructor(private readonly deps: WorkspaceBackupsDeps) {
    const { concurrency, concurrencyPerOwner } = deps.options.backup;
    // By default one owner may hold all slots but one, so another owner's backup never waits behind all of them;
    // with one or two slots in all, a reserve would halve what a single-owner node (a developer's machine) gets.
    this.slots = new OwnerSlots(concurrency, concurrencyPerOwner ?? (concurrency >= 3 ? concurrency - 1 : concurrency));
    this.budget =
      deps.backups &&
      new SnapshotBudget(deps.options.snapshots ?? snapshotLimitDefaults, deps.backups, deps.options.quota);
  }

  private assertBackupable(ws: Workspace, operation: string, allowDisposing = false): BackupStore {
    return assertBackupable(ws.state, this.deps.backups, operation, allowDisposing);
  }

  private assertContentPresent(ws: Workspace, operation: string): Promise<void> {
    return assertContentPresent(ws.state, this.deps.options.hostOps, this.deps.logger, operation);
  }

  private get uploads(): UploadDeps {
    const { backup, metrics } = this.deps.options;
    return {
      slots: this.slots,
      metrics,
      logger: this.deps.logger,
      attempts: backup.attempts,
      initialBackoffMs: backup.initialBackoffMs,
    };
  }

  /** Runs one backup with the node-wide concurrency limit and retries. Caller holds the workspace lock. */
  async run(ws: Workspace, reason: BackupReason): Promise<BackupRecord> {
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
      await this.deps.registry.persist(ws, {
        lastBackup: record,
        // What the next backup may replace; or, stored under a workspace id of its own, where the next ones go.
        backupBase: result.backupId,
        ...(result.workspaceId !== ws.state.workspaceId ? { backupWorkspaceId: result.workspaceId } : {}),
      });
      this.deps.emit({ type: 'backed-up', instanceId: ws.state.instanceId, reason, url: result.url });
      return record;
    } catch (error) {
      this.deps.emit({ type: 'backup-failed', instanceId: ws.state.instanceId, reason, error: errorMessage(error) });
      throw error;
    }
  }

  /** BackupWorkspace: one backup now, under the workspace's lock. */
  backupWorkspace(instanceId: string): Promise<BackupRecord> {
    const { registry } = this.deps;
    const ws = registry.require(instanceId);
    return registry.track(registry.lock.run(instanceId, () => this.run(ws, 'explicit')));
  }

  /**
   * Takes a snapshot (`snapshot-<unixnano>.tar`); resolves with `<object>@<bucket>`. With `returnImmediately`
   * it answers as soon as the name is known and uploads in the background.
   */
  async takeSnapshot(instanceId: string, options: { returnImmediately?: boolean } = {}): Promise<string> {
    const ws = this.deps.registry.require(instanceId);
    const backups = this.assertBackupable(ws, 'take a snapshot');
    await this.assertContentPresent(ws, 'take a snapshot');
    const { release, maxBytes } = await (this.budget as SnapshotBudget).admit(ws.state);
    const ref = { owner: ws.state.owner, workspaceId: ws.state.workspaceId };
    const target = backups.snapshotName(ref);
    const upload = this.deps.registry.track(uploadSnapshot(this.uploads, backups, ws.state, target, maxBytes));
    ws.pending.add(upload);
    this.uploadingSnapshots.set(target.url, upload);
    const settled = (): void => {
      release();
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
    const backups = this.deps.backups;
    if (!backups) throw new FailedPreconditionError('this daemon has no remote storage; it holds no snapshots');
    splitQualified(qualified, 'snapshot'); // bounded before anything quotes it
    const { bucket, name } = backups.parseSnapshotName(qualified, 'snapshot');
    const uploading = this.uploadingSnapshots.get(qualified);
    if (uploading) await Promise.allSettled([uploading]);
    await this.deps.registry.track(backups.deleteSnapshot(qualified, 'snapshot'));
    this.deps.logger.info({ bucket, name }, 'snapshot deleted');
  }

  /** Arms the next periodic backup of a `ready` workspace (re-armed after each, whatever its outcome). */
  schedulePeriodic(ws: Workspace): void {
    const { registry, options } = this.deps;
    const period = options.backup.periodMs;
    if (period <= 0 || !this.deps.backups || ws.state.remoteStorageDisabled || this.deps.stopping()) return;
    this.stopPeriodic(ws);
    ws.periodic = setTimeout(() => {
      ws.periodic = undefined;
      void registry
        .track(
          registry.lock.run(ws.state.instanceId, async () => {
            if (ws.state.phase !== 'ready' || !registry.isCurrent(ws)) return;
            await this.run(ws, 'periodic');
          }),
        )
        .catch(() => undefined) // logged and counted in run()
        .finally(() => {
          if (ws.state.phase === 'ready' && registry.isCurrent(ws)) this.schedulePeriodic(ws);
        });
    }, period);
    ws.periodic.unref();
  }

  stopPeriodic(ws: Workspace): void {
    if (ws.periodic) clearTimeout(ws.periodic);
    ws.periodic = undefined;
  }
}
