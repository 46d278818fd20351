import { lstat, readdir } from 'node:fs/promises';
import { join } from 'node:path';

/** Bytes allocated on disk below `dir` (like `du -sb`, but in blocks actually used), not following symlinks. */
export async function treeBytes(dir: string, options: { apparent?: boolean } = {}): Promise<number> {
  let total = 0;
  const seen = new Set<string>();
  async function visit(path: string): Promise<void> {
    let names: string[];
    try {
      names = await readdir(path);
    } catch {
      return;
    }
    for (const name of names) {
      const child = join(path, name);
      let info;
      try {
        info = await lstat(child);
      } catch {
        continue;
      }
      if (info.nlink > 1 && !info.isDirectory()) {
        const key = `${info.dev}:${info.ino}`;
        if (seen.has(key)) continue;
        seen.add(key);
      }
      total += options.apparent ? info.size : info.blocks * 512;
      if (info.isDirectory()) await visit(child);
    }
  }
  await visit(dir);
  return total;
}
