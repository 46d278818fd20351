import { readFileSync } from 'node:fs';
import type { BucketLayout } from '@workbay/api';
import { InvalidArgumentError, parsePluginSection, readConfigFile } from '@workbay/api';
import { z } from 'zod';

const MiB = 1024 * 1024;

/** S3's multipart limits: parts of 5 MiB to 5 GiB, at most 10 000 of them. */
export const minPartSize = 5 * MiB;
export const maxPartSize = 5 * 1024 * MiB;
export const maxParts = 10_000;

const layoutSchema = z.discriminatedUnion('mode', [
  z.strictObject({ mode: z.literal('per-owner'), bucketPrefix: z.string().min(1).optional() }),
  z.strictObject({ mode: z.literal('shared'), bucket: z.string().min(3).max(63) }),
]);

const configSchema = z.strictObject({
  /** Accepted (and checked) when the config section still carries the selector. */
  kind: z.literal('minio').optional(),
  endpoint: z.string().min(1, 'is required'),
  useSSL: z.boolean().optional(),
  /** Alias of `useSSL`. */
  tls: z.boolean().optional(),
  caFile: z.string().min(1).optional(),
  region: z.string().min(1).default('us-east-1'),
  pathStyle: z.boolean().default(true),
  accessKey: z.string().min(1).optional(),
  accessKeyFile: z.string().min(1).optional(),
  secretKey: z.string().min(1).optional(),
  secretKeyFile: z.string().min(1).optional(),
  sessionToken: z.string().min(1).optional(),
  layout: layoutSchema.default({ mode: 'per-owner' }),
  partSize: z
    .number()
    .int()
    .min(minPartSize)
    .max(maxPartSize)
    .default(16 * MiB),
  parallelParts: z.number().int().min(1).max(64).default(4),
  presignExpirySeconds: z
    .number()
    .int()
    .min(1)
    .max(7 * 24 * 3600)
    .default(30 * 60),
  /**
   * Over plain HTTP, sign each request's payload (SHA-256 of every byte, on both sides). Off (the default), and
   * always over TLS, every PUT carries a CRC-32 checksum the store verifies instead: corruption on the way is
   * caught either way, at a third of the CPU. What a signed payload adds is only against someone on the path
   * who rewrites request bodies, and plain HTTP leaves downloads, and every byte's secrecy, to that someone
   * anyway: use TLS against them.
   */
  signPayload: z.boolean().default(false),
});

/** The config section an operator writes (`storage: { kind: 'minio', ... }`), before defaults. */
export type MinioConfigInput = z.input<typeof configSchema>;

/** A validated, resolved config: endpoint split up, credentials read from their files. */
export interface MinioConfig {
  /** As written, for messages: `http://127.0.0.1:9000`. */
  readonly endpoint: string;
  readonly host: string;
  readonly port?: number;
  readonly useSSL: boolean;
  /** PEM of extra CAs to trust, read from `caFile`. */
  readonly ca?: Buffer;
  readonly region: string;
  readonly pathStyle: boolean;
  readonly accessKey: string;
  readonly secretKey: string;
  readonly sessionToken?: string;
  readonly layout: BucketLayout;
  readonly partSize: number;
  readonly parallelParts: number;
  readonly presignExpirySeconds: number;
  readonly signPayload: boolean;
}

function readSecretFile(path: string, field: string): string {
  const text = readConfigFile(path, field);
  // Files written by `echo` or Kubernetes secrets often end with a newline that is not part of the key.
  const value = text.replace(/\r?\n$/, '');
  if (!value) throw new InvalidArgumentError(field, `'${path}' is empty`);
  return value;
}

function parseEndpoint(
  raw: string,
  useSSL: boolean | undefined,
  field: (key: string) => string,
): { host: string; port?: number; useSSL: boolean } {
  const hasScheme = /^[a-z][a-z0-9+.-]*:\/\//i.test(raw);
  let url: URL;
  try {
    url = new URL(hasScheme ? raw : `http://${raw}`);
  } catch {
    throw new InvalidArgumentError(field('endpoint'), `'${raw}' is not a URL or host:port`);
  }
  if (hasScheme && url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new InvalidArgumentError(field('endpoint'), `scheme '${url.protocol}' is not http or https`);
  }
  if (url.pathname !== '/' || url.search || url.hash || url.username || url.password) {
    throw new InvalidArgumentError(
      field('endpoint'),
      `'${raw}' must be only scheme, host and port (credentials go in accessKey/secretKey)`,
    );
  }
  const schemeSSL = hasScheme ? url.protocol === 'https:' : undefined;
  if (schemeSSL !== undefined && useSSL !== undefined && schemeSSL !== useSSL) {
    throw new InvalidArgumentError(field('useSSL'), `is ${useSSL} but the endpoint scheme is ${url.protocol}`);
  }
  const host = url.hostname.replace(/^\[(.*)\]$/, '$1');
  return { host, port: url.port ? Number(url.port) : undefined, useSSL: schemeSSL ?? useSSL ?? false };
}

/**
 * Validates a `storage` config section for the MinIO backend. Accepts the section flat
 * (`{ kind: 'minio', endpoint, ... }`) or nested (`{ kind: 'minio', minio: { endpoint, ... } }`); errors are
 * {@link InvalidArgumentError}s naming the key (`storage.endpoint` or `storage.minio.endpoint`).
 */
export function parseMinioConfig(raw: unknown): MinioConfig {
  const { config: c, key: field } = parsePluginSection(raw, {
    kind: 'minio',
    schema: configSchema,
    keyPrefix: 'storage',
  });
  if (c.useSSL !== undefined && c.tls !== undefined && c.useSSL !== c.tls) {
    throw new InvalidArgumentError(field('tls'), 'contradicts useSSL');
  }
  const endpoint = parseEndpoint(c.endpoint, c.useSSL ?? c.tls, field);

  const pick = (inline: string | undefined, file: string | undefined, key: 'accessKey' | 'secretKey'): string => {
    if (inline !== undefined && file !== undefined) {
      throw new InvalidArgumentError(field(`${key}File`), `set either ${key} or ${key}File, not both`);
    }
    if (file !== undefined) return readSecretFile(file, field(`${key}File`));
    if (inline === undefined) throw new InvalidArgumentError(field(key), `is required (or ${key}File)`);
    return inline;
  };
  const accessKey = pick(c.accessKey, c.accessKeyFile, 'accessKey');
  const secretKey = pick(c.secretKey, c.secretKeyFile, 'secretKey');

  let ca: Buffer | undefined;
  if (c.caFile !== undefined) {
    if (!endpoint.useSSL) throw new InvalidArgumentError(field('caFile'), 'is only used with TLS (useSSL or https://)');
    try {
      ca = readFileSync(c.caFile);
    } catch (cause) {
      throw new InvalidArgumentError(field('caFile'), `cannot read '${c.caFile}'`, { cause });
    }
  }

  return {
    endpoint: c.endpoint,
    host: endpoint.host,
    port: endpoint.port,
    useSSL: endpoint.useSSL,
    ca,
    region: c.region,
    pathStyle: c.pathStyle,
    accessKey,
    secretKey,
    sessionToken: c.sessionToken,
    layout: c.layout,
    partSize: c.partSize,
    parallelParts: c.parallelParts,
    presignExpirySeconds: c.presignExpirySeconds,
    signPayload: c.signPayload,
  };
}
