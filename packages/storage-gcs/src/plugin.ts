import type { StorageBackendFactory } from '@workbay/api';
import { createPlugin } from '@workbay/api';
import type { GcsConfig } from './config.js';
import { parseGcsConfig } from './config.js';
import { GcsStorage } from './gcs-storage.js';

/** The `gcs` storage backend factory: validates `storage` config sections and creates {@link GcsStorage}. */
export const gcsStorageFactory: StorageBackendFactory<GcsConfig> = {
  kind: 'gcs',
  parseConfig: parseGcsConfig,
  create: (config, context) => new GcsStorage(config, { logger: context.logger }),
};

/** Registers the `gcs` storage backend. Hosts load it by package name: `plugins: ['@workbay/storage-gcs']`. */
export const plugin = createPlugin({
  id: 'storage-gcs',
  register(registry) {
    registry.registerStorageBackend(gcsStorageFactory);
  },
});
