import { lstatSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { LoopYielder } from './small-files.js';

/**
 * Bytes below `dir` (like `du -sb`): allocated blocks, or with `apparent` the file sizes. Symlinks are not
 * followed and hardlinked files count once. Synchronous calls with regular turns for the event loop.
 */
export async function treeBytes(dir: string, options: { apparent?: boolean } = {}): Promise<number> {
  return (await treeUsage(dir, options)).bytes;
}

/** {@link treeBytes}, and the entries below `dir` (each counted once, like the bytes). */
export async function treeUsage(
  dir: string,
  options: { apparent?: boolean } = {},
): Promise<{ bytes: number; entries: number }> {
  let total = 0;
  let entries = 0;
  const seen = new Set<string>();
  const yielder = new LoopYielder();
  const pending: string[] = [dir];
  while (pending.length > 0) {
    const path = pending.pop() as string;
    let names: string[];
    try {
      names = readdirSync(path);
    } catch {
      // Deliberate: a directory the workspace removed or locked while we walk adds nothing to the usage.
      continue;
    }
    for (const name of names) {
      await yielder.maybeYield();
      const child = join(path, name);
      let info;
      try {
        info = lstatSync(child);
      } catch {
        // Deliberate: an entry gone since the listing takes no space.
        continue;
      }
      if (info.nlink > 1 && !info.isDirectory()) {
        const key = `${info.dev}:${info.ino}`;
        if (seen.has(key)) continue;
        seen.add(key);
      }
      total += options.apparent ? info.size : info.blocks * 512;
      entries++;
      if (info.isDirectory()) pending.push(child);
    }
  }
  return { bytes: total, entries };
}
