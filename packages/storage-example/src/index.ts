/**
 * @module
 * `@workbay/storage-example`: the complete storage plugin of the plugin authoring guide
 * (docs/plugin-authoring.md), a {@link RemoteStorage} on a local directory registered as storage kind `example`.
 */
export type { ExampleStorageConfig, ExampleStorageConfigInput } from './config.js';
export { parseExampleStorageConfig } from './config.js';
export { ExampleStorage } from './example-storage.js';
export { exampleStorageFactory, plugin } from './plugin.js';
