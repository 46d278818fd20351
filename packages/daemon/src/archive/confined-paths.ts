/**
 * Where `SafeTreeWriter` may write: below its root, through parents that are real directories (never a symlink
 * or anything else), and never over a directory. Each check is made with lstat, so nothing on the way is
 * followed.
 */
import { lchown, lstat, mkdir, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { ArchiveEscapeError, InvalidArgumentError } from '../errors.js';
import type { EntryPolicy } from './entry-policy.js';
import type { WriteQueue } from './file-writes.js';
import type { TreeEntry } from './tree.js';

export class ConfinedPaths {
  /** Directories known to be real directories below the root (relative paths). */
  private readonly verified = new Set<string>(['']);

  constructor(
    private readonly root: string,
    private readonly policy: EntryPolicy,
    private readonly writes: WriteQueue,
  ) {}

  /** Whether `path` is known to be a real directory below the root. */
  isVerified(path: string): boolean {
    return this.verified.has(path);
  }

  /** Gives a directory the writer creates on its own (a missing parent) the workspace's owner. */
  private async ownCreated(absolute: string): Promise<void> {
    const owner = this.policy.owner;
    if (owner) await lchown(absolute, owner.uid, owner.gid);
  }

  /** Makes sure every parent of `path` is a real directory below the root, creating missing ones. */
  async ensureParents(path: string, original: string): Promise<void> {
    const parts = path.split('/');
    parts.pop();
    let current = '';
    for (const part of parts) {
      current = current === '' ? part : `${current}/${part}`;
      if (this.verified.has(current)) continue;
      // A queued file at an ancestor must exist before we look (the entry is then refused, as in order).
      await this.writes.settled(current);
      const absolute = join(this.root, current);
      let info;
      try {
        info = await lstat(absolute);
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
        try {
          await mkdir(absolute, { mode: 0o755 });
          await this.ownCreated(absolute);
          this.verified.add(current);
          continue;
        } catch (mkdirError) {
          // A concurrent entry created it first: check what is there now.
          if ((mkdirError as NodeJS.ErrnoException).code !== 'EEXIST') throw mkdirError;
          info = await lstat(absolute);
        }
      }
      if (info.isSymbolicLink()) {
        throw new ArchiveEscapeError(
          original,
          `parent '${current}' is a symlink; writing through it could leave the workspace`,
        );
      }
      if (!info.isDirectory())
        throw new InvalidArgumentError('archive', `entry '${original}': parent '${current}' is not a directory`);
      this.verified.add(current);
    }
  }

  /**
   * Makes the not yet verified `path` (at `absolute`) a real directory: a directory there is kept, a symlink
   * refused, anything else replaced.
   */
  async makeDirectory(path: string, absolute: string, original: string): Promise<void> {
    let info;
    try {
      info = await lstat(absolute);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
    }
    if (info && !info.isDirectory()) {
      if (info.isSymbolicLink()) {
        throw new ArchiveEscapeError(original, 'a symlink exists where the archive has a directory');
      }
      await unlink(absolute);
      info = undefined;
    }
    if (!info) {
      try {
        await mkdir(absolute, { mode: 0o700 });
      } catch (error) {
        // Created meanwhile by a concurrent entry (a missing parent of a sibling): fine if a directory.
        if ((error as NodeJS.ErrnoException).code !== 'EEXIST' || !(await lstat(absolute)).isDirectory()) throw error;
      }
    }
    this.verified.add(path);
  }

  /**
   * Where a hardlink's normalized `target` is, checked by the same rules as a path: its parents are real
   * directories, a queued write of it is done, and it exists and is not a directory.
   */
  async linkTarget(target: string, entry: TreeEntry): Promise<string> {
    await this.ensureParents(target, entry.path);
    await this.writes.settled(target);
    const targetAbsolute = join(this.root, target);
    let info;
    try {
      info = await lstat(targetAbsolute);
    } catch {
      throw new InvalidArgumentError(
        'archive',
        `hardlink '${entry.path}' points to '${entry.linkTarget}', which does not exist`,
      );
    }
    if (info.isDirectory()) throw new ArchiveEscapeError(entry.path, 'hardlinks to directories are not allowed');
    return targetAbsolute;
  }
}

/** Removes whatever is at `absolute` unless it is a directory (which is refused). */
export async function clearPath(absolute: string, original: string): Promise<void> {
  let info;
  try {
    info = await lstat(absolute);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw error;
  }
  if (info.isDirectory()) {
    throw new InvalidArgumentError('archive', `entry '${original}' would replace a directory`);
  }
  await unlink(absolute);
}
