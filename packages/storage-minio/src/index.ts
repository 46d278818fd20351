/**
 * @module
 * `@workbay/storage-minio`: a {@link RemoteStorage} backend for MinIO and other S3-compatible stores, registered
 * as the storage `kind` `minio`.
 *
 * ```ts
 * import { PluginHost } from '@workbay/api';
 * import { plugin } from '@workbay/storage-minio';
 *
 * const host = new PluginHost().use(plugin);
 * const storage = await host.createStorage('minio', {
 *   endpoint: 'http://127.0.0.1:9000',
 *   accessKeyFile: '/run/secrets/minio-access-key',
 *   secretKeyFile: '/run/secrets/minio-secret-key',
 * });
 * ```
 */
export type { MinioConfig, MinioConfigInput } from './config.js';
export { parseMinioConfig, minPartSize, maxPartSize, maxParts } from './config.js';
export type { MinioStorageOptions } from './minio-storage.js';
export { MinioStorage, digestMetadataKey } from './minio-storage.js';
export type { ErrorContext } from './errors.js';
export { toStorageError } from './errors.js';
export { DigestMismatchError } from './digest-check.js';
export { minioStorageFactory, plugin } from './plugin.js';
