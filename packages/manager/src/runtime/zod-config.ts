import { InvalidArgumentError } from '@workbay/api';
import type { z } from 'zod';

/**
 * Parses a config section and turns the first zod issue into an `InvalidArgumentError` whose field is the
 * dotted path of the bad key (unknown keys included), e.g. `runtime.local.images.node.command`.
 */
export function parseConfigSection<S extends z.ZodType>(schema: S, raw: unknown, prefix: string): z.output<S> {
  const result = schema.safeParse(raw);
  if (result.success) return result.data;
  const issue = result.error.issues[0]!;
  const segments = issue.path.map(String);
  if (issue.code === 'unrecognized_keys') {
    const key = issue.keys[0] ?? '';
    return fail([...segments, key], `unknown key '${key}'`);
  }
  return fail(segments, issue.message);

  function fail(path: string[], message: string): never {
    const field = [prefix, ...path].filter(Boolean).join('.');
    throw new InvalidArgumentError(field, message);
  }
}
