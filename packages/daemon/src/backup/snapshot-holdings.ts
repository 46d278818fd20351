/**
 * What an owner holds in snapshots, read from the storage itself: the figure then counts the snapshots every node
 * took and survives restarts, which a counter in one daemon would not.
 */
import type { BucketLayout, RemoteStorage } from '@workbay/api';
import { locateOwner } from '@workbay/api';
import type { WorkspaceStorageRef } from './backup-store.js';

export interface SnapshotHoldings {
  /** Snapshots of the owner, across its workspaces. */
  readonly ownerSnapshots: number;
  /** Their bytes in storage. */
  readonly ownerBytes: number;
  /** Snapshots of the one workspace (meta id) asked about. */
  readonly workspaceSnapshots: number;
}

/** A snapshot's name below the owner's prefix, as `snapshotObjectName` writes it; group 1 is the workspace id. */
const snapshotName = /^workspaces\/([^/]+)\/snapshot-[0-9]{1,30}\.tar$/;

/**
 * Lists the owner's `workspaces/` objects (its backups' packs too: a listing cannot skip them) and adds up its
 * snapshots. A missing bucket holds nothing.
 */
export async function snapshotHoldings(
  storage: RemoteStorage,
  layout: BucketLayout,
  ref: WorkspaceStorageRef,
  signal?: AbortSignal,
): Promise<SnapshotHoldings> {
  const location = locateOwner(layout, ref.owner);
  let ownerSnapshots = 0;
  let ownerBytes = 0;
  let workspaceSnapshots = 0;
  if (!(await storage.bucketExists(location.bucket))) return { ownerSnapshots, ownerBytes, workspaceSnapshots };
  const prefix = `${location.prefix}workspaces/`;
  for await (const info of storage.list(location.bucket, { prefix, ...(signal ? { signal } : {}) })) {
    const match = snapshotName.exec(info.name.slice(location.prefix.length));
    if (!match) continue;
    ownerSnapshots++;
    ownerBytes += info.size;
    if (match[1] === ref.workspaceId) workspaceSnapshots++;
  }
  return { ownerSnapshots, ownerBytes, workspaceSnapshots };
}
