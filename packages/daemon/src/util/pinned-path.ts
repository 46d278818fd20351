/**
 * Reading hostile content by path, safely (invariant 10 for reads): a running workspace can swap a directory of
 * its content for a symlink to a host directory at any moment, and a path-based read as root would then archive
 * host files into the workspace's own snapshot. Directories are opened O_NOFOLLOW and listed through their open
 * descriptor (`/proc/self/fd/<fd>/<name>`, which is openat), and every opened file or directory is checked to be
 * the one at the path the walk expected (the kernel's own path of the descriptor), so no symlinked component
 * was crossed on the way.
 */
import { existsSync, readlinkSync } from 'node:fs';

const procFd = existsSync('/proc/self/fd');

/**
 * True when the open `fd` is the file at `path` (absolute, canonical): no component of `path` was a symlink when
 * it was opened. Without /proc (not Linux) it answers true: O_NOFOLLOW on the last component still holds.
 */
export function openedAt(fd: number, path: string): boolean {
  if (!procFd) return true;
  try {
    return readlinkSync(`/proc/self/fd/${fd}`) === path;
  } catch {
    // Unverifiable counts as not the same file: the caller refuses it.
    return false;
  }
}

/** The path that reaches entries of the directory open at `fd` without resolving its path again. */
export function pinnedDirectory(fd: number, path: string): string {
  return procFd ? `/proc/self/fd/${fd}` : path;
}
