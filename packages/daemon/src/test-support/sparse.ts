import { createHash, randomBytes } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { closeSync, openSync, readdirSync, readFileSync, readSync, statSync, writeSync } from 'node:fs';

export const MiB = 1024 * 1024;
export const GiB = 1024 * MiB;

/** Creates a sparse file of `size` bytes with random data at `runs` (offset, length); returns the runs' hash. */
export function makeSparseFile(path: string, size: number, runs: ReadonlyArray<readonly [number, number]>): string {
  execFileSync('truncate', ['-s', String(size), path]);
  const fd = openSync(path, 'r+');
  try {
    for (const [offset, length] of runs) writeSync(fd, randomBytes(length), 0, length, offset);
  } finally {
    closeSync(fd);
  }
  return runsHash(path, runs);
}

/** SHA-256 of the bytes of `runs` of the file at `path`, one after the other. */
export function runsHash(path: string, runs: ReadonlyArray<readonly [number, number]>): string {
  const hash = createHash('sha256');
  const fd = openSync(path, 'r');
  try {
    for (const [offset, length] of runs) {
      const buffer = Buffer.alloc(length);
      let filled = 0;
      while (filled < length) {
        const read = readSync(fd, buffer, filled, length - filled, offset + filled);
        if (read === 0) break;
        filled += read;
      }
      hash.update(buffer);
    }
  } finally {
    closeSync(fd);
  }
  return hash.digest('hex');
}

/** Bytes the file at `path` has allocated on disk. */
export function allocatedBytes(path: string): number {
  return statSync(path).blocks * 512;
}

/**
 * Pids of this process's children that run the sparse probe script (archive/sparse-probe-script.ts; found by its
 * `seek_failed`, which the log writer's Perl does not have), read from /proc: what a prober uses or left behind.
 */
export function proberProcesses(): number[] {
  const pids: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      // The parent pid follows the command name, which is in parentheses and may hold spaces.
      const stat = readFileSync(`/proc/${name}/stat`, 'latin1');
      const parent = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (parent === process.pid && readFileSync(`/proc/${name}/cmdline`, 'latin1').includes('seek_failed')) {
        pids.push(Number(name));
      }
    } catch {
      // Gone meanwhile.
    }
  }
  return pids;
}
