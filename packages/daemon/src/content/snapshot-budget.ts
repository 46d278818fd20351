/**
 * Admission of snapshots. A snapshot is a full copy that stays in storage until someone deletes it, and a workspace
 * asks for as many as it likes: unbounded, one workspace added 1 GB to the node's disk every 5 s (red team round 9,
 * S1), and a full disk fails every owner's final backup. So each snapshot is checked before it is taken, against
 * what the owner already holds in storage (every node's snapshots: `snapshotHoldings`) and what the storage has
 * left. Only snapshots are refused: backups keep work, and refusing one would lose it (invariant 1).
 */
import type { RemoteStorage } from '@workbay/api';
import type { BackupStore } from '../backup/backup-store.js';
import { snapshotHoldings } from '../backup/snapshot-holdings.js';
import { ResourceExhaustedError } from '../errors.js';
import type { DiskQuota } from '../quota/disk-quota.js';
import type { SessionState } from '../session/session-store.js';
import { treeBytes } from '../util/du.js';

/** Bounds on the snapshots a node's workspaces take (config `snapshots`). */
export interface SnapshotLimits {
  /** Snapshots one workspace (meta id) keeps in storage; 0: no bound. */
  readonly maxPerWorkspace: number;
  /** Bytes of snapshots one owner keeps in storage, over its workspaces and every node; 0: no bound. */
  readonly maxBytesPerOwner: number;
  /**
   * Snapshots of one owner being taken on this node at once. Their sizes are known only once uploaded, so this
   * bounds how far the owner can pass the byte bound: by this many workspaces' content.
   */
  readonly maxTakingPerOwner: number;
  /**
   * Free bytes a storage that shares the node's disk (one that answers `availableBytes`) keeps after a snapshot
   * of the workspace's current size: the room final backups need. 0: no reserve.
   */
  readonly storageReserveBytes: number;
}

const GiB = 1024 ** 3;

/** The config's defaults for {@link SnapshotLimits}. */
export const snapshotLimitDefaults: SnapshotLimits = Object.freeze({
  maxPerWorkspace: 20,
  maxBytesPerOwner: 20 * GiB,
  maxTakingPerOwner: 2,
  storageReserveBytes: 2 * GiB,
});

/** Snapshots of one node, admitted under {@link SnapshotLimits}. */
export class SnapshotBudget {
  /** Snapshots being checked or uploaded on this node, by owner. */
  private readonly taking = new Map<string, number>();

  constructor(
    private readonly limits: SnapshotLimits,
    private readonly backups: BackupStore,
    private readonly quota: DiskQuota,
  ) {}

  /**
   * Admits a snapshot of the workspace or throws RESOURCE_EXHAUSTED saying which bound it met and how to make
   * room. Resolves with the release, called once the snapshot's upload settled.
   */
  async admit(state: SessionState): Promise<() => void> {
    const owner = state.owner;
    const taking = this.taking.get(owner) ?? 0;
    if (this.limits.maxTakingPerOwner > 0 && taking >= this.limits.maxTakingPerOwner) {
      throw new ResourceExhaustedError(
        `${taking} snapshots of owner '${owner}' are being taken on this node (at most ${this.limits.maxTakingPerOwner} at once); retry once one finished`,
      );
    }
    this.taking.set(owner, taking + 1);
    let released = false;
    const release = (): void => {
      if (released) return;
      released = true;
      const left = (this.taking.get(owner) ?? 1) - 1;
      if (left > 0) this.taking.set(owner, left);
      else this.taking.delete(owner);
    };
    try {
      await this.check(state);
      return release;
    } catch (error) {
      release();
      throw error;
    }
  }

  private async check(state: SessionState): Promise<void> {
    const { maxPerWorkspace, maxBytesPerOwner, storageReserveBytes } = this.limits;
    const ref = { owner: state.owner, workspaceId: state.workspaceId };
    if (maxPerWorkspace > 0 || maxBytesPerOwner > 0) {
      const held = await snapshotHoldings(this.backups.storage, this.backups.layout, ref);
      if (maxPerWorkspace > 0 && held.workspaceSnapshots >= maxPerWorkspace) {
        throw new ResourceExhaustedError(
          `workspace '${state.workspaceId}' already has ${held.workspaceSnapshots} snapshots (at most ${maxPerWorkspace}); delete some first`,
        );
      }
      if (maxBytesPerOwner > 0 && held.ownerBytes >= maxBytesPerOwner) {
        throw new ResourceExhaustedError(
          `owner '${state.owner}' holds ${held.ownerBytes} bytes in ${held.ownerSnapshots} snapshots (at most ${maxBytesPerOwner}); delete some first`,
        );
      }
    }
    const storage: RemoteStorage = this.backups.storage;
    if (storageReserveBytes > 0 && storage.availableBytes) {
      const bucket = this.backups.target(ref).bucket;
      const available = await storage.availableBytes(bucket);
      const size = await this.contentBytes(state);
      if (available !== undefined && available - size < storageReserveBytes) {
        // Neither figure is told: the size comes from a walk of content the workspace controls.
        throw new ResourceExhaustedError(
          `the node's storage keeps its last ${storageReserveBytes} bytes for final backups, and a snapshot of this workspace would reach into them; delete snapshots or free space first`,
        );
      }
    }
  }

  /**
   * About how large a snapshot of the content will be: what its quota counts (its image's blocks), else a walk
   * of the tree (`du`).
   */
  private async contentBytes(state: SessionState): Promise<number> {
    if (state.quota) return (await this.quota.usage(state.instanceId, state.contentLocation, state.quota)).usedBytes;
    return treeBytes(state.contentLocation);
  }
}
