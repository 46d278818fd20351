import type { z } from 'zod';
import { InvalidArgumentError } from '../errors.js';

/** Joins a zod issue path into a config key, e.g. `backup.concurrency` or `plugins[1]`. */
export function issuePath(prefix: string, path: readonly PropertyKey[]): string {
  let out = prefix;
  for (const part of path) {
    if (typeof part === 'number') out += `[${part}]`;
    else out += out === '' ? String(part) : `.${String(part)}`;
  }
  return out === '' ? '(root)' : out;
}

/** Parses with `schema` and turns the first failure into an InvalidArgumentError naming the bad key. */
export function parseWithSchema<S extends z.ZodType>(schema: S, raw: unknown, prefix: string): z.output<S> {
  const result = schema.safeParse(raw);
  if (result.success) return result.data;
  const issue = result.error.issues[0];
  if (!issue) throw new InvalidArgumentError(prefix || '(root)', 'invalid value');
  const unknownKey =
    issue.code === 'unrecognized_keys' && 'keys' in issue && Array.isArray(issue.keys) && issue.keys.length > 0
      ? String(issue.keys[0])
      : undefined;
  const path = unknownKey !== undefined ? [...issue.path, unknownKey] : issue.path;
  const message = unknownKey !== undefined ? 'unknown key' : issue.message;
  throw new InvalidArgumentError(issuePath(prefix, path), message);
}
