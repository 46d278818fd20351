/**
 * The body of a backup worker thread: reads files, cuts them into chunks and hashes the chunks (SHA-256 from
 * node:crypto), so that a backup uses every core while the main thread deduplicates, packs and uploads; and in a
 * restore checks each blob and writes it into the files that use it, so that creating thousands of files (the
 * kernel's work, six calls each) runs on every core instead of as thread-pool round trips from the event loop.
 *
 * The worker runs from source text (`new Worker(source, { eval: true })`) built from the functions below, so
 * that it starts the same way from `dist/` and from the TypeScript sources under vitest. {@link workerMain} must
 * therefore reference nothing from this module's scope: it gets the chunker's `findCut` as an argument and its
 * node modules through `require` (eval workers are CommonJS scripts).
 *
 * Messages (main → worker):
 * - `{ kind: 'files', id, paths, sizes, inodes, chunker }`: read whole small files (one open, one fstat, one
 *   read, one close each when the size and inode are as listed), each to its size once opened; one now larger than
 *   `limit` is not read. Answer `{ id, data, files }`: `data` (transferred) holds the files' bytes one
 *   after the other; per file `{ vanished }`, `{ grown }` or `{ lengths, hashes }` (its chunks, in order).
 * - `{ kind: 'segment', id, key, fd, chunker, end }`: read the next piece (up to 8 MiB) of an open file (the main
 *   thread's descriptor; the worker keeps the position and the bytes after the last cut under `key`), never past
 *   `end` (first piece: the listed size); with `extents` (first piece only) just a sparse file's data extents, back
 *   to back. Answer
 *   `{ id, data, lengths, hashes, bytesRead, eof }` with the complete chunks; at the end the rest is cut too.
 * - `{ kind: 'digest', id, fd }`: the SHA-256 of the whole file behind `fd` (the main thread's descriptor), read
 *   from offset 0 to its end. Answer `{ id, hex }`.
 * - `{ kind: 'hash-update', key, buffer, offset, length }`: feed bytes of a shared buffer (not copied; the sender
 *   leaves them unchanged until the final answer) to the running SHA-256 under `key` (started on first use). No
 *   answer: messages to one worker are handled in order, so a later `hash-final` sees every update before it.
 * - `{ kind: 'hash-final', id, key }`: the SHA-256 of everything fed under `key`. Answer `{ id, hex }`; an error if
 *   nothing was (a replaced worker lost the updates).
 * - `{ kind: 'place', id, buffer, blobs }` (restore): for each blob `{ offset, length, hash, targets }` of the shared
 *   `buffer` (a pack, or a batch of a tar restore's files, without hashes), checks its SHA-256 if given, then writes it to each target: `{ create: true, absolute, mode, uid?,
 *   gid?, mtime }` creates a new file (O_EXCL, O_NOFOLLOW) holding just this blob, with owner, mode and times as
 *   the restore's writer admitted them; `{ create: false, absolute, position }` writes into an existing file of
 *   the restore (O_NOFOLLOW), only the blob's bytes [`from`, `from + length`) when given. Answer `{ id, failures }` (per target `{ blob, target, code, message }`), or
 *   `{ id, corrupt: { blob, actual } }` at the first blob whose content is not its hash (nothing after it written).
 * - `{ kind: 'drop', key }`: forget a file's or a digest's state (its backup or upload failed).
 * - `{ kind: 'recycle', buffer }`: a transferred buffer the main thread is done with, for reuse.
 * A failure answers `{ id, error: { message, code } }`.
 */
import type * as Crypto from 'node:crypto';
import type * as Fs from 'node:fs';
import type * as WorkerThreads from 'node:worker_threads';
import type { ChunkerOptions } from './chunker.js';
import { findCut, gearRoller, gearTable } from './chunker.js';
import type { BeneathOpener } from '../util/pinned-path.js';
import { beneathOpener } from '../util/pinned-path.js';

type FindCut = (data: Uint8Array, options: ChunkerOptions, final: boolean) => number | undefined;

