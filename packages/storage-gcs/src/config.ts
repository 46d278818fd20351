import type { BucketLayout } from '@workbay/api';
import { InvalidArgumentError, parsePluginSection, readConfigFile } from '@workbay/api';
import { z } from 'zod';

const MiB = 1024 * 1024;
const KiB256 = 256 * 1024;

const layoutSchema = z.discriminatedUnion('mode', [
  z.strictObject({ mode: z.literal('per-owner'), bucketPrefix: z.string().min(1).optional() }),
  z.strictObject({ mode: z.literal('shared'), bucket: z.string().min(3).max(222) }),
]);

/** The fields of a service-account key file this backend needs; the rest is kept and passed on. */
const credentialsSchema = z.looseObject({
  client_email: z.string().min(1),
  private_key: z.string().min(1),
  project_id: z.string().min(1).optional(),
});

const configSchema = z.strictObject({
  /** Accepted (and checked) when the config section still carries the selector. */
  kind: z.literal('gcs').optional(),
  projectId: z.string().min(1).optional(),
  /** Another JSON-API endpoint: an emulator (`http://127.0.0.1:4443`) or a private gateway. */
  apiEndpoint: z.url({ protocol: /^https?$/ }).optional(),
  /** Send credentials to a custom `apiEndpoint` too (off for emulators, which want none). */
  useAuthWithCustomEndpoint: z.boolean().default(false),
  keyFilename: z.string().min(1).optional(),
  credentials: credentialsSchema.optional(),
  /** Location for buckets this backend creates (e.g. `EU`); the service default when unset. */
  location: z.string().min(1).optional(),
  layout: layoutSchema.default({ mode: 'per-owner' }),
  /** Bodies up to this size go up in one request; larger ones as a resumable upload. */
  resumableThreshold: z
    .number()
    .int()
    .min(0)
    .max(5 * 1024 * MiB)
    .default(8 * MiB),
  /**
   * Resumable uploads in chunks of this size (a multiple of 256 KiB), each retried on its own; memory holds
   * one chunk. Unset: one streaming request per upload (no buffering, but no retry mid-upload).
   */
  chunkSize: z
    .number()
    .int()
    .min(KiB256)
    .refine((n) => n % KiB256 === 0, 'must be a multiple of 262144 (256 KiB)')
    .optional(),
  /** Check CRC32C of uploads and downloads against what the service reports. */
  validation: z.boolean().default(true),
  /** Retries of retryable requests (the client's own policy). */
  maxRetries: z.number().int().min(0).max(10).default(3),
  presignExpirySeconds: z
    .number()
    .int()
    .min(1)
    .max(7 * 24 * 3600)
    .default(3600),
});

export type GcsConfigInput = z.input<typeof configSchema>;

/** A service-account key: what signing URLs needs. */
export interface ServiceAccountCredentials {
  readonly client_email: string;
  readonly private_key: string;
  readonly project_id?: string;
  readonly [key: string]: unknown;
}

/** A validated config, credentials read from their file. */
export interface GcsConfig {
  readonly projectId: string;
  readonly apiEndpoint?: string;
  readonly useAuthWithCustomEndpoint: boolean;
  readonly credentials?: ServiceAccountCredentials;
  readonly location?: string;
  readonly layout: BucketLayout;
  readonly resumableThreshold: number;
  readonly chunkSize?: number;
  readonly validation: boolean;
  readonly maxRetries: number;
  readonly presignExpirySeconds: number;
}

function readKeyFile(path: string, field: string): ServiceAccountCredentials {
  const text = readConfigFile(path, field);
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (cause) {
    throw new InvalidArgumentError(field, `'${path}' is not JSON`, { cause });
  }
  const parsed = credentialsSchema.safeParse(json);
  if (!parsed.success) {
    // Name the missing field, never echo the file (it holds a private key).
    const key = parsed.error.issues[0]?.path.join('.') || 'content';
    throw new InvalidArgumentError(field, `'${path}' is not a service-account key (check '${key}')`);
  }
  return parsed.data;
}

/**
 * Validates a `storage` config section for the GCS backend. Accepts the section flat
 * (`{ kind: 'gcs', projectId, ... }`) or nested (`{ kind: 'gcs', gcs: { projectId, ... } }`); errors are
 * {@link InvalidArgumentError}s naming the key (`storage.projectId` or `storage.gcs.projectId`).
 */
export function parseGcsConfig(raw: unknown): GcsConfig {
  const { config: c, key: field } = parsePluginSection(raw, {
    kind: 'gcs',
    schema: configSchema,
    keyPrefix: 'storage',
    // Never echo a private key back in an error.
    describeIssue: (path, message) =>
      path[0] === 'credentials' ? 'is not a service-account key (client_email, private_key)' : message,
  });
  if (c.keyFilename !== undefined && c.credentials !== undefined) {
    throw new InvalidArgumentError(field('keyFilename'), 'set either keyFilename or credentials, not both');
  }
  const credentials = c.keyFilename !== undefined ? readKeyFile(c.keyFilename, field('keyFilename')) : c.credentials;
  // Without a project id the client would ask the metadata server for one; we never let it guess.
  const projectId = c.projectId ?? credentials?.project_id;
  if (!projectId) {
    throw new InvalidArgumentError(field('projectId'), 'is required (or a key with project_id)');
  }
  return {
    projectId,
    apiEndpoint: c.apiEndpoint?.replace(/\/+$/, ''),
    useAuthWithCustomEndpoint: c.useAuthWithCustomEndpoint,
    credentials: credentials as ServiceAccountCredentials | undefined,
    location: c.location,
    layout: c.layout,
    resumableThreshold: c.resumableThreshold,
    chunkSize: c.chunkSize,
    validation: c.validation,
    maxRetries: c.maxRetries,
    presignExpirySeconds: c.presignExpirySeconds,
  };
}
