/**
 * Streaming tar archives of a workspace tree. Packing reads one file at a time straight into the tar stream
 * and extraction (extract.ts) writes each entry as it arrives, so neither keeps a copy of the archive in memory or on
 * disk. Modes, ownership, mtimes, symlinks, hardlinks, FIFOs/devices and xattrs (pax `SCHILY.xattr.*`) are
 * kept; extraction goes through {@link SafeTreeWriter}, which refuses paths that leave the target. Sparse files
 * are stored as their data in GNU's pax sparse format 1.0, and restored sparse (tar-sparse.ts).
 */
import * as fs from 'node:fs';
import { closeSync, constants, fstatSync, readSync } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { Readable } from 'node:stream';
import type { Header } from 'tar-stream';
import { compressStream } from './compression.js';
import { b64XattrPrefix, encodeEntryHeader, endOfArchive, padding, schilyXattrPrefix } from './tar-header.js';
import type { Compression } from './compression.js';
import type { EntryType, TreeEntry, WalkOptions } from './tree.js';
import { walkTree } from './tree.js';
import { extentBytes, isSparseCandidate } from './sparse.js';
import { SparseProber } from './sparse-prober.js';
import { encodeSparseMap, readExtents, sparseHeader } from './tar-sparse.js';
import type { BeneathOpener } from '../util/pinned-path.js';
import { beneathOpener, isGoneOrMoved, openFileBeneath, openedAt } from '../util/pinned-path.js';
import { LoopYielder, smallFileLimit } from '../util/small-files.js';
import type { Xattrs } from './xattr.js';
import { readTreeXattrs, xattrSupport } from './xattr.js';
import type { XattrReader } from './xattr.js';

export interface PackOptions {
  readonly exclude?: WalkOptions['exclude'];
  /** Read and store xattrs (default true; skipped with a warning when the attr tools are missing). */
  readonly xattrs?: boolean;
  /** Whose eyes xattrs are read with (content a running workspace may change: see readTreeXattrs). */
  readonly xattrReader?: XattrReader;
  readonly compression?: Compression;
  readonly onWarning?: (message: string) => void;
  readonly signal?: AbortSignal;
}

export interface PackStats {
  readonly entries: number;
  readonly files: number;
  /** Bytes of file content archived. */
  readonly contentBytes: number;
  /** Files that changed size while they were read (padded or cut to the size first seen). */
  readonly changedWhileReading: number;
  /** Files archived as sparse files (their holes not stored; `contentBytes` counts their data only). */
  readonly sparseFiles: number;
}

/** A header as tar-stream takes it; pax records (strings) travel in `pax`. */
export type Headers = Partial<Omit<Header, 'pax'>> & { name: string; pax?: Record<string, string> | null };

const readChunk = 1024 * 1024;
/** Archive output is handed out in buffers of this size (small entries are packed together). */
const batchSize = 1024 * 1024;

/** Collects archive bytes into one buffer; `take` hands out what is there and starts a new one. */
class OutputBatch {
  private buffer: Buffer;
  private used = 0;

  constructor(private readonly size: number) {
    this.buffer = Buffer.allocUnsafe(size);
  }

  get free(): number {
    return this.buffer.length - this.used;
  }

  append(data: Buffer): void {
    data.copy(this.buffer, this.used);
    this.used += data.length;
  }

  /** A writable window of `length` bytes at the current end. */
  reserve(length: number): Buffer {
    const window = this.buffer.subarray(this.used, this.used + length);
    this.used += length;
    return window;
  }

  take(): Buffer {
    const out = this.buffer.subarray(0, this.used);
    this.buffer = Buffer.allocUnsafe(this.size);
    this.used = 0;
    return out;
  }
}

/**
 * Opens a listed file beneath the archive's root (util/pinned-path.ts): never through a directory swapped for a link,
 * and O_NONBLOCK, so a FIFO swapped in since the walk cannot block the event loop (red team round 10). Undefined
 * when it is gone or moved.
 */
function openListedSync(beneath: BeneathOpener, relative: string): number | undefined {
  try {
    return beneath.open(relative, constants.O_RDONLY);
  } catch (error) {
    if (isGoneOrMoved(error)) return undefined;
    throw error;
  }
}

/** Reads up to `size` bytes from the start of `fd` into `target`; returns how many there were. */
function readFullySync(fd: number, target: Buffer, size: number): number {
  let filled = 0;
  while (filled < size) {
    const read = readSync(fd, target, filled, size - filled, filled);
    if (read === 0) break;
    filled += read;
  }
  return filled;
}

