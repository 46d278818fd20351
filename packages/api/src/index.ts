/**
 * `@workbay/api`: the contracts every Workbay package and plugin shares.
 *
 * - **Wire contracts**: the gRPC services `wsman.WorkspaceManager`, `wsdaemon.WorkspaceContentService`,
 *   `iws.InWorkspaceService` and `iws.WorkspaceInfoService` (service definitions and server interfaces here;
 *   all messages under the `wsman`, `wsdaemon`, `iws` and `contentservice` namespaces, or flat from
 *   `@workbay/api/wire`). The `.proto` files ship with the package: see {@link protoRoot}.
 * - **Typed clients**: promise-based unary calls, async-iterable and Observable server streams, deadlines and
 *   cancellation, failures as domain errors.
 * - **Server helpers**: {@link unaryHandler} and {@link serverStreamHandler} map thrown errors to gRPC status.
 * - **Domain errors** ({@link WorkbayError} and subclasses) and their gRPC mapping.
 * - **Domain types**: string unions for the wire enums with checked converters, Go duration strings.
 * - **Plugin SPI**: {@link RemoteStorage}, {@link WorkspaceRuntime}, {@link PluginHost} and {@link createPlugin}.
 *
 * @example
 * ```ts
 * import { createWorkspaceManagerClient, NotFoundError, workspacePhase } from '@workbay/api';
 *
 * const manager = createWorkspaceManagerClient('127.0.0.1:7720');
 * try {
 *   const { status } = await manager.describeWorkspace({ id: 'ws-1' }, { timeoutMs: 5_000 });
 *   console.log(workspacePhase.fromProto(status!.phase)); // 'running'
 * } catch (error) {
 *   if (error instanceof NotFoundError) console.log('no such workspace');
 *   else throw error;
 * }
 * for await (const update of manager.subscribe({ mustMatch: { owner: 'u-1' } })) {
 *   console.log(update.status?.id, update.status?.phase);
 * }
 * manager.close();
 * ```
 *
 * @module
 */

// Errors
export type { WorkbayErrorCode, WorkbayErrorOptions, GrpcStatus } from './errors.js';
export {
  WorkbayError,
  InvalidArgumentError,
  NotFoundError,
  AlreadyExistsError,
  FailedPreconditionError,
  PermissionDeniedError,
  UnauthenticatedError,
  ResourceExhaustedError,
  UnavailableError,
  DeadlineExceededError,
  AbortedError,
  InternalError,
  UnimplementedError,
  CancelledError,
  workbayErrorCodes,
  errorMetadataKeys,
  internalErrorMessage,
  createWorkbayError,
  isWorkbayError,
  isRetryableError,
  grpcCodeOf,
  workbayCodeOf,
  toGrpcStatus,
  fromGrpcError,
} from './errors.js';

// Domain types
export type {
  GitStatusSummary,
  DomainEnumValue,
  EnumConverter,
  WorkspacePhase,
  StopPolicy,
  AdmissionLevel,
  PortVisibility,
  PortProtocol,
  WorkspaceType,
  TimeoutType,
  WorkspaceConditionBool,
  WorkspaceFeatureFlag,
  CloneTargetMode,
  GitAuthMethod,
  WorkspaceContentState,
  FSShiftMethod,
} from './domain.js';
export {
  defineEnumConverter,
  workspacePhase,
  stopPolicy,
  admissionLevel,
  portVisibility,
  portProtocol,
  workspaceType,
  timeoutType,
  workspaceConditionBool,
  workspaceFeatureFlag,
  cloneTargetMode,
  gitAuthMethod,
  workspaceContentState,
  fsShiftMethod,
  parseGoDuration,
  formatGoDuration,
  gitStatusLimits,
  limitGitStatus,
} from './domain.js';

// Clients
export type {
  TlsOptions,
  ClientOptions,
  CallOptions,
  ServerStream,
  ClientLifecycle,
  TypedClient,
  RequestCodecs,
  MethodDefinitionLike,
  ServiceDefinitionLike,
  WorkspaceManagerClient,
  WorkspaceContentClient,
  InWorkspaceClient,
  WorkspaceInfoClient,
} from './clients.js';
export {
  createChannelCredentials,
  createTypedClient,
  createWorkspaceManagerClient,
  createWorkspaceContentClient,
  createInWorkspaceClient,
  createWorkspaceInfoClient,
} from './clients.js';

// Servers
export type { HandlerOptions, StreamContext } from './server.js';
export { unaryHandler, serverStreamHandler } from './server.js';

// Shared infrastructure: the one gRPC server bootstrap, logger, config-error adapter, semaphore and size parser
export type { GrpcServerOptions, ServedService, ServerTlsFiles, StartedGrpcServer } from './infra/grpc-server.js';
export { bindAddress, startGrpcServer } from './infra/grpc-server.js';
export type { Logger, LoggerOptions } from './infra/logger.js';
export { createLogger, createSilentLogger, redactText, redactedFields } from './infra/logger.js';
export { configKey, parseWithSchema } from './infra/config-schema.js';
export type { Release } from './infra/concurrency.js';
export { AcquireAborted, Semaphore } from './infra/concurrency.js';
export type { ReleaseSlot } from './infra/owner-slots.js';
export { OwnerSlots } from './infra/owner-slots.js';
export { parseByteSize } from './infra/size.js';
export { boundErrorMessage, wellFormed } from './infra/bound-error.js';
export { assertDecoded, tolerantDecoder, withTolerantDecoding } from './infra/tolerant-decoding.js';

// Wire: service definitions, server interfaces, message namespaces, proto files
export {
  contentservice,
  iws,
  wsdaemon,
  wsman,
  WorkspaceManagerService,
  WorkspaceContentServiceService,
  InWorkspaceServiceService,
  WorkspaceInfoServiceService,
} from './wire.js';
export type {
  WorkspaceManagerServer,
  WorkspaceContentServiceServer,
  InWorkspaceServiceServer,
  WorkspaceInfoServiceServer,
} from './wire.js';
export { protoRoot, protoFiles } from './proto-root.js';

// Plugin SPI
export type {
  PluginLogger,
  ObjectInfo,
  UploadOptions,
  DownloadOptions,
  ListOptions,
  ReadIntoOptions,
  DeleteTarget,
  PresignMethod,
  PresignOptions,
  RemoteStorage,
  BucketLayout,
  StorageLocation,
  SchemaIssueLike,
  SafeParseResultLike,
  SchemaLike,
  PluginSectionOptions,
  PluginSection,
  ClassResources,
  RuntimeWorkspaceSpec,
  RuntimeStatus,
  RuntimeWorkspaceState,
  RuntimeEvent,
  StopOptions,
  WorkspaceRuntime,
  BackendContext,
  StorageBackendFactory,
  RuntimeFactory,
  PluginRegistry,
  WorkbayPlugin,
} from './spi/index.js';
export {
  silentLogger,
  defaultBucketPrefix,
  locateOwner,
  assertWorkspaceId,
  workspacePrefix,
  backupObjectName,
  snapshotObjectName,
  unixNanoNow,
  qualifyObject,
  parseQualifiedObject,
  parsePluginSection,
  networkUnreachableCodes,
  isNetworkUnreachableCode,
  readConfigFile,
  lowerCaseMetadata,
  copyBytes,
  createPlugin,
  PluginHost,
} from './spi/index.js';
