import { closeSync, constants, fstatSync, openSync, readSync } from 'node:fs';
import { setImmediate as yieldToLoop } from 'node:timers/promises';

/**
 * Files up to this size are read with synchronous calls: four thread-pool round trips per small file cost
 * more than the read itself, and the pool is busy with uploads during a backup. Callers yield to the event
 * loop regularly (see {@link LoopYielder}) so the daemon stays responsive.
 */
export const smallFileLimit = 256 * 1024;

/** Reads a whole small file without following a symlink; undefined if it vanished or became a symlink. */
export function readSmallFileSync(path: string): Buffer | undefined {
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ELOOP') return undefined;
    throw error;
  }
  try {
    const size = fstatSync(fd).size;
    const buffer = Buffer.allocUnsafe(size + 1);
    let filled = 0;
    for (;;) {
      if (filled === buffer.length) break;
      const read = readSync(fd, buffer, filled, buffer.length - filled, filled);
      if (read === 0) break;
      filled += read;
    }
    if (filled <= size) return buffer.subarray(0, filled);
    // It grew while we read: read the rest in one more go.
    const rest: Buffer[] = [buffer];
    for (;;) {
      const more = Buffer.allocUnsafe(64 * 1024);
      const read = readSync(fd, more, 0, more.length, filled);
      if (read === 0) break;
      rest.push(more.subarray(0, read));
      filled += read;
    }
    return Buffer.concat(rest, filled);
  } finally {
    closeSync(fd);
  }
}

/**
 * Reads a small file into `scratch` (without following a symlink) and returns the filled part; a file that
 * grew beyond the scratch buffer is read whole into a new buffer. Undefined if it vanished.
 */
export function readSmallFileInto(path: string, scratch: Buffer): Buffer | undefined {
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ELOOP') return undefined;
    throw error;
  }
  try {
    let filled = 0;
    while (filled < scratch.length) {
      const read = readSync(fd, scratch, filled, scratch.length - filled, filled);
      if (read === 0) return scratch.subarray(0, filled);
      filled += read;
    }
  } finally {
    closeSync(fd);
  }
  // Larger than the scratch buffer (it grew since it was listed).
  return readSmallFileSync(path);
}

/** Gives the event loop a turn after every `sliceMs` of synchronous work. */
export class LoopYielder {
  private last = performance.now();
  constructor(private readonly sliceMs = 8) {}

  async maybeYield(): Promise<void> {
    const now = performance.now();
    if (now - this.last < this.sliceMs) return;
    await yieldToLoop();
    this.last = performance.now();
  }
}
