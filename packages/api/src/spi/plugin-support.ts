import { readFileSync } from 'node:fs';
import { InvalidArgumentError } from '../errors.js';
import { configKey, describeSchemaIssue } from '../infra/config-schema.js';
import type { SchemaLike } from '../infra/config-schema.js';

export type { SafeParseResultLike, SchemaIssueLike, SchemaLike } from '../infra/config-schema.js';

export interface PluginSectionOptions<T> {
  /** The selector value this plugin answers to (`minio`); also the key of the nested form. */
  readonly kind: string;
  readonly schema: SchemaLike<T>;
  /** Where the section sits in the host's config, for error fields: `storage`. */
  readonly keyPrefix: string;
  /**
   * Rewrites the message of the first issue before it is thrown, e.g. so that a secret-bearing value is never
   * echoed. `path` is the issue's path within the section.
   */
  readonly describeIssue?: (path: readonly string[], message: string) => string;
}

/** A validated config section, and how to name its keys in further errors. */
export interface PluginSection<T> {
  readonly config: T;
  /** `storage` or, for the nested form, `storage.minio`. */
  readonly prefix: string;
  /** The full name of a key of the section: `storage.minio.endpoint`. */
  readonly key: (name: string) => string;
}

/**
 * Validates a plugin's config section, written flat (`{ kind: 'minio', endpoint, ... }`) or nested
 * (`{ kind: 'minio', minio: { endpoint, ... } }`). In the nested form a wrong `kind` or any other sibling key
 * is refused; in the flat form `kind` is the schema's to check. The first issue becomes an
 * {@link InvalidArgumentError} whose field is the full key (`storage.minio.endpoint`), so an operator sees
 * exactly what to fix.
 */
export function parsePluginSection<T>(raw: unknown, options: PluginSectionOptions<T>): PluginSection<T> {
  const { kind, schema, keyPrefix } = options;
  let section = raw;
  let prefix = keyPrefix;
  if (typeof raw === 'object' && raw !== null && kind in raw) {
    const { kind: selector, [kind]: nested, ...rest } = raw as Record<string, unknown>;
    if (selector !== undefined && selector !== kind) {
      throw new InvalidArgumentError(`${keyPrefix}.kind`, `is '${String(selector)}', expected '${kind}'`);
    }
    const extra = Object.keys(rest);
    if (extra.length) throw new InvalidArgumentError(`${keyPrefix}.${extra[0]}`, 'unknown key');
    section = nested;
    prefix = `${keyPrefix}.${kind}`;
  }
  const key = (name: string): string => `${prefix}.${name}`;
  if (typeof section !== 'object' || section === null || Array.isArray(section)) {
    throw new InvalidArgumentError(prefix, 'must be an object');
  }
  const parsed = schema.safeParse(section);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    if (!issue) throw new InvalidArgumentError(prefix, 'is invalid');
    const described = describeSchemaIssue(issue);
    let message = described.message;
    if (options.describeIssue) message = options.describeIssue(issue.path.map(String), message);
    const name = described.path.length ? configKey(prefix, described.path) : prefix;
    throw new InvalidArgumentError(name, message);
  }
  return { config: parsed.data, prefix, key };
}

/**
 * Reads a UTF-8 file that a config key names (a secret, a key file). A failure is an
 * {@link InvalidArgumentError} on that key with the path and the errno code, never the content.
 */
export function readConfigFile(path: string, key: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (cause) {
    const code = (cause as NodeJS.ErrnoException).code ?? 'unreadable';
    throw new InvalidArgumentError(key, `cannot read '${path}' (${code})`, { cause });
  }
}

/**
 * Error codes of Node's network and TLS stack that mean "the endpoint cannot be reached right now" (refused,
 * reset, not resolvable, timed out, or a TLS peer we cannot trust).
 */
export const networkUnreachableCodes: ReadonlySet<string> = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ENOTFOUND',
  'EAI_AGAIN',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EPIPE',
  'ECONNABORTED',
  'ESOCKETTIMEDOUT',
  'CERT_HAS_EXPIRED',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'ERR_TLS_CERT_ALTNAME_INVALID',
  'EPROTO',
]);

/**
 * Whether an error's `code` means the endpoint is unreachable: one of {@link networkUnreachableCodes}, or any
 * undici (`fetch`) transport error (`UND_ERR_*`).
 */
export function isNetworkUnreachableCode(code: unknown): code is string {
  return typeof code === 'string' && (networkUnreachableCodes.has(code) || code.startsWith('UND_ERR'));
}

/**
 * User metadata as `ObjectInfo.metadata` reports it: keys lower-cased, as S3 and GCS store them (their keys are
 * case-insensitive), so that every backend answers the same for the same upload.
 */
export function lowerCaseMetadata(metadata: Readonly<Record<string, string>> | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [key, value] of Object.entries(metadata ?? {})) out[key.toLowerCase()] = value;
  return out;
}
