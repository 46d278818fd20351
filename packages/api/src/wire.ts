/**
 * The wire types: messages, enums and service definitions exactly as ts-proto generates them from the
 * `.proto` files. Import from `@workbay/api/wire` when you build or read raw messages; the main entry point
 * has the typed clients, domain types and errors.
 *
 * - `wsman` (workspace manager) and `contentservice` (initializers) are re-exported flat: their names do not
 *   collide.
 * - `wsdaemon` and `iws` share message names with `wsman` (`TakeSnapshotRequest`, `WorkspaceMetadata`, ...),
 *   so they are exported as namespaces only: `wsdaemon.InitWorkspaceRequest`, `iws.WriteIDMappingRequest`.
 * - The generated callback-style grpc-js clients are renamed `*GrpcClient`; prefer the typed clients from
 *   `@workbay/api`.
 *
 * @module
 */
import * as contentservice from './generated/contentservice/initializer.js';
import * as iws from './generated/iws/workspace_daemon.js';
import * as wsdaemon from './generated/wsdaemon/daemon.js';
import * as wsman from './generated/wsman/core.js';

export { contentservice, iws, wsdaemon, wsman };

// wsman
export {
  AdmissionLevel,
  BackupWorkspaceRequest,
  BackupWorkspaceResponse,
  ControlAdmissionRequest,
  ControlAdmissionResponse,
  ControlPortRequest,
  ControlPortResponse,
  DeleteVolumeSnapshotRequest,
  DeleteVolumeSnapshotResponse,
  DescribeClusterRequest,
  DescribeClusterResponse,
  DescribeWorkspaceRequest,
  DescribeWorkspaceResponse,
  EnvironmentVariable,
  EnvironmentVariable_SecretKeyRef,
  ExposedPorts,
  GetWorkspacesRequest,
  GetWorkspacesResponse,
  GitSpec,
  IDEImage,
  ImageInfo,
  InitializerMetric,
  InitializerMetrics,
  MarkActiveRequest,
  MarkActiveResponse,
  MetadataFilter,
  MetadataFilter_AnnotationsEntry,
  Metrics,
  PortProtocol,
  PortSpec,
  PortVisibility,
  SSHPublicKeys,
  SetTimeoutRequest,
  SetTimeoutResponse,
  StartWorkspaceRequest,
  StartWorkspaceResponse,
  StartWorkspaceSpec,
  StopWorkspacePolicy,
  StopWorkspaceRequest,
  StopWorkspaceResponse,
  SubscribeRequest,
  SubscribeResponse,
  SubscribeResponse_HeaderEntry,
  TakeSnapshotRequest,
  TakeSnapshotResponse,
  TimeoutType,
  UpdateSSHKeyRequest,
  UpdateSSHKeyResponse,
  VolumeSnapshotInfo,
  WorkspaceAuthentication,
  WorkspaceClass,
  WorkspaceConditionBool,
  WorkspaceConditions,
  WorkspaceFeatureFlag,
  WorkspaceManagerService,
  WorkspaceMetadata,
  WorkspaceMetadata_AnnotationsEntry,
  WorkspacePhase,
  WorkspaceRuntimeInfo,
  WorkspaceSpec,
  WorkspaceStatus,
  WorkspaceType,
  WorkspaceManagerClient as WorkspaceManagerGrpcClient,
} from './generated/wsman/core.js';
export type { WorkspaceManagerServer } from './generated/wsman/core.js';

// contentservice
export {
  CloneTargetMode,
  CompositeInitializer,
  EmptyInitializer,
  FileDownloadInitializer,
  FileDownloadInitializer_FileInfo,
  FromBackupInitializer,
  GitAuthMethod,
  GitConfig,
  GitConfig_CustomConfigEntry,
  GitInitializer,
  GitStatus,
  PrebuildInitializer,
  SnapshotInitializer,
  WorkspaceInitializer,
} from './generated/contentservice/initializer.js';

// wsdaemon and iws: service definitions, server interfaces and raw clients (messages via the namespaces)
export {
  WorkspaceContentServiceService,
  WorkspaceContentServiceClient as WorkspaceContentServiceGrpcClient,
} from './generated/wsdaemon/daemon.js';
export type { WorkspaceContentServiceServer } from './generated/wsdaemon/daemon.js';
export {
  InWorkspaceServiceService,
  InWorkspaceServiceClient as InWorkspaceServiceGrpcClient,
  WorkspaceInfoServiceService,
  WorkspaceInfoServiceClient as WorkspaceInfoServiceGrpcClient,
} from './generated/iws/workspace_daemon.js';
export type { InWorkspaceServiceServer, WorkspaceInfoServiceServer } from './generated/iws/workspace_daemon.js';
