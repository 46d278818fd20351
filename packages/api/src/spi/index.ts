export type { PluginLogger } from './logger.js';
export { silentLogger } from './logger.js';
export type {
  ObjectInfo,
  UploadOptions,
  DownloadOptions,
  ListOptions,
  ReadIntoOptions,
  DeleteTarget,
  PresignMethod,
  PresignOptions,
  RemoteStorage,
} from './storage.js';
export type { BucketLayout, StorageLocation } from './storage-layout.js';
export type {
  SchemaIssueLike,
  SafeParseResultLike,
  SchemaLike,
  PluginSectionOptions,
  PluginSection,
} from './plugin-support.js';
export {
  parsePluginSection,
  networkUnreachableCodes,
  isNetworkUnreachableCode,
  readConfigFile,
  lowerCaseMetadata,
} from './plugin-support.js';
export { copyBytes } from './bytes.js';
export {
  defaultBucketPrefix,
  locateOwner,
  assertWorkspaceId,
  workspacePrefix,
  backupObjectName,
  snapshotObjectName,
  unixNanoNow,
  qualifyObject,
  parseQualifiedObject,
} from './storage-layout.js';
export type {
  ClassResources,
  RuntimeWorkspaceSpec,
  RuntimeStatus,
  RuntimeWorkspaceState,
  RuntimeEvent,
  StopOptions,
  WorkspaceRuntime,
} from './runtime.js';
export type { BackendContext, StorageBackendFactory, RuntimeFactory, PluginRegistry, WorkbayPlugin } from './plugin.js';
export { createPlugin, PluginHost } from './plugin.js';
