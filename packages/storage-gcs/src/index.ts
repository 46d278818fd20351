/**
 * @module
 * `@workbay/storage-gcs`: a {@link RemoteStorage} backend for Google Cloud Storage (and JSON-API emulators such
 * as fake-gcs-server), registered as the storage `kind` `gcs`.
 *
 * ```ts
 * import { PluginHost } from '@workbay/api';
 * import { plugin } from '@workbay/storage-gcs';
 *
 * const host = new PluginHost().use(plugin);
 * const storage = await host.createStorage('gcs', {
 *   projectId: 'my-project',
 *   keyFilename: '/run/secrets/gcs-key.json',
 * });
 * ```
 */
export type { GcsConfig, GcsConfigInput, ServiceAccountCredentials } from './config.js';
export { parseGcsConfig } from './config.js';
export type { GcsStorageOptions } from './gcs-storage.js';
export { GcsStorage, digestMetadataKey } from './gcs-storage.js';
export type { ErrorContext } from './errors.js';
export { toStorageError, httpStatusOf } from './errors.js';
export { gcsStorageFactory, plugin } from './plugin.js';
