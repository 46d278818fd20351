import type { StorageBackendFactory } from '@workbay/api';
import { createPlugin } from '@workbay/api';
import type { ExampleStorageConfig } from './config.js';
import { parseExampleStorageConfig } from './config.js';
import { ExampleStorage } from './example-storage.js';

/** Validates `storage` sections of kind `example` and creates {@link ExampleStorage}. */
export const exampleStorageFactory: StorageBackendFactory<ExampleStorageConfig> = {
  kind: 'example',
  parseConfig: parseExampleStorageConfig,
  create: (config) => new ExampleStorage(config),
};

/** What the daemon imports when its config lists `plugins: ['@workbay/storage-example']`. */
export const plugin = createPlugin({
  id: 'storage-example',
  register(registry) {
    registry.registerStorageBackend(exampleStorageFactory);
  },
});
