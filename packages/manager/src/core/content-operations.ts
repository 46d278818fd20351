/**
 * The RPCs that act on a workspace's content through the daemon (or the snapshot store): TakeSnapshot,
 * BackupWorkspace, DeleteVolumeSnapshot, UpdateSSHKey. Each validates, calls, and records the result through the
 * repository.
 *
 * @module
 */
import { FailedPreconditionError, InvalidArgumentError, NotFoundError, isWorkbayError } from '@workbay/api';
import type { ContentService } from '../content/content-service.js';
import type { SnapshotStore } from '../content/snapshot-store.js';
import { parseSnapshotHandle } from '../content/snapshot-store.js';
import { withConditions } from '../domain/status.js';
import type { WorkspaceRecord } from '../domain/types.js';
import { truncate, validateInstanceId, validateSshKey } from '../domain/validation.js';
import type { Logger } from '../logger.js';
import type { ManagerMetrics } from '../metrics.js';
import { labelsOf } from './lifecycle/effects.js';
import type { MaintenanceMode } from './maintenance.js';
import { contentDirOf } from './records.js';
import type { WorkspaceRepository } from './repository.js';
import { writeAuthorizedKeys } from './ssh-keys.js';

export interface ContentOperationsDeps {
  readonly repo: WorkspaceRepository;
  readonly content: ContentService;
  readonly snapshots?: SnapshotStore;
  readonly maintenance: MaintenanceMode;
  readonly metrics?: ManagerMetrics;
  readonly logger: Logger;
  readonly workingArea: string;
}

/** The workspace, or NOT_FOUND (INVALID_ARGUMENT for a malformed id). */
export function requireWorkspace(repo: WorkspaceRepository, id: string, field = 'id'): WorkspaceRecord {
  validateInstanceId(id, field);
  const record = repo.get(id);
  if (!record) throw new NotFoundError(`workspace ${truncate(id)} does not exist`);
  return record;
}

export function assertNoMaintenance(maintenance: MaintenanceMode, what: string): void {
  if (maintenance.isEnabled()) {
    throw new FailedPreconditionError(`the manager is under maintenance: ${what} is not possible right now`);
  }
}

export class ContentOperations {
  constructor(private readonly deps: ContentOperationsDeps) {}

  private update(id: string, change: (record: WorkspaceRecord) => WorkspaceRecord): void {
    const current = this.deps.repo.get(id);
    if (current) this.deps.repo.commit(current, change(current));
  }

  /** TakeSnapshot: the workspace must be running; returns `<object>@<bucket>`. */
  async takeSnapshot(id: string, returnImmediately: boolean): Promise<string> {
    const record = requireWorkspace(this.deps.repo, id);
    assertNoMaintenance(this.deps.maintenance, 'taking a snapshot');
    if (record.phase !== 'running') {
      throw new FailedPreconditionError(
        `workspace ${truncate(id)} must be running to take a snapshot (it is ${record.phase})`,
      );
    }
    const url = await this.deps.content.takeSnapshot(id, returnImmediately);
    this.update(id, (r) => withConditions(r, { snapshot: url }));
    this.deps.logger.info({ workspace: id, snapshot: url }, 'snapshot taken');
    return url;
  }

  /** BackupWorkspace: a backup of a running workspace's content. */
  async backupWorkspace(id: string): Promise<string> {
    const record = requireWorkspace(this.deps.repo, id);
    if (record.phase !== 'running' || !record.progress.contentReady) {
      throw new FailedPreconditionError(
        `workspace ${truncate(id)} must be running to be backed up (it is ${record.phase})`,
      );
    }
    const labels = labelsOf(record);
    try {
      const url = await this.deps.content.backupWorkspace(id);
      this.deps.metrics?.backupsTotal.inc(labels);
      this.deps.logger.info({ workspace: id, backup: url }, 'backup taken');
      return url;
    } catch (error) {
      // Counted, then passed on to the caller unchanged.
      this.deps.metrics?.backupFailuresTotal.inc(labels);
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
    const deleted = this.deps.snapshots
      ? await this.deps.snapshots.deleteSnapshot(bucket, name)
      : await this.deps.content.deleteSnapshot(volumeHandle).catch((error: unknown): never => {
          // Translated for the caller (the daemon's field names and capabilities are not the manager's); rethrown.
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
    if (!deleted && !softDelete) throw new NotFoundError(`snapshot ${truncate(volumeHandle)} does not exist`);
    if (deleted) this.deps.logger.info({ snapshot: volumeHandle }, 'snapshot deleted');
    return deleted;
  }

  /** UpdateSSHKey: replaces the authorised keys and writes them into the workspace. */
  async updateSshKeys(id: string, keys: readonly string[]): Promise<void> {
    validateInstanceId(id, 'id');
    if (keys.length === 0) throw new InvalidArgumentError('keys', 'at least one key is required');
    keys.forEach((key, i) => validateSshKey(key, `keys[${i}]`));
    const record = requireWorkspace(this.deps.repo, id);
    if (!record.progress.contentReady || (record.phase !== 'running' && record.phase !== 'initializing')) {
      throw new FailedPreconditionError(
        `workspace ${truncate(id)} has no content to write keys to (it is ${record.phase})`,
      );
    }
    const trimmed = keys.map((k) => k.trim());
    await writeAuthorizedKeys(contentDirOf(record, this.deps.workingArea), trimmed);
    this.update(id, (r) => ({ ...r, spec: { ...r.spec, sshPublicKeys: trimmed } }));
  }
}
