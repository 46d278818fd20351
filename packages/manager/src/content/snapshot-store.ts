/**
 * Deleting snapshots (DeleteVolumeSnapshot) in a storage the manager reaches itself: when `storage` (and its plugin
 * in `plugins`) is configured, the manager creates that backend and deletes the object there. Without it, the
 * daemon deletes (its DeleteSnapshot extension RPC, see `ContentService.deleteSnapshot`).
 *
 * @module
 */
import { InvalidArgumentError, parseQualifiedObject } from '@workbay/api';
import type { RemoteStorage } from '@workbay/api';

export interface SnapshotStore {
  /** Deletes the snapshot; resolves false when it does not exist. */
  deleteSnapshot(bucket: string, name: string): Promise<boolean>;
  close(): Promise<void>;
}

/** Only snapshot objects may be deleted through this RPC, never a workspace's backup. */
const snapshotName = /^(?:[^/]+\/)?workspaces\/[A-Za-z0-9][A-Za-z0-9._-]*\/snapshot-[0-9]+\.tar$/;

/** Parses a `<object>@<bucket>` handle and checks that it names a snapshot. */
export function parseSnapshotHandle(handle: string, field = 'volume_handle'): { bucket: string; name: string } {
  if (!handle) throw new InvalidArgumentError(field, 'is required');
  const parsed = parseQualifiedObject(handle, field);
  if (!snapshotName.test(parsed.name)) {
    throw new InvalidArgumentError(
      field,
      `'${parsed.name}' is not a snapshot object (expected [<owner>/]workspaces/<id>/snapshot-<n>.tar)`,
    );
  }
  return parsed;
}

export class RemoteStorageSnapshotStore implements SnapshotStore {
  constructor(private readonly storage: RemoteStorage) {}

  async deleteSnapshot(bucket: string, name: string): Promise<boolean> {
    const info = await this.storage.stat(bucket, name);
    if (!info) return false;
    const deleted = await this.storage.delete(bucket, { name });
    return deleted > 0;
  }

  async close(): Promise<void> {
    await this.storage.close?.();
  }
}
