/**
 * `@workbay/daemon`: the workspace daemon. It serves `wsdaemon.WorkspaceContentService` (content
 * initialization, backups, snapshots, disposal) and keeps a workspace's files through every stop, crash and
 * restart. Use it as a service (`workbay-daemon`) or in-process:
 *
 * @example
 * ```ts
 * import { createDaemon } from '@workbay/daemon';
 *
 * const daemon = await createDaemon({
 *   workingArea: '/var/lib/workbay/workspaces',
 *   grpc: { address: '127.0.0.1:0' },
 *   storage: { kind: 'fs', root: '/var/lib/workbay/storage' },
 * }).start();
 * console.log(daemon.address); // 127.0.0.1:<port>
 * await daemon.stop();
 * ```
 *
 * The built-in `fs` storage backend is exported for other hosts and for the conformance suite in
 * `@workbay/testing`: `fsStoragePlugin`, `FsRemoteStorage`.
 *
 * @module
 */

// The daemon
export type { Daemon, DaemonOverrides, DaemonState } from './daemon.js';
export { createDaemon } from './daemon.js';
export type { DaemonConfig, DaemonConfigInput } from './config.js';
export type { AddressRules, DownloadPolicy } from './initializer/address-policy.js';
export type { EgressRules, UpstreamProxy } from './initializer/upstream-proxy.js';
export { parseUpstreamProxy } from './initializer/upstream-proxy.js';
// The zod schemas stay internal: their inferred types are not a stable public surface (parse through the functions).
export { parseDaemonConfig, loadDaemonConfig } from './config.js';
export type {
  BackupReason,
  BackupSettings,
  ContentEvent,
  ContentLifecycleHooks,
  ContentServiceOptions,
  DisposeWorkspaceResult,
  InitWorkspaceInput,
  InitWorkspaceResult,
  WorkspaceInfo,
} from './content-service.js';
export { WorkspaceContentService } from './content-service.js';
export type { SnapshotLimits } from './content/snapshot-budget.js';
export { snapshotLimitDefaults } from './content/snapshot-budget.js';
export {
  ArchiveEscapeError,
  DataCorruptionError,
  DiskOvercommitError,
  GitAccessDeniedError,
  GitAddressRefusedError,
  GitAuthenticationError,
  NoBackupFoundError,
  WorkspaceStateError,
} from './errors.js';

// Initializers (domain form of contentservice.WorkspaceInitializer)
export type {
  ContentSource,
  DownloadFileSpec,
  GitAuth,
  GitInitializerSpec,
  InitializerMetric,
  InitializerMetricType,
  InitializerSpec,
} from './initializer/types.js';
export type { InitProgress } from './initializer/progress.js';
export type { GitStatusSummary } from './git/git-status.js';
export type { BackupRecord, ContentPhase, DisposalRecord, SessionState } from './session/session-store.js';
export type { HostIdRange } from './session/host-ids.js';

// Storage: the built-in fs backend and the backup formats
export type { FsStorageOptions } from './storage/fs-storage.js';
export { FsRemoteStorage } from './storage/fs-storage.js';
export type { FsStorageConfig } from './storage/fs-plugin.js';
export { fsStorageBackend, fsStoragePlugin } from './storage/fs-plugin.js';
export type { PresignServerOptions } from './storage/presign-server.js';
export type {
  ArchiveReadOptions,
  BackupFormat,
  BackupOptions,
  BackupResult,
  BackupStoreOptions,
  RestoreOptions,
  RestoreResult,
  SnapshotResult,
  StoredBackup,
  WorkspaceStorageRef,
} from './backup/backup-store.js';
export { BackupStore, BackupSupersededError, readyMarkerPath } from './backup/backup-store.js';
export type { XattrReader } from './archive/xattr.js';
export type { BackupManifest, ManifestEntry } from './backup/manifest.js';
export type { ChunkerOptions } from './backup/chunker.js';

// Archives
export type { Compression } from './archive/compression.js';
export type { ExtractOptions, ExtractStats } from './archive/extract.js';
export type { PackedTree, PackOptions, PackStats } from './archive/tar.js';
export type { DroppedEntries, EntryPolicyOptions } from './archive/entry-policy.js';
export { extractTree } from './archive/extract.js';
export { packTree } from './archive/tar.js';
export type { EntryType, TreeEntry } from './archive/tree.js';
export { entryTypes } from './archive/tree.js';

// Node resources
export type { DiskQuota, QuotaExceeded, QuotaHandle, QuotaMode, QuotaSupport, QuotaUsage } from './quota/disk-quota.js';
export {
  LoopDiskQuota,
  NoDiskQuota,
  WatchDiskQuota,
  XfsDiskQuota,
  createDiskQuota,
  loopAdmissionDefaults,
  probeQuotaSupport,
} from './quota/quotas.js';
export type { AdmissionSnapshot, LoopAdmissionSettings } from './quota/quotas.js';
export { BlkioThrottle, ioLimitDefaults, probeIoThrottle } from './quota/io-throttle.js';
export type { IoLimits } from './quota/io-throttle.js';
export type { FilesystemStats, HostCapabilities, HostOps, MountInfo } from './host-ops/host-ops.js';
export { createHostOps } from './host-ops/host-ops.js';
export type { DiskGuardOptions, DiskGuardStatus } from './health/disk-guard.js';
export { DiskGuard } from './health/disk-guard.js';
export { DaemonMetrics } from './health/metrics.js';
export type { BackupWorkerHealth } from './health/metrics.js';

// In-workspace service (iws.InWorkspaceService and iws.WorkspaceInfoService): see src/iws/README.md
export type {
  CgroupAccess,
  FloodGuardConfig,
  FloodGuardOptions,
  FloodOffence,
  FloodPenalty,
  IdRange,
  InWorkspaceServiceDeps,
  IwsConfig,
  IwsListenOptions,
  IwsServerHandle,
  IwsWorkspaceContext,
  NamespaceOps,
  PrepareForUserNsResult,
  RateLimitRule,
  Suspendable,
  WorkspaceResources,
} from './iws/index.js';
export {
  FloodGuard,
  InWorkspaceOperations,
  RateLimiter,
  USER_CGROUP,
  WORKSPACE_CGROUP,
  createInWorkspaceService,
  createWorkspaceInfoService,
  defaultIwsConfig,
  iwsRateLimits,
  listenIws,
} from './iws/index.js';
