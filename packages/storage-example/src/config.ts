import type { BucketLayout } from '@workbay/api';
import { parsePluginSection } from '@workbay/api';
import { z } from 'zod';

/**
 * The config section of the `example` backend. `parsePluginSection` accepts it flat
 * (`storage: { kind: example, root: /srv/blobs }`) or nested (`storage: { kind: example, example: { root: … } }`).
 * The daemon may add `layout` (where owners' objects go) when the operator set one: accept it, or the host's
 * config with a layout would be refused by a strict schema.
 */
const schema = z.strictObject({
  kind: z.literal('example').optional(),
  root: z.string().min(1, 'is required'),
  layout: z
    .discriminatedUnion('mode', [
      z.strictObject({ mode: z.literal('per-owner'), bucketPrefix: z.string().min(1).optional() }),
      z.strictObject({ mode: z.literal('shared'), bucket: z.string().min(1) }),
    ])
    .optional(),
});

export type ExampleStorageConfigInput = z.input<typeof schema>;

export interface ExampleStorageConfig {
  /** The directory every bucket lives in (created on demand). */
  readonly root: string;
  readonly layout?: BucketLayout;
}

/** Validates a `storage` section; errors are `InvalidArgumentError`s naming the full key (`storage.root`). */
export function parseExampleStorageConfig(raw: unknown): ExampleStorageConfig {
  const { config } = parsePluginSection(raw, { kind: 'example', schema, keyPrefix: 'storage' });
  return { root: config.root, ...(config.layout ? { layout: config.layout as BucketLayout } : {}) };
}
