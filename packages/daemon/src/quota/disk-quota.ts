/**
 * Disk quotas per workspace. Three implementations, chosen by config (`quota.mode`, default `auto`):
 * - `xfs`: XFS project quotas on the working area (kernel-enforced). Needs an XFS working area mounted with
 *   `prjquota` and a kernel built with quota support. The kernels of Workbay's own CI machines have no quota
 *   support, so this mode is detected as unavailable there and never selected by `auto`.
 * - `loop`: each workspace gets its own ext4 image of the quota size, loop-mounted on its content directory
 *   (kernel-enforced: writes past the size fail with ENOSPC). Needs root, `mkfs.ext4` and loop devices.
 * - `watch`: a size watcher polls the content's usage and reports workspaces over their limit (not
 *   enforced by the kernel; the last fallback).
 */
import type { Observable } from 'rxjs';

export type QuotaMode = 'xfs' | 'loop' | 'watch' | 'none';

/** What a quota left behind for one workspace; persisted in the session state. */
export interface QuotaHandle {
  readonly mode: QuotaMode;
  readonly bytes: number;
  /** loop: the image file. */
  readonly image?: string;
  /** xfs: the project id. */
  readonly projectId?: number;
}

export interface QuotaUsage {
  readonly usedBytes: number;
  readonly limitBytes: number;
}

export interface QuotaExceeded {
  readonly workspaceId: string;
  readonly usedBytes: number;
  readonly limitBytes: number;
}

export interface DiskQuota {
  readonly mode: QuotaMode;
  /** Limits the (empty) directory `dir` to `bytes` before content is written. */
  apply(instanceId: string, dir: string, bytes: number): Promise<QuotaHandle>;
  /** Re-establishes the quota after a daemon restart (e.g. re-mounts a loop image that is not mounted). */
  restore(instanceId: string, dir: string, handle: QuotaHandle): Promise<void>;
  /** Removes the quota and frees what it held; the directory's content is gone or about to be. */
  release(instanceId: string, dir: string, handle: QuotaHandle): Promise<void>;
  usage(instanceId: string, dir: string, handle: QuotaHandle): Promise<QuotaUsage>;
  /**
   * Sets the workspace's disk IO limits (quota/io-throttle.ts) once its content is ready; the daemon's own writes
   * before are not the workspace's. Modes without a device of their own have none.
   */
  limitIo?(instanceId: string, dir: string, handle: QuotaHandle): Promise<void>;
  /** Lifts them (before the final backup, and at release). */
  liftIo?(instanceId: string, dir: string, handle: QuotaHandle): Promise<void>;
  /**
   * Makes kept content dormant (a disposal whose final backup failed keeps it on the node): nothing writes to it until
   * {@link wake}, so it holds no disk beyond what it already uses (loop: its image is remounted read-only and leaves
   * the admission's promises). False when it cannot be made dormant: it keeps its whole promise then.
   */
  makeDormant?(instanceId: string, dir: string, handle: QuotaHandle): Promise<boolean>;
  /**
   * Makes dormant content writable again (its owner resumes it), once the disk can back the rest of its quota again;
   * otherwise throws `DiskOvercommitError` with the content left dormant. Content that is not dormant: nothing to do.
   */
  wake?(instanceId: string, dir: string, handle: QuotaHandle): Promise<void>;
  /** Workspaces seen over their limit (only modes that cannot enforce it report here). */
  readonly exceeded$: Observable<QuotaExceeded>;
  close(): Promise<void>;
}

export interface QuotaSupport {
  readonly mode: QuotaMode;
  readonly available: boolean;
  /** Why a mode is not available. */
  readonly reason?: string;
}
