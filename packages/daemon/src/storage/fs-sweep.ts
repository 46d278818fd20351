import { readdir, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { dataMarker, parseLeftover } from './fs-layout.js';
import { readSidecar } from './fs-objects.js';

/** Leftover data files older than this (from crashed uploads of other processes) are swept. */
const orphanAgeMs = 10 * 60 * 1000;
/** How often one directory is swept for leftovers of crashed uploads (see `LeftoverSweeper.sweep`). */
const sweepIntervalMs = 60 * 1000;

/** Removes the data and temp files that crashed uploads left behind in the directories uploads commit into. */
export class LeftoverSweeper {
  /** When each directory was last swept for leftovers of crashed uploads. */
  private readonly swept = new Map<string, number>();

  /**
   * Removes data and temp files that crashed uploads left in `dir` (older than {@link orphanAgeMs}, and for a data
   * file no longer its object's current one). At most once per {@link sweepIntervalMs} a directory: a listing per
   * upload was quadratic in a directory's objects (a 20 GiB backup's 2,500 packs listed 2,500 times).
   */
  async sweep(dir: string): Promise<void> {
    const now = Date.now();
    const last = this.swept.get(dir);
    if (last !== undefined && now - last < sweepIntervalMs) return;
    // Bounded: forgetting a directory only means it is swept again sooner.
    if (this.swept.size >= 10_000) this.swept.clear();
    this.swept.set(dir, now);
    let names: string[];
    try {
      names = await readdir(dir);
    } catch {
      // Deliberate: best effort after a committed write; leftovers stay for a later sweep.
      return;
    }
    for (const entry of names) {
      const leftover = parseLeftover(entry);
      if (!leftover) continue;
      const path = join(dir, entry);
      try {
        if (now - (await stat(path)).mtimeMs <= orphanAgeMs) continue;
        if (leftover.marker === dataMarker && (await readSidecar(dir, leftover.base))?.data === leftover.id) continue;
        await rm(path, { force: true });
      } catch {
        // Deliberate: raced with another sweeper or a delete; the file is gone or stays for the next sweep.
      }
    }
  }
}
