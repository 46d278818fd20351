import { closeSync, constants, lstatSync, opendirSync, openSync, realpathSync } from 'node:fs';
import { FailedPreconditionError } from '../errors.js';
import { openedAt, pinnedDirectory } from './pinned-path.js';
import { LoopYielder } from './small-files.js';

/**
 * Bytes below `dir` (like `du -sb`): allocated blocks, or with `apparent` the file sizes. Symlinks are not
 * followed and hardlinked files count once. Synchronous calls with regular turns for the event loop.
 */
export async function treeBytes(dir: string, options: { apparent?: boolean } = {}): Promise<number> {
  return (await treeUsage(dir, options)).bytes;
}

/**
 * {@link treeBytes}, and the entries below `dir`: every name, a hardlink's too (each is an entry in an archive),
 * where its bytes count once.
 *
 * The walk runs as root over content a workspace may be changing: each directory is opened `O_NOFOLLOW`, checked to
 * be where the walk expects it, and listed and looked at through its descriptor, so that a directory exchanged for
 * a link to a host directory is skipped, not walked (red team round 11 S5). Directories are listed in batches with
 * turns for the event loop in between, whatever their size (one of 2.5 million names held it 12 s in one listing).
 * With `maxEntriesPerDirectory`, a directory with more names fails the walk at that count.
 */
export async function treeUsage(
  dir: string,
  options: { apparent?: boolean; maxEntriesPerDirectory?: number; tooLarge?: (path: string) => Error } = {},
): Promise<{ bytes: number; entries: number }> {
  let total = 0;
  let entries = 0;
  const seen = new Set<string>();
  const yielder = new LoopYielder();
  let root: string;
  try {
    root = realpathSync(dir);
  } catch {
    // Deliberate: nothing there takes no space.
    return { bytes: 0, entries: 0 };
  }
  const pending: string[] = [root];
  while (pending.length > 0) {
    const path = pending.pop() as string;
    let fd: number;
    try {
      fd = openSync(path, constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW);
    } catch {
      // Deliberate: a directory the workspace removed, locked or replaced with a link while we walk adds nothing.
      continue;
    }
    try {
      // Deliberate: moved since it was listed (an ancestor exchanged for a link): not where the walk is, skipped.
      if (!openedAt(fd, path)) continue;
      const pinned = pinnedDirectory(fd, path);
      const listing = opendirSync(pinned, { bufferSize: 1024 });
      let names = 0;
      try {
        for (let entry = listing.readSync(); entry !== null; entry = listing.readSync()) {
          if (options.maxEntriesPerDirectory !== undefined && ++names > options.maxEntriesPerDirectory) {
            const relative = path === root ? '' : path.slice(root.length + 1);
            throw (options.tooLarge ?? tooManyEntries)(relative);
          }
          await yielder.maybeYield();
          let info;
          try {
            info = lstatSync(`${pinned}/${entry.name}`);
          } catch {
            // Deliberate: an entry gone since the listing takes no space.
            continue;
          }
          entries++;
          if (info.nlink > 1 && !info.isDirectory()) {
            const key = `${info.dev}:${info.ino}`;
            if (seen.has(key)) continue;
            seen.add(key);
          }
          total += options.apparent ? info.size : info.blocks * 512;
          if (info.isDirectory()) pending.push(`${path}/${entry.name}`);
        }
      } finally {
        listing.closeSync();
      }
    } finally {
      closeSync(fd);
    }
  }
  return { bytes: total, entries };
}

function tooManyEntries(path: string): Error {
  return new FailedPreconditionError(`the directory '${path.slice(0, 200)}' has too many entries`);
}
