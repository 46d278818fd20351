import type { StorageBackendFactory } from '@workbay/api';
import { createPlugin } from '@workbay/api';
import type { MinioConfig } from './config.js';
import { parseMinioConfig } from './config.js';
import { MinioStorage } from './minio-storage.js';

/** The `minio` storage backend factory: validates `storage` config sections and creates {@link MinioStorage}. */
export const minioStorageFactory: StorageBackendFactory<MinioConfig> = {
  kind: 'minio',
  parseConfig: parseMinioConfig,
  create: (config, context) => new MinioStorage(config, { logger: context.logger }),
};

/** Registers the `minio` storage backend. Hosts load it by package name: `plugins: ['@workbay/storage-minio']`. */
export const plugin = createPlugin({
  id: 'storage-minio',
  register(registry) {
    registry.registerStorageBackend(minioStorageFactory);
  },
});