export function workerMain(cut: FindCut, opener: typeof beneathOpener): void {
  /* eslint-disable @typescript-eslint/no-require-imports -- eval workers are CommonJS scripts */
  const { parentPort } = require('node:worker_threads') as typeof WorkerThreads;
  const fs = require('node:fs') as typeof Fs;
  const { createHash, hash } = require('node:crypto') as typeof Crypto;
  /* eslint-enable @typescript-eslint/no-require-imports */
  const segmentBytes = 8 * 1024 * 1024;
  /** Per open file: the read position, the bytes after the last cut; for a sparse file its extents still to read. */
  interface Reading {
    position: number;
    /** Where reading stops: the size the walk listed (a file growing while read must not be read forever). */
    end: number;
    carry: Buffer;
    carried: number;
    extents?: number[];
    next: number;
    left: number;
  }
  const open = new Map<string, Reading>();
  const digests = new Map<string, Crypto.Hash>();
  const sha256 = (data: Uint8Array): string => hash('sha256', data, 'hex');
  // Buffers come back from the main thread once consumed: fresh memory costs a page fault per 4 KiB and
  // garbage collections, which together cost more than the hashing.
  const free: SharedArrayBuffer[] = [];
  const acquire = (bytes: number): Buffer => {
    const index = free.findIndex((b) => b.byteLength >= bytes);
    const buffer =
      index >= 0 ? (free.splice(index, 1)[0] as SharedArrayBuffer) : new SharedArrayBuffer(Math.max(bytes, 12 << 20));
    return Buffer.from(buffer);
  };

  /** Cuts `data` into chunks; without `final`, the bytes after the last cut are left (see `used`). */
  const chunk = (
    data: Buffer,
    chunker: ChunkerOptions,
    final: boolean,
  ): { lengths: number[]; hashes: string[]; used: number } => {
    const lengths: number[] = [];
    const hashes: string[] = [];
    let start = 0;
    while (start < data.length) {
      const length = cut(data.subarray(start), chunker, final);
      if (length === undefined) break;
      lengths.push(length);
      hashes.push(sha256(data.subarray(start, start + length)));
      start += length;
    }
    return { lengths, hashes, used: start };
  };

  /** True when the open `fd` is the file at `path`: no symlinked component was crossed (see pinned-path). */
  const openedAt = (fd: number, path: string): boolean => {
    try {
      return fs.readlinkSync(`/proc/self/fd/${fd}`) === path;
    } catch {
      // Deliberate: without /proc the check is skipped (O_NOFOLLOW on the last component still holds).
      return !fs.existsSync('/proc/self/fd');
    }
  };

  /**
   * Reads a whole file into `target` at `offset`, to the size it has once opened (an editor saving by rename
   * leaves a larger file than the walk listed), growing `target` as needed; returns the bytes read and the buffer,
   * `'grown'` when the file opened is now larger than `limit` (the caller reads it piece by piece instead), or
   * undefined if it vanished or became a symlink. `inode` is the device and inode number the walk listed at `path`.
   * Never past that size: read to its end instead, a workspace that grew files to 15 TiB (sparse) while they were
   * read had this buffer double to 9 GB in the daemon (red team round 10).
   */
  const readInto = (
    path: string,
    /** `path` below the walk's root, opened through `beneath` (see util/pinned-path.ts). */
    beneath: BeneathOpener,
    relative: string,
    inode: readonly [bigint, bigint],
    size: number,
    limit: number,
    target: Buffer,
    offset: number,
  ): [number, Buffer] | 'grown' | undefined => {
    let fd: number;
    try {
      // Beneath the root, never through a directory swapped for a link, and O_NONBLOCK: a FIFO swapped in for the
      // listed file (or a host one reached through a swapped directory) held this worker forever (red team round 10).
      fd = beneath.open(relative, fs.constants.O_RDONLY);
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ELOOP' || code === 'ENOTDIR') return undefined;
      // A lease a process of the workspace holds (fcntl F_SETLEASE) refuses a non-blocking open: named here, where
      // the path below the root is known (the error's own is a /proc/self/fd one).
      if (code === 'EAGAIN' || code === 'EWOULDBLOCK') {
        // Shown to clients: the path clipped and printable, as util/bounds.ts quote() does (this source is self-contained).
        // eslint-disable-next-line no-control-regex
        const shown = relative.slice(0, 64).replace(/[\u0000-\u001f\u007f-\u009f]/g, '?');
        throw Object.assign(new Error(`EAGAIN: '${shown}'`), { code: 'EAGAIN' });
      }
      throw error;
    }
    // A workspace can swap a directory for a link to a host directory at any moment: reading through it would
    // archive host files. The inode the walk listed (through pinned directories) is the file it meant, so the
    // same device and inode is proof enough and costs an fstat. Another inode (the file was replaced since) must
    // be the file at `path` by the kernel's own path of the descriptor, or it is treated as vanished.
    const stats = fs.fstatSync(fd, { bigint: true });
    // No longer a regular file (a FIFO, a device): as vanished, never read.
    if (!stats.isFile() || ((stats.dev !== inode[0] || stats.ino !== inode[1]) && !openedAt(fd, path))) {
      fs.closeSync(fd);
      return undefined;
    }
    try {
      const end = Math.max(size, Number(stats.size));
      if (end > limit) return 'grown';
      let buffer = target;
      if (offset + end > buffer.length) {
        buffer = Buffer.from(new SharedArrayBuffer(Math.max(2 * buffer.length, offset + end)));
        if (offset > 0) buffer.fill(target.subarray(0, offset), 0, offset);
      }
      let filled = 0;
      while (filled < end) {
        const read = fs.readSync(fd, buffer, offset + filled, end - filled, filled);
        if (read === 0) break;
        filled += read;
      }
      return [filled, buffer];
    } finally {
      fs.closeSync(fd);
    }
  };

  interface FilesJob {
    kind: 'files';
    id: number;
    paths: string[];
    /** Each path below its walk's root: opened from there (see util/pinned-path.ts). */
    relatives: string[];
    sizes: number[];
    /** Device and inode number of each file, as the walk listed them: [dev0, ino0, dev1, ino1, ...]. */
    inodes: BigUint64Array;
    /** A file opened larger than this is answered `{ grown }`, not read. */
    limit: number;
    chunker: ChunkerOptions;
  }
  interface SegmentJob {
    kind: 'segment';
    id: number;
    key: string;
    fd: number;
    chunker: ChunkerOptions;
    /** A sparse file's data extents (flat offset/length pairs, sent with its first piece): only they are read. */
    extents?: number[];
    /** The size the walk listed (first piece): nothing past it is read. */
    end?: number;
  }

  interface DigestJob {
    kind: 'digest';
    id: number;
    fd: number;
  }

  const digest = (job: DigestJob): void => {
    const hash = createHash('sha256');
    const buffer = acquire(segmentBytes);
    try {
      for (let position = 0; ;) {
        const read = fs.readSync(job.fd, buffer, 0, segmentBytes, position);
        if (read === 0) break;
        hash.update(buffer.subarray(0, read));
        position += read;
      }
    } finally {
      if (free.length < 4) free.push(buffer.buffer as SharedArrayBuffer);
    }
    parentPort?.postMessage({ id: job.id, hex: hash.digest('hex') });
  };

  const files = (job: FilesJob): void => {
    let buffer = acquire(job.sizes.reduce((sum, size) => sum + size + 1, 0));
    let offset = 0;
    // One opener per walk root in the job (one, from a backup), closed with the job.
    const openers = new Map<string, BeneathOpener>();
    const beneath = (path: string, relative: string): BeneathOpener => {
      const root = path.slice(0, path.length - relative.length - 1);
      let found = openers.get(root);
      if (!found) openers.set(root, (found = opener(fs, root)));
      return found;
    };
    let results;
    try {
      results = job.paths.map((path, i) => {
        const relative = job.relatives[i] as string;
        const inode = [job.inodes[2 * i] as bigint, job.inodes[2 * i + 1] as bigint] as const;
        const read = readInto(
          path,
          beneath(path, relative),
          relative,
          inode,
          job.sizes[i] as number,
          job.limit,
          buffer,
          offset,
        );
        if (!read) return { vanished: true };
        if (read === 'grown') return { grown: true };
        const [length, grown] = read;
        buffer = grown;
        const { lengths, hashes } = chunk(buffer.subarray(offset, offset + length), job.chunker, true);
        offset += length;
        return { lengths, hashes };
      });
    } finally {
      for (const each of openers.values()) each.close();
    }
    const data = new Uint8Array(buffer.buffer, buffer.byteOffset, offset);
    parentPort?.postMessage({ id: job.id, data, files: results });
  };

  const segment = (job: SegmentJob): void => {
    let state = open.get(job.key);
    if (!state) {
      state = {
        position: 0,
        end: job.end ?? Number.MAX_SAFE_INTEGER,
        carry: Buffer.allocUnsafeSlow(job.chunker.maxSize),
        carried: 0,
        next: 0,
        left: 0,
      };
      if (job.extents) state.extents = job.extents;
      open.set(job.key, state);
    }
    const extents = state.extents;
    const buffer = acquire(job.chunker.maxSize + segmentBytes);
    // Copies into and out of shared memory go through fill(), a plain memcpy (see copyBytes in @workbay/api; the worker cannot import it).
    if (state.carried > 0) buffer.fill(state.carry.subarray(0, state.carried), 0, state.carried);
    let filled = state.carried;
    const limit = state.carried + segmentBytes;
    let eof = false;
    while (filled < limit) {
      let want = limit - filled;
      if (extents) {
        // A sparse file's data, extent after extent, back to back: its holes are never read.
        if (state.left === 0) {
          if (state.next >= extents.length) {
            eof = true;
            break;
          }
          state.position = extents[state.next] as number;
          state.left = extents[state.next + 1] as number;
          state.next += 2;
        }
        want = Math.min(want, state.left);
      } else if (state.position >= state.end) {
        eof = true;
        break;
      } else {
        want = Math.min(want, state.end - state.position);
      }
      const read = fs.readSync(job.fd, buffer, filled, want, state.position);
      if (read === 0) {
        eof = true;
        break;
      }
      filled += read;
      state.position += read;
      if (extents) state.left -= read;
    }
    const bytesRead = filled - state.carried;
    const content = buffer.subarray(0, filled);
    const { lengths, hashes, used } = chunk(content, job.chunker, eof);
    // The bytes after the last cut start the next piece (less than a maximum chunk, or a cut would be there).
    const rest = content.subarray(used);
    if (rest.length > 0) state.carry.fill(rest, 0, rest.length);
    state.carried = rest.length;
    if (eof) open.delete(job.key);
    const data = new Uint8Array(buffer.buffer, buffer.byteOffset, used);
    parentPort?.postMessage({ id: job.id, data, lengths, hashes, bytesRead, eof });
  };

  interface PlaceTarget {
    create: boolean;
    absolute: string;
    position?: number;
    /** Only these bytes of the blob (a piece of a sparse file's data between two holes). */
    from?: number;
    length?: number;
    mode?: number;
    uid?: number;
    gid?: number;
    mtime?: number;
  }
  interface PlaceJob {
    kind: 'place';
    id: number;
    buffer: SharedArrayBuffer;
    blobs: Array<{ offset: number; length: number; hash?: string; targets: PlaceTarget[] }>;
  }

  const writeAll = (fd: number, data: Buffer, position: number): void => {
    for (let written = 0; written < data.length;) {
      written += fs.writeSync(fd, data, written, data.length - written, position + written);
    }
  };

  /** The calls tar makes per file, in the same order (chown clears setuid bits, so mode comes after it). */
  const createFile = (target: PlaceTarget, data: Buffer): void => {
    const { O_WRONLY, O_CREAT, O_EXCL, O_NOFOLLOW } = fs.constants;
    const fd = fs.openSync(target.absolute, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0o600);
    try {
      writeAll(fd, data, 0);
      if (target.uid !== undefined) fs.fchownSync(fd, target.uid, target.gid as number);
      fs.fchmodSync(fd, target.mode as number);
      fs.futimesSync(fd, target.mtime as number, target.mtime as number);
    } finally {
      fs.closeSync(fd);
    }
  };

  const writeInto = (target: PlaceTarget, data: Buffer): void => {
    const fd = fs.openSync(target.absolute, fs.constants.O_WRONLY | fs.constants.O_NOFOLLOW);
    try {
      const part = target.length === undefined ? data : data.subarray(target.from, (target.from ?? 0) + target.length);
      writeAll(fd, part, target.position as number);
    } finally {
      fs.closeSync(fd);
    }
  };

  const place = (job: PlaceJob): void => {
    const pack = Buffer.from(job.buffer);
    const failures: Array<{ blob: number; target: number; code?: string; message: string }> = [];
    for (const [b, blob] of job.blobs.entries()) {
      const data = pack.subarray(blob.offset, blob.offset + blob.length);
      // A tar restore's files come without hashes (the archive has none).
      const actual = blob.hash === undefined ? undefined : sha256(data);
      if (actual !== blob.hash) {
        parentPort?.postMessage({ id: job.id, corrupt: { blob: b, actual }, failures });
        return;
      }
      for (const [t, target] of blob.targets.entries()) {
        try {
          if (target.create) createFile(target, data);
          else writeInto(target, data);
        } catch (error) {
          const failure = error as NodeJS.ErrnoException;
          failures.push({
            blob: b,
            target: t,
            message: String(failure?.message ?? error),
            ...(failure?.code ? { code: failure.code } : {}),
          });
        }
      }
    }
    parentPort?.postMessage({ id: job.id, failures });
  };

  interface HashFinalJob {
    kind: 'hash-final';
    id: number;
    key: string;
  }

  const hashFinal = (job: HashFinalJob): void => {
    const hash = digests.get(job.key);
    if (!hash) throw new Error(`no digest state for ${job.key}`);
    digests.delete(job.key);
    parentPort?.postMessage({ id: job.id, hex: hash.digest('hex') });
  };

  type Control =
    | { kind: 'drop'; key: string }
    | { kind: 'recycle'; buffer: SharedArrayBuffer }
    | { kind: 'hash-update'; key: string; buffer: SharedArrayBuffer; offset: number; length: number };
  // Recycled buffers are let go once no backup has used the worker for a while (a daemon is mostly idle).
  let idle: ReturnType<typeof setTimeout> | undefined;
  const touch = (): void => {
    if (idle) clearTimeout(idle);
    idle = setTimeout(() => (free.length = 0), 5_000);
    idle.unref();
  };
  parentPort?.on('message', (job: FilesJob | SegmentJob | DigestJob | HashFinalJob | PlaceJob | Control) => {
    touch();
    if (job.kind === 'drop') {
      open.delete(job.key);
      digests.delete(job.key);
      return;
    }
    if (job.kind === 'hash-update') {
      let hash = digests.get(job.key);
      if (!hash) digests.set(job.key, (hash = createHash('sha256')));
      hash.update(new Uint8Array(job.buffer, job.offset, job.length));
      return;
    }
    if (job.kind === 'recycle') {
      if (free.length < 6) free.push(job.buffer);
      return;
    }
    try {
      if (job.kind === 'files') files(job);
      else if (job.kind === 'digest') digest(job);
      else if (job.kind === 'hash-final') hashFinal(job);
      else if (job.kind === 'place') place(job);
      else segment(job);
    } catch (error) {
      if (job.kind === 'segment') open.delete(job.key);
      const failure = error as NodeJS.ErrnoException;
      parentPort?.postMessage({
        id: job.id,
        error: { message: String(failure?.message ?? error), code: failure?.code },
      });
    }
  });
}

/** The worker's source text: the gear hash, the chunker, and {@link workerMain}. */
export function workerSource(): string {
  return [
    `const gear = (${gearRoller.toString()})((${gearTable.toString()})());`,
    findCut.toString(),
    `(${workerMain.toString()})(findCut, ${beneathOpener.toString()});`,
  ].join('\n');
}