/** The entry a tar header describes; undefined for header types that carry no tree entry. */
export function headerToEntry(header: Headers): TreeEntry | undefined {
  let type: EntryType;
  switch (header.type) {
    case 'file':
    case 'contiguous-file':
      type = 'file';
      break;
    case 'link':
      type = 'hardlink';
      break;
    case 'directory':
    case 'symlink':
    case 'fifo':
    case 'character-device':
    case 'block-device':
      type = header.type;
      break;
    default:
      return undefined;
  }
  const pax = (header.pax ?? {}) as Record<string, string>;
  // A sparse file (tar-sparse.ts): its real name and size are in the pax records.
  const sparse = type === 'file' ? sparseHeader(pax, header.name) : undefined;
  const xattrs: Xattrs = {};
  for (const [key, value] of Object.entries(pax)) {
    if (key.startsWith(schilyXattrPrefix)) xattrs[key.slice(schilyXattrPrefix.length)] ??= Buffer.from(value, 'utf8');
  }
  // Binary values: tar-stream decodes pax values as UTF-8, so the base64 twin is the faithful copy.
  for (const [key, value] of Object.entries(pax)) {
    if (key.startsWith(b64XattrPrefix)) xattrs[key.slice(b64XattrPrefix.length)] = Buffer.from(value, 'base64');
  }
  const paxNumber = (key: string): number | undefined => {
    const value = pax[key];
    return value !== undefined && /^\d+(\.\d+)?$/.test(value) ? Number(value) : undefined;
  };
  const paxMtime = paxNumber('mtime');
  return {
    path: sparse?.name ?? header.name,
    type,
    mode: (header.mode ?? (type === 'directory' ? 0o755 : 0o644)) & 0o7777,
    uid: paxNumber('uid') ?? header.uid ?? 0,
    gid: paxNumber('gid') ?? header.gid ?? 0,
    size: type === 'file' ? (sparse?.realSize ?? header.size ?? 0) : 0,
    mtimeMs: paxMtime !== undefined ? Math.round(paxMtime * 1000) : (header.mtime?.getTime() ?? Date.now()),
    ...(header.linkname ? { linkTarget: header.linkname } : {}),
    ...(header.devmajor !== undefined ? { devMajor: header.devmajor } : {}),
    ...(header.devminor !== undefined ? { devMinor: header.devminor } : {}),
    ...(Object.keys(xattrs).length > 0 ? { xattrs } : {}),
  };
}

/**
 * Reads exactly `size` bytes of an open file: a file that shrank while being read is padded with zeros,
 * growth beyond `size` is cut, so the archive stays well-formed. `changed` reports either.
 */
async function* readExactly(
  handle: FileHandle,
  size: number,
  changed: () => void,
  signal?: AbortSignal,
): AsyncGenerator<Buffer> {
  let position = 0;
  while (position < size) {
    signal?.throwIfAborted();
    const want = Math.min(readChunk, size - position);
    const buffer = Buffer.allocUnsafe(want);
    const { bytesRead } = await handle.read(buffer, 0, want, position);
    if (bytesRead === 0) {
      // The file shrank while read: the header already promised `size` bytes, so zeros make up the rest, a
      // block at a time (one buffer of the rest would be as large as the file claimed to be, up to 16 TiB).
      changed();
      const zeros = Buffer.alloc(Math.min(readChunk, size - position));
      for (; position < size; position += zeros.length) {
        signal?.throwIfAborted();
        yield position + zeros.length <= size ? zeros : zeros.subarray(0, size - position);
      }
      return;
    }
    yield bytesRead === want ? buffer : buffer.subarray(0, bytesRead);
    position += bytesRead;
  }
  const probe = Buffer.allocUnsafe(1);
  if ((await handle.read(probe, 0, 1, size)).bytesRead > 0) changed();
}

export interface PackedTree {
  /** The archive bytes (compressed when asked). */
  readonly stream: Readable;
  /** Resolves with statistics once the whole tree was written to the stream; rejects if packing failed. */
  readonly done: Promise<PackStats>;
}

