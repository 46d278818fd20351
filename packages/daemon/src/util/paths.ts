import { homedir } from 'node:os';
import { isAbsolute, join, normalize, resolve, sep } from 'node:path';
import { InvalidArgumentError } from '../errors.js';

/** Expands a leading `~` to the home directory and makes the path absolute. */
export function expandHome(path: string): string {
  if (path === '~') return homedir();
  if (path.startsWith('~/')) return join(homedir(), path.slice(2));
  return resolve(path);
}

/**
 * Resolves a relative location (e.g. a checkout location from a request) inside `root`. Rejects absolute
 * paths and `..` components with an InvalidArgumentError naming `field`.
 */
export function resolveInside(root: string, relative: string, field: string): string {
  if (relative === '' || relative === '.') return root;
  if (isAbsolute(relative)) throw new InvalidArgumentError(field, `'${relative}' must be relative to the workspace`);
  const parts = relative.split(/[/\\]+/);
  if (parts.includes('..')) throw new InvalidArgumentError(field, `'${relative}' must not contain '..'`);
  if (relative.includes('\0')) throw new InvalidArgumentError(field, 'must not contain NUL bytes');
  const full = normalize(join(root, relative));
  if (full !== root && !full.startsWith(root.endsWith(sep) ? root : root + sep)) {
    throw new InvalidArgumentError(field, `'${relative}' leaves the workspace`);
  }
  return full;
}
