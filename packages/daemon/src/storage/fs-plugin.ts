import { createPlugin, parseWithSchema } from '@workbay/api';
import type { BackendContext, BucketLayout, StorageBackendFactory, WorkbayPlugin } from '@workbay/api';
import { z } from 'zod';
import { expandHome } from '../util/paths.js';
import { FsRemoteStorage } from './fs-storage.js';

/** Config section of the `fs` backend (`storage:` in the daemon config, without `kind`/`layout`). */
export const fsStorageConfigSchema = z
  .object({
    kind: z.literal('fs').optional(),
    /** Directory holding the buckets; `~` expands to the home directory. */
    root: z.string().min(1).default('~/.workbay/storage'),
    /** Where owners' objects live (read by the daemon, as with the other backends). */
    layout: z
      .discriminatedUnion('mode', [
        z.object({ mode: z.literal('per-owner'), bucketPrefix: z.string().optional() }).strict(),
        z.object({ mode: z.literal('shared'), bucket: z.string().min(3) }).strict(),
      ])
      .optional(),
    presign: z
      .object({
        host: z.string().min(1).optional(),
        port: z.number().int().min(0).max(65535).optional(),
        secret: z.string().min(16).optional(),
        publicBaseUrl: z.url().optional(),
      })
      .strict()
      .optional(),
  })
  .strict();

export type FsStorageConfig = z.output<typeof fsStorageConfigSchema>;

/** The `fs` storage backend factory. */
export const fsStorageBackend: StorageBackendFactory<FsStorageConfig> = {
  kind: 'fs',
  parseConfig: (raw: unknown): FsStorageConfig => {
    // Accepts the flat section (`{root}`) or the nested form (`{kind: 'fs', fs: {root}}`).
    if (typeof raw === 'object' && raw !== null && 'fs' in raw) {
      const { kind, fs, ...rest } = raw as { kind?: unknown; fs: unknown };
      return parseWithSchema(
        fsStorageConfigSchema,
        { ...(kind !== undefined ? { kind } : {}), ...(fs as object), ...rest },
        'storage',
      );
    }
    return parseWithSchema(fsStorageConfigSchema, raw ?? {}, 'storage');
  },
  create: (config: FsStorageConfig, context: BackendContext): FsRemoteStorage =>
    new FsRemoteStorage({
      root: expandHome(config.root),
      logger: context.logger,
      ...(config.layout ? { layout: stripUndefined(config.layout) as BucketLayout } : {}),
      ...(config.presign ? { presign: stripUndefined(config.presign) } : {}),
    }),
};

function stripUndefined<T extends object>(value: T): T {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as T;
}

/** Registers the built-in `fs` storage backend. The daemon always registers it. */
export const fsStoragePlugin: WorkbayPlugin = createPlugin({
  id: 'storage-fs',
  register(registry) {
    registry.registerStorageBackend(fsStorageBackend);
  },
});