/** Streams a pax tar archive of `root` (the root directory itself is not an entry). */
export function packTree(root: string, options: PackOptions = {}): PackedTree {
  let settle!: { resolve: (stats: PackStats) => void; reject: (error: unknown) => void };
  const done = new Promise<PackStats>((resolve, reject) => (settle = { resolve, reject }));
  done.catch(() => undefined); // callers that only consume the stream see the error there
  async function* generate(): AsyncGenerator<Buffer> {
    let result: PackStats | undefined;
    let failure: { error: unknown } | undefined;
    // One Perl probes the archive's sparse files (sparse-prober.ts); started at the first one.
    const prober = new SparseProber();
    // Files are opened beneath the root, through the chain of directories of the last one (walk order).
    const beneath = beneathOpener(fs, root);
    try {
      let entries = 0;
      let files = 0;
      let contentBytes = 0;
      let changedWhileReading = 0;
      let sparseFiles = 0;
      const yielder = new LoopYielder();
      const batch = new OutputBatch(batchSize);
      let xattrs = new Map<string, Xattrs>();
      if (options.xattrs !== false) {
        const support = await xattrSupport();
        if (support.available) xattrs = await readTreeXattrs(root, options.xattrReader);
        else options.onWarning?.(support.reason ?? 'xattrs not supported');
      }
      const walk = walkTree(root, {
        xattrs,
        ...(options.exclude ? { exclude: options.exclude } : {}),
        onSkip: (path, reason) => options.onWarning?.(`skipped '${path}': ${reason}`),
      });
      for await (const { entry, absolute } of walk) {
        options.signal?.throwIfAborted();
        if (entry.type !== 'file') {
          const header = encodeEntryHeader(entry, 0);
          if (batch.free < header.length) yield batch.take();
          batch.append(header);
          entries++;
          continue;
        }
        if (entry.size <= smallFileLimit) {
          // Small files are read synchronously straight into the output batch: no per-file buffers (whose
          // garbage collection dominated) and no thread-pool round trips.
          await yielder.maybeYield();
          const fd = openListedSync(beneath, entry.path);
          if (fd === undefined) {
            options.onWarning?.(`skipped '${entry.path}': vanished`);
            continue;
          }
          try {
            if (!openedAt(fd, absolute)) {
              options.onWarning?.(`skipped '${entry.path}': moved while archived`);
              continue;
            }
            const stats = fstatSync(fd);
            if (!stats.isFile()) {
              options.onWarning?.(`skipped '${entry.path}': no longer a regular file`);
              continue;
            }
            const size = stats.size;
            if (size <= smallFileLimit) {
              const header = encodeEntryHeader({ ...entry, size }, size);
              const pad = padding(size);
              if (batch.free < header.length + size + pad.length) yield batch.take();
              batch.append(header);
              const target = batch.reserve(size);
              const got = readFullySync(fd, target, size);
              if (got < size) {
                target.fill(0, got);
                changedWhileReading++;
                options.onWarning?.(`'${entry.path}' changed while it was archived`);
              }
              batch.append(pad);
              entries++;
              files++;
              contentBytes += size;
              continue;
            }
          } finally {
            closeSync(fd);
          }
        }
        const pending = batch.take();
        if (pending.length > 0) yield pending;
        // A regular file, beneath the root (as above), read through a handle.
        const handle = await openFileBeneath(root, entry.path);
        if (!handle) {
          options.onWarning?.(`skipped '${entry.path}': vanished or no longer a regular file`);
          continue;
        }
        try {
          if (!openedAt(handle.fd, absolute)) {
            options.onWarning?.(`skipped '${entry.path}': moved while archived`);
            continue;
          }
          const stats = await handle.stat();
          const size = stats.size;
          // A sparse file's holes are not read, nor stored (tar-sparse.ts); a failed probe fails the archive.
          const extents = isSparseCandidate(stats) ? await prober.probe(handle.fd, size, entry.path) : undefined;
          let changed = false;
          if (extents) {
            const map = encodeSparseMap(extents, size);
            const stored = map.length + extentBytes(extents);
            yield encodeEntryHeader({ ...entry, size }, stored, { realSize: size });
            yield map;
            yield* readExtents(handle, extents, () => (changed = true), options.signal);
            yield padding(stored);
            sparseFiles++;
          } else {
            yield encodeEntryHeader({ ...entry, size }, size);
            yield* readExactly(handle, size, () => (changed = true), options.signal);
            yield padding(size);
          }
          if (changed) {
            changedWhileReading++;
            options.onWarning?.(`'${entry.path}' changed while it was archived`);
          }
          entries++;
          files++;
          contentBytes += extents ? extentBytes(extents) : size;
        } finally {
          await handle.close();
        }
      }
      if (batch.free < endOfArchive.length) yield batch.take();
      batch.append(endOfArchive);
      yield batch.take();
      result = { entries, files, contentBytes, changedWhileReading, sparseFiles };
    } catch (error) {
      failure = { error };
      throw error;
    } finally {
      // Settled once no Perl is left, however the archive ended (done, failed, or its stream closed early).
      await prober.close();
      beneath.close();
      if (result) settle.resolve(result);
      else settle.reject(failure ? failure.error : new Error('archive stream was closed before it was complete'));
    }
  }
  const tar = Readable.from(generate(), { objectMode: false, highWaterMark: 4 * 1024 * 1024 });
  const compression = options.compression ?? 'none';
  if (compression === 'none') return { stream: tar, done };
  const compressor = compressStream(compression);
  tar.on('error', (error: Error) => compressor.destroy(error));
  tar.pipe(compressor);
  return { stream: compressor, done };
}
