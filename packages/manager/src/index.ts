/**
 * `@workbay/manager`: the WorkspaceManager service (`wsman.WorkspaceManager` over gRPC), its lifecycle core,
 * the built-in port proxy, the runtimes (`local`, `kubernetes`) and the `workbay` CLI.
 *
 * @example
 * ```ts
 * import { loadManagerConfig, startEmbedded } from '@workbay/manager';
 *
 * // Daemon (child process) + manager on 127.0.0.1:7720 + proxy on :7780 + metrics on :9501.
 * const running = await startEmbedded({ configPath: process.env.WORKBAY_CONFIG });
 * console.log(running.managerAddress);
 * process.once('SIGTERM', () => void running.stop());
 * ```
 *
 * @module
 */
export const packageName = '@workbay/manager';

// Config
export type { ManagerConfig, ManagerConfigInput, ResolvedClass, TimeoutSettings, TlsFiles } from './config.js';
export { ManagerConfigError, defaultManagerConfig, loadManagerConfig, resolveManagerConfig } from './config.js';

// Domain
export type {
  AdmissionLevel,
  DescribeResult,
  EnvVar,
  FeatureFlag,
  GitStatusInfo,
  IdeImage,
  InitializerMetricsInfo,
  MetadataFilter,
  PortSpec,
  StartWorkspaceInput,
  StartWorkspaceResult,
  StopPolicy,
  StopReason,
  TimeoutKind,
  WorkspaceClassInfo,
  WorkspaceConditions,
  WorkspacePhase,
  WorkspaceProgress,
  WorkspaceRecord,
  WorkspaceSpec,
  WorkspaceType,
} from './domain/types.js';
export { canTransition, matchesFilter } from './domain/status.js';
export type { TimeoutRule, TimeoutVerdict } from './domain/timeouts.js';
export { evaluateTimeout } from './domain/timeouts.js';

// Core
export type { ManagerCoreOptions } from './core/manager.js';
export { WorkspaceManagerCore } from './core/manager.js';
export type { MaintenanceState } from './core/maintenance.js';
export { MaintenanceMode } from './core/maintenance.js';
export type { StoreLoadResult, WorkspaceStore } from './store/file-store.js';
export type {
  ContentService,
  InitContentRequest,
  InitContentResult,
  InitProgressInfo,
} from './content/content-service.js';
export { DaemonContentService } from './content/daemon-content-service.js';
export type { SnapshotStore } from './content/snapshot-store.js';
export { RemoteStorageSnapshotStore, parseSnapshotHandle } from './content/snapshot-store.js';
export { ManagerMetrics } from './metrics.js';
export type { SheddingCounts } from './metrics.js';
export type { Logger, ManagerLoggerOptions } from './logger.js';
export { createLogger, createSilentLogger } from './logger.js';

// Edges
export type { ManagerServer, ManagerServerOptions } from './server.js';
export { startManagerServer, workspaceManagerServiceName } from './server.js';
export type { PortProxyOptions, ProxyRouter } from './proxy/port-proxy.js';
export type { ProxyLimits } from './proxy/connection-limits.js';
export { defaultProxyLimits } from './proxy/connection-limits.js';
export { PortProxy, ownerTokenHeader, ownerTokenQuery } from './proxy/port-proxy.js';
export type { TcpPressure } from './proxy/shedding.js';
export { ReservedEndpoints, maxExposedPorts } from './proxy/exposure.js';
export type { OpsServerOptions } from './http/ops-server.js';
export { OpsServer } from './http/ops-server.js';
export type { RunningManager, StartManagerOptions } from './app.js';
export { createRuntimeFromConfig, startManager } from './app.js';
export type { EmbeddedHandle, EmbeddedOptions } from './embedded.js';
export { DaemonSupervisor, resolveDaemonBin, startEmbedded } from './embedded.js';

// Runtimes
export type { LocalRuntimeConfig, LocalRuntimeConfigInput, LocalWorkspaceState } from './runtime/local/index.js';
export { LocalRuntime, localRuntimePlugin } from './runtime/local/index.js';
