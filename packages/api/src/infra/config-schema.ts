/**
 * The one adapter from a schema's validation issues (zod 4, or anything shaped like it) to the
 * {@link InvalidArgumentError} that names the offending config key. The manager, the daemon and every plugin
 * validate their config through it, so an operator reads the same kind of message everywhere.
 *
 * @module
 */
import { InvalidArgumentError } from '../errors.js';

/**
 * One validation issue, in the shape zod 4 (and other Standard-Schema-style validators) report it. Typed
 * structurally so that the api stays free of a validation library.
 */
export interface SchemaIssueLike {
  readonly code: string;
  readonly path: readonly PropertyKey[];
  readonly message: string;
  /** The offending keys of an `unrecognized_keys` issue. */
  readonly keys?: readonly string[];
}

/** The result of `schema.safeParse(input)`. */
export type SafeParseResultLike<T> =
  | { readonly success: true; readonly data: T }
  | { readonly success: false; readonly error: { readonly issues: readonly SchemaIssueLike[] } };

/** Anything with a zod-style `safeParse`, e.g. a zod 4 schema. */
export interface SchemaLike<T> {
  safeParse(input: unknown): SafeParseResultLike<T>;
}

/** Joins a config key from a prefix and an issue path: `backup.concurrency`, `plugins[1].id`; `(root)` when empty. */
export function configKey(prefix: string, path: readonly PropertyKey[]): string {
  let out = prefix;
  for (const part of path) {
    if (typeof part === 'number') out += `[${part}]`;
    else out += out === '' ? String(part) : `.${String(part)}`;
  }
  return out === '' ? '(root)' : out;
}

/** The key an issue is about (an unknown key itself, not its parent) and what to say about it. */
export function describeSchemaIssue(issue: SchemaIssueLike): { path: PropertyKey[]; message: string } {
  const unknownKey = issue.code === 'unrecognized_keys' ? issue.keys?.[0] : undefined;
  if (unknownKey !== undefined) return { path: [...issue.path, unknownKey], message: 'unknown key' };
  return { path: [...issue.path], message: issue.message };
}

/**
 * Parses `raw` with `schema`; the first issue becomes an {@link InvalidArgumentError} whose field is the full
 * config key under `prefix` (`runtime.local.images.node.command`, unknown keys included).
 */
export function parseWithSchema<T>(schema: SchemaLike<T>, raw: unknown, prefix: string): T {
  const result = schema.safeParse(raw);
  if (result.success) return result.data;
  const issue = result.error.issues[0];
  if (!issue) throw new InvalidArgumentError(configKey(prefix, []), 'invalid value');
  const { path, message } = describeSchemaIssue(issue);
  throw new InvalidArgumentError(configKey(prefix, path), message);
}
