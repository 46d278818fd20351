/**
 * TEST ONLY: a tiny tmpfs mount for fault-injection tests (a disk that fills up, or turns read-only). Needs root
 * (mount); `smallDiskSupported` says whether this process can mount.
 */
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, rm, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

export const smallDiskSupported = process.platform === 'linux' && process.getuid?.() === 0;

export interface SmallDisk {
  readonly dir: string;
  /** Fills every free byte (a later write fails with ENOSPC). */
  fill(): Promise<void>;
  /** Frees what `fill` took. */
  free(): Promise<void>;
  /** Remounts read-only (writes fail with EROFS) or writable again. */
  setReadOnly(readOnly: boolean): Promise<void>;
  close(): Promise<void>;
}

/** Mounts a `sizeKiB` tmpfs at `at` (created if missing) or at a new temporary directory. */
export async function mountSmallDisk(sizeKiB = 512, at?: string): Promise<SmallDisk> {
  const dir = at ?? (await mkdtemp(join(tmpdir(), 'wb-small-disk-')));
  await mkdir(dir, { recursive: true });
  await run('mount', ['-t', 'tmpfs', '-o', `size=${sizeKiB}k,mode=0700`, 'tmpfs', dir]);
  const filler = join(dir, '.filler');
  return {
    dir,
    fill: async () => {
      await writeFile(filler, Buffer.alloc(sizeKiB * 1024 * 2)).catch((error: NodeJS.ErrnoException) => {
        if (error.code !== 'ENOSPC') throw error;
      });
    },
    free: () => unlink(filler),
    setReadOnly: async (readOnly) => {
      // A remount to read-only fails while a file is open for writing (a write in flight): try again shortly.
      for (let attempt = 1; ; attempt += 1) {
        try {
          await run('mount', ['-o', `remount,${readOnly ? 'ro' : 'rw'}`, dir]);
          return;
        } catch (error) {
          if (attempt >= 100 || !/busy/.test(String((error as { stderr?: unknown }).stderr))) throw error;
          await new Promise((resolve) => setTimeout(resolve, 20));
        }
      }
    },
    close: async () => {
      await run('umount', ['-l', dir]);
      await rm(dir, { recursive: true, force: true });
    },
  };
}
