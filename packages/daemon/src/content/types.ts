/**
 * The public types of the content service: its options, results, snapshot and events (kept apart from the
 * service so that the service reads as behaviour).
 */
import type { BucketLayout, PluginLogger, RemoteStorage } from '@workbay/api';
import type { Compression } from '../archive/compression.js';
import type { BackupFormat } from '../backup/backup-store.js';
import type { GitPolicy } from '../git/git-policy.js';
import type { GitStatusSummary } from '../git/git-status.js';
import type { DiskGuard } from '../health/disk-guard.js';
import type { DaemonMetrics } from '../health/metrics.js';
import type { HostOps } from '../host-ops/host-ops.js';
import type { ContentSource, InitializerMetric } from '../initializer/types.js';
import type { DownloadPolicy } from '../initializer/address-policy.js';
import type { DiskQuota } from '../quota/disk-quota.js';
import type { SnapshotLimits } from './snapshot-budget.js';
import type { HostIdRange } from '../session/host-ids.js';
import type { BackupRecord, ContentPhase } from '../session/session-store.js';

export interface BackupSettings {
  readonly format: BackupFormat;
  readonly compression: Compression;
  /** Backups (and snapshots) running at once on this node. */
  readonly concurrency: number;
  /** Of those, the most one owner's workspaces may run at once (default: all but one, from 3 on). */
  readonly concurrencyPerOwner?: number;
  /** Chunked restores running at once (default 3), one owner's at most all but one of them. */
  readonly restoreConcurrency?: number;
  /** Tries per backup, including the first. */
  readonly attempts: number;
  readonly initialBackoffMs: number;
  /** Periodic backups of running workspaces; 0 turns them off. */
  readonly periodMs: number;
  readonly packSize?: number;
  readonly uploadConcurrency?: number;
  readonly xattrs?: boolean;
  /**
   * Workspaces of one owner whose content a failed final backup keeps on this node, at most: past it, the owner's
   * new workspaces are refused (RESOURCE_EXHAUSTED). 0 or absent: no bound.
   */
  readonly maxKeptPerOwner?: number;
}

export interface ContentServiceOptions {
  readonly workingArea: string;
  /** Remote storage; without it, workspaces must set `remoteStorageDisabled`. */
  readonly storage?: RemoteStorage;
  readonly layout: BucketLayout;
  readonly backup: BackupSettings;
  /** Bounds on the snapshots workspaces take (default `snapshotLimitDefaults`). */
  readonly snapshots?: SnapshotLimits;
  readonly initializer: {
    readonly gitRetryInitialMs: number;
    readonly gitRetryMaxMs: number;
    readonly downloadTimeoutMs: number;
    /**
     * The whole initialization, every retry included (0: none): a remote that stays just above git's low-speed limit
     * otherwise holds the start for as long as its commands' deadlines allow, one after another.
     */
    readonly timeoutMs?: number;
    /** Where downloads and one-time git secret fetches may connect (default: no loopback or private addresses). */
    readonly download?: DownloadPolicy;
  };
  /** Git rules (local remotes, timeouts); default: only https/http/ssh/git remotes. */
  readonly git?: Partial<GitPolicy>;
  readonly quota: DiskQuota;
  /** Quota for workspaces that do not ask for one (0: none). */
  readonly defaultQuotaBytes: number;
  readonly diskGuard: DiskGuard;
  readonly metrics: DaemonMetrics;
  readonly logger: PluginLogger;
  readonly hostOps: HostOps;
  readonly housekeeping: { readonly intervalMs: number; readonly orphanAgeMs: number; readonly tombstoneTtlMs: number };
  /** How long `stop()` waits for running operations. */
  readonly shutdownTimeoutMs?: number;
  /** Awaited at two points of a workspace's life; the daemon serves the in-workspace service from here. */
  readonly lifecycle?: ContentLifecycleHooks;
  /**
   * Host uids/gids for workspaces (isolation contract); used only when the daemon runs as root. Default:
   * 200000, 65536 ids.
   */
  readonly workspaceIds?: HostIdRange;
  /** Restores create device nodes and FIFOs and keep set-id bits (default false). */
  readonly allowSpecialFiles?: boolean;
  /** Whether the daemon runs as root (default: `process.getuid() === 0`); tests may say no. */
  readonly runsAsRoot?: boolean;
}

/** Hooks into a workspace's life (the daemon's per-workspace in-workspace service socket uses them). */
export interface ContentLifecycleHooks {
  /** The content is ready, before InitWorkspace answers; a failure fails the initialization. */
  contentReady(workspace: {
    readonly instanceId: string;
    readonly workspaceId: string;
    readonly contentLocation: string;
    /** The workspace's host identity (owner of the content) when the daemon runs as root. */
    readonly hostUser?: { readonly uid: number; readonly gid: number };
  }): Promise<void>;
  /** The content is about to be deleted (dispose, or a deletion resumed after a restart); a failure fails it. */
  deleting(instanceId: string): Promise<void>;
}

export interface InitWorkspaceResult {
  readonly contentLocation: string;
  readonly source: ContentSource;
  readonly metrics: readonly InitializerMetric[];
}

export interface DisposeWorkspaceResult {
  readonly gitStatus?: GitStatusSummary;
  readonly backup?: BackupRecord;
}

export interface WorkspaceInfo {
  readonly instanceId: string;
  readonly workspaceId: string;
  readonly owner: string;
  readonly phase: ContentPhase;
  readonly contentLocation: string;
  readonly lastBackupAt?: string;
  readonly quotaBytes?: number;
}

export type ContentEvent =
  | { readonly type: 'initialized'; readonly instanceId: string; readonly source: ContentSource }
  | { readonly type: 'init-failed'; readonly instanceId: string; readonly error: string }
  | { readonly type: 'backed-up'; readonly instanceId: string; readonly reason: BackupReason; readonly url: string }
  | {
      readonly type: 'backup-failed';
      readonly instanceId: string;
      readonly reason: BackupReason;
      readonly error: string;
    }
  | { readonly type: 'disposed'; readonly instanceId: string }
  | {
      readonly type: 'quota-exceeded';
      readonly instanceId: string;
      readonly usedBytes: number;
      readonly limitBytes: number;
    };

export type BackupReason = 'explicit' | 'periodic' | 'final';
