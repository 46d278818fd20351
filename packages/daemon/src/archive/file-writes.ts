/**
 * How `SafeTreeWriter` creates files. A small regular file is always opened O_CREAT | O_EXCL | O_NOFOLLOW, so
 * whatever is in the way (a symlink too) is replaced, never followed; it is written with synchronous calls, or
 * on the thread pool through a {@link WriteQueue}, which bounds how many run at once, lets later work on a path
 * wait for them and keeps the first failure. FIFOs and device nodes are made by `mknod`.
 */
import {
  close as closeFd,
  closeSync,
  constants,
  fchmod,
  fchown,
  futimes,
  open as openFd,
  write as writeFd,
  fchmodSync,
  fchownSync,
  futimesSync,
  lstatSync,
  openSync,
  unlinkSync,
  writeSync,
} from 'node:fs';
import { lstat, unlink } from 'node:fs/promises';
import { promisify } from 'node:util';
import { InvalidArgumentError } from '../errors.js';
import { Semaphore } from '../util/concurrency.js';
import type { TreeEntry } from './tree.js';

/** Descriptor-level calls as promises, without FileHandle objects. */
const fdOps = {
  open: promisify(openFd),
  write: (fd: number, data: Uint8Array, offset: number, length: number, position: number): Promise<number> =>
    new Promise((resolve, reject) =>
      writeFd(fd, data, offset, length, position, (error, bytes) => (error ? reject(error) : resolve(bytes))),
    ),
  fchown: promisify(fchown),
  fchmod: promisify(fchmod),
  futimes: promisify(futimes),
  close: promisify(closeFd),
};

export const noFollowWrite = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW;

/** Creates one small file completely with synchronous calls (create, write, owner, mode, times). */
export function writeSmallFileSync(absolute: string, entry: TreeEntry, data: Uint8Array, preserveOwner: boolean): void {
  let fd: number;
  try {
    fd = openSync(absolute, noFollowWrite, 0o600);
  } catch (error) {
    // Something is in the way (O_EXCL): a directory is refused, anything else (a symlink too) replaced.
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    if (lstatSync(absolute).isDirectory()) {
      throw new InvalidArgumentError('archive', `entry '${entry.path}' would replace a directory`);
    }
    unlinkSync(absolute);
    fd = openSync(absolute, noFollowWrite, 0o600);
  }
  try {
    let written = 0;
    while (written < data.length) written += writeSync(fd, data, written, data.length - written);
    if (preserveOwner) fchownSync(fd, entry.uid, entry.gid);
    fchmodSync(fd, entry.mode);
    const time = entry.mtimeMs / 1000;
    futimesSync(fd, time, time);
  } finally {
    closeSync(fd);
  }
}

/**
 * Creates one small file through plain descriptors (the callback API): a FileHandle per file costs twice the
 * event loop's time of the same six system calls, and a restore creates thousands of files.
 */
export async function writeSmallFileAsync(
  absolute: string,
  entry: TreeEntry,
  data: Uint8Array,
  preserveOwner: boolean,
): Promise<void> {
  let fd: number;
  try {
    fd = await fdOps.open(absolute, noFollowWrite, 0o600);
  } catch (error) {
    // Something is in the way (O_EXCL): a directory is refused, anything else (a symlink too) replaced.
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    if ((await lstat(absolute)).isDirectory()) {
      throw new InvalidArgumentError('archive', `entry '${entry.path}' would replace a directory`);
    }
    await unlink(absolute);
    fd = await fdOps.open(absolute, noFollowWrite, 0o600);
  }
  try {
    let written = 0;
    while (written < data.length) {
      written += await fdOps.write(fd, data, written, data.length - written, written);
    }
    if (preserveOwner) await fdOps.fchown(fd, entry.uid, entry.gid);
    await fdOps.fchmod(fd, entry.mode);
    const time = entry.mtimeMs / 1000;
    await fdOps.futimes(fd, time, time);
  } finally {
    await fdOps.close(fd);
  }
}

/** The arguments of `mknod` that create the FIFO or device node `entry` at `absolute`. */
export function mknodArgs(entry: TreeEntry, absolute: string): string[] {
  const mode = (entry.mode & 0o7777).toString(8);
  return entry.type === 'fifo'
    ? ['-m', mode, absolute, 'p']
    : [
        '-m',
        mode,
        absolute,
        entry.type === 'block-device' ? 'b' : 'c',
        String(entry.devMajor ?? 0),
        String(entry.devMinor ?? 0),
      ];
}

/** Writes running on the thread pool, at most `concurrency` at once; the first failure fails every later call. */
export class WriteQueue {
  /** Queued writes still running, by relative path: later work on that path (or below it) waits for them. */
  private readonly inFlight = new Map<string, Promise<void>>();
  private readonly writeSlots: Semaphore;
  private failure: { error: unknown } | undefined;

  constructor(concurrency: number) {
    this.writeSlots = new Semaphore(concurrency);
  }

  /** Whether any queued write is still running. */
  get busy(): boolean {
    return this.inFlight.size > 0;
  }

  checkFailure(): void {
    if (this.failure) throw this.failure.error;
  }

  /** Waits until no queued write on `path` is running. */
  async settled(path: string): Promise<void> {
    const pending = this.inFlight.get(path);
    // Deliberate: a failed write already set this.failure, which checkFailure/drain report; here we only wait.
    if (pending) await pending.catch(() => undefined);
  }

  /** Starts `write` (the work on `path`) once a slot is free; returns when it has started, not when it is done. */
  async add(path: string, write: () => Promise<void>): Promise<void> {
    const release = await this.writeSlots.acquire();
    this.checkFailure();
    const task = write().then(
      () => undefined,
      (error: unknown) => {
        this.failure ??= { error };
        throw error;
      },
    );
    const tracked = task.finally(() => {
      release();
      if (this.inFlight.get(path) === tracked) this.inFlight.delete(path);
    });
    tracked.catch(() => undefined); // surfaced through checkFailure/drain
    this.inFlight.set(path, tracked);
  }

  /** Waits for every queued write; throws the first failure. */
  async drain(): Promise<void> {
    while (this.inFlight.size > 0) await Promise.allSettled([...this.inFlight.values()]);
    this.checkFailure();
  }
}
