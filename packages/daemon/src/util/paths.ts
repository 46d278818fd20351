import { homedir } from 'node:os';
import { isAbsolute, join, normalize, resolve, sep } from 'node:path';
import { InvalidArgumentError } from '../errors.js';
import { checkLength, limits, quote } from './bounds.js';

/** Expands a leading `~` to the home directory and makes the path absolute. */
export function expandHome(path: string): string {
  if (path === '~') return homedir();
  if (path.startsWith('~/')) return join(homedir(), path.slice(2));
  return resolve(path);
}

/**
 * Checks a relative location from a request (a checkout location, a file path) without touching the disk:
 * bounded length, no NUL, not absolute, no `..` component. Errors are INVALID_ARGUMENT naming `field`.
 */
export function checkRelativeLocation(relative: string, field: string): void {
  checkLength(relative, field, limits.location);
  if (relative.includes('\0')) throw new InvalidArgumentError(field, 'must not contain NUL bytes');
  if (isAbsolute(relative))
    throw new InvalidArgumentError(field, `${quote(relative)} must be relative to the workspace`);
  if (relative.split(/[/\\]+/).includes('..'))
    throw new InvalidArgumentError(field, `${quote(relative)} must not contain '..'`);
}

/**
 * Resolves a relative location (e.g. a checkout location from a request) inside `root`. Rejects absolute
 * paths and `..` components with an InvalidArgumentError naming `field`.
 */
export function resolveInside(root: string, relative: string, field: string): string {
  if (relative === '' || relative === '.') return root;
  checkRelativeLocation(relative, field);
  const full = normalize(join(root, relative));
  if (full !== root && !full.startsWith(root.endsWith(sep) ? root : root + sep)) {
    throw new InvalidArgumentError(field, `${quote(relative)} leaves the workspace`);
  }
  return full;
}
