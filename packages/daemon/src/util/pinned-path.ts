/**
 * Reading hostile content by path, safely (invariant 10 for reads): a running workspace can swap a directory of
 * its content for a symlink to a host directory at any moment, and a path-based read as root would then archive
 * host files into the workspace's own snapshot. Directories are opened O_NOFOLLOW and listed through their open
 * descriptor (`/proc/self/fd/<fd>/<name>`, which is openat), and every opened file or directory is checked to be
 * the one at the path the walk expected (the kernel's own path of the descriptor), so no symlinked component
 * was crossed on the way.
 */
import * as fs from 'node:fs';
import type * as Fs from 'node:fs';
import { existsSync, readlinkSync } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { open } from 'node:fs/promises';

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

/** Opens files below one root without resolving a name outside it (see {@link beneathOpener}). */
export interface BeneathOpener {
  /**
   * Opens `relative` (below the root, `/`-separated, no `.` or `..`) with `flags` plus O_NOFOLLOW, O_NONBLOCK and
   * O_NOCTTY; throws the open's error (ELOOP or ENOTDIR where a component is no longer a directory).
   */
  open(relative: string, flags: number): number;
  /** Closes the directories it holds. */
  close(): void;
}

/**
 * Opens content files the way the walk lists them, as openat: each directory on the way is opened O_DIRECTORY and
 * O_NOFOLLOW through its parent's descriptor (`/proc/self/fd/<fd>/<name>`), so a directory a workspace swapped for
 * a symlink fails the open instead of leading anywhere. Opened by absolute path, root opened whatever the workspace
 * named: red team round 10 had root block on a host FIFO (and could have opened any device node: a watchdog's
 * open arms it) through a parent directory exchanged for a link, before any check of what was opened could run.
 * O_NONBLOCK keeps a FIFO in the content from blocking the open (regular files read the same with it), O_NOCTTY a
 * terminal from becoming the daemon's.
 *
 * It holds the descriptors of one chain of directories, the last file's (at most as many as the tree is deep):
 * files opened in walk order reuse it. Self-contained (refers to nothing but its arguments): the backup workers run
 * its source text, with their own `fs`. Without /proc (not Linux) it opens by path, O_NOFOLLOW on the last
 * component.
 */
export function beneathOpener(fs: typeof Fs, root: string): BeneathOpener {
  const { O_RDONLY, O_DIRECTORY, O_NOFOLLOW, O_NONBLOCK, O_NOCTTY } = fs.constants;
  const dirFlags = O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_NONBLOCK;
  const viaProc = fs.existsSync('/proc/self/fd');
  /** `names[i]` is the directory open at `fds[i + 1]`, below the one at `fds[i]`; `fds[0]` is the root. */
  const names: string[] = [];
  const fds: number[] = [];
  return {
    open(relative: string, flags: number): number {
      const extra = O_NOFOLLOW | O_NONBLOCK | O_NOCTTY;
      if (!viaProc) return fs.openSync(`${root}/${relative}`, flags | extra);
      const parts = relative.split('/');
      const name = parts.pop() as string;
      let common = 0;
      while (common < parts.length && common < names.length && names[common] === parts[common]) common++;
      while (names.length > common) {
        names.pop();
        fs.closeSync(fds.pop() as number);
      }
      if (fds.length === 0) fds.push(fs.openSync(root, dirFlags));
      for (let i = common; i < parts.length; i++) {
        fds.push(fs.openSync(`/proc/self/fd/${fds[i] as number}/${parts[i] as string}`, dirFlags));
        names.push(parts[i] as string);
      }
      return fs.openSync(`/proc/self/fd/${fds[fds.length - 1] as number}/${name}`, flags | extra);
    },
    close(): void {
      for (const fd of fds) fs.closeSync(fd);
      fds.length = 0;
      names.length = 0;
    },
  };
}

/**
 * Opens the regular file `relative` below `root` through {@link beneathOpener}, as a FileHandle; undefined when it
 * is gone, no longer a regular file (a FIFO, a device), or reached only through a component that is no longer a
 * directory. For callers that read with FileHandle (large files): the handle is opened again through the checked
 * descriptor (`/proc/self/fd/<fd>`), which resolves no path.
 */
export async function openFileBeneath(root: string, relative: string): Promise<FileHandle | undefined> {
  const opener = beneathOpener(fs, root);
  let fd: number;
  try {
    fd = opener.open(relative, fs.constants.O_RDONLY);
  } catch (error) {
    if (isGoneOrMoved(error)) return undefined;
    throw error;
  } finally {
    opener.close();
  }
  try {
    if (!fs.fstatSync(fd).isFile()) return undefined;
    // The magic link names the file checked above; it is not a path resolved again (O_NOFOLLOW would refuse it).
    if (procFd) return await open(`/proc/self/fd/${fd}`, fs.constants.O_RDONLY);
    return await open(`${root}/${relative}`, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK);
  } finally {
    fs.closeSync(fd);
  }
}

/** What an open of a listed content file fails with when the workspace removed or replaced it (or a directory). */
export function isGoneOrMoved(error: unknown): boolean {
  const code = (error as NodeJS.ErrnoException | undefined)?.code;
  return code === 'ENOENT' || code === 'ELOOP' || code === 'ENOTDIR';
}
