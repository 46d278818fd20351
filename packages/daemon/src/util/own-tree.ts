/**
 * Gives a whole content tree one owner (the workspace's host identity, isolation contract). Runs after every
 * initializer, when no workspace process exists yet: whatever an initializer wrote as root (a clone, a
 * download, a restore of an archive that named other owners) becomes the workspace's.
 *
 * Never follows links: every change is an lchown, only directories that lstat says are directories are
 * descended into, and nothing on another file system (a mount below the content) is touched. Cheap when the
 * tree is already right: one lstat per entry, a chown only where the owner differs.
 */
import { lchownSync, lstatSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { LoopYielder } from './small-files.js';

export interface OwnTreeResult {
  /** Entries looked at, the root included. */
  readonly entries: number;
  /** Entries whose owner was changed. */
  readonly changed: number;
}

function isGone(error: unknown): boolean {
  const code = (error as NodeJS.ErrnoException | undefined)?.code;
  return code === 'ENOENT' || code === 'ENOTDIR';
}

export async function ownTree(root: string, uid: number, gid: number): Promise<OwnTreeResult> {
  const yielder = new LoopYielder();
  const rootInfo = lstatSync(root);
  if (!rootInfo.isDirectory()) throw new Error(`${root} is not a directory`);
  let entries = 0;
  let changed = 0;
  const own = (path: string, info: { uid: number; gid: number }): void => {
    entries++;
    if (info.uid === uid && info.gid === gid) return;
    lchownSync(path, uid, gid);
    changed++;
  };
  own(root, rootInfo);
  const pending = [root];
  while (pending.length > 0) {
    const dir = pending.pop() as string;
    let names: string[];
    try {
      names = readdirSync(dir);
    } catch (error) {
      if (isGone(error)) continue;
      throw error;
    }
    for (const name of names) {
      await yielder.maybeYield();
      const path = join(dir, name);
      let info;
      try {
        info = lstatSync(path);
      } catch (error) {
        if (isGone(error)) continue;
        throw error;
      }
      if (info.dev !== rootInfo.dev) continue;
      own(path, info);
      if (info.isDirectory()) pending.push(path);
    }
  }
  return { entries, changed };
}
