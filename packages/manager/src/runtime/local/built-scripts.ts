import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { FailedPreconditionError } from '@workbay/api';

/**
 * A script of this folder that runs as a process of its own (the default workspace, the wrapper spawner): built
 * beside this module in dist; from sources (tests) it is taken from dist.
 */
export function builtScript(file: string): string {
  const here = path.dirname(fileURLToPath(import.meta.url));
  const beside = path.join(here, file);
  if (existsSync(beside)) return beside;
  const fromSource = path.resolve(here, '../../../dist/runtime/local', file);
  if (existsSync(fromSource)) return fromSource;
  throw new FailedPreconditionError(`${file} is missing (${beside}); build @workbay/manager`);
}
