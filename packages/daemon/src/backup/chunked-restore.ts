/**
 * Restore of an incremental backup (see chunked.ts for the layout): reads the manifest's tree, creates its
 * directories, then reads each pack once into shared memory and hands it to a worker thread, which checks every
 * blob against its SHA-256 and writes it to the files that use it (hash-worker.ts, `place`). The event loop only
 * reads packs and plans; the kernel's work of creating thousands of files runs on every core.
 */
import { constants } from 'node:fs';
import { open } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import { copyBytes } from '@workbay/api';
import { DataCorruptionError, InvalidArgumentError, isWorkbayError, NotFoundError } from '../errors.js';
import { decompressAuto } from '../archive/compression.js';
import { normalizeEntryPath, SafeTreeWriter } from '../archive/safe-writer.js';
import type { SafeWriterOptions } from '../archive/safe-writer.js';
import type { TreeEntry } from '../archive/tree.js';
import { mapLimit } from '../util/concurrency.js';
import type { BackupTarget } from './chunked.js';
import type { BackupManifest, ManifestEntry } from './manifest.js';
import { toTreeEntry } from './manifest.js';
import { extentBytes, placeData } from '../archive/sparse.js';
import { packName } from './pack-writer.js';
import type { PlaceBlob, PlaceTarget } from './worker-writes.js';
import { placeFailure, placeOnWorker, SharedBuffers } from './worker-writes.js';

/** Directories created at once during a restore. */
const directoryConcurrency = 8;

export interface ChunkedRestoreOptions extends SafeWriterOptions {
  /**
   * Packs in flight (default 6): read into memory, then checked and written out by a worker. Fewer left the
   * workers waiting for the next pack (a 1 GiB restore took 2.9 s with 3, 1.8 s with 6); each holds up to 12 MiB.
   */
  readonly downloadConcurrency?: number;
  readonly signal?: AbortSignal;
}

export interface RestoreStats {
  readonly files: number;
  readonly contentBytes: number;
  /** Bytes downloaded. */
  readonly transferredBytes: number;
}

interface PendingFile {
  readonly entry: ManifestEntry;
  readonly tree: TreeEntry;
  /** Blob occurrences not yet written. */
  remaining: number;
  /** Whole file in one blob: created by the worker that checks the blob. */
  readonly single: boolean;
  /** For multi-blob files: the created file (relative path), once created. */
  created?: Promise<string>;
}

/** Restores a chunked backup into `root` (which should be empty). */
export async function restoreChunkedBackup(
  root: string,
  target: BackupTarget,
  manifest: BackupManifest,
  options: ChunkedRestoreOptions = {},
): Promise<RestoreStats> {
  const writer = new SafeTreeWriter(root, options);
  const placements = new Map<number, Array<{ file: PendingFile; offset: number }>>();
  const files: PendingFile[] = [];
  try {
    return await restoreInto(writer, root, target, manifest, options, placements, files);
  } catch (error) {
    // No queued write may still run once the caller sees the failure (it may clean up the target).
    await writer.drain().catch(() => undefined);
    throw error;
  }
}

async function restoreInto(
  writer: SafeTreeWriter,
  root: string,
  target: BackupTarget,
  manifest: BackupManifest,
  options: ChunkedRestoreOptions,
  placements: Map<number, Array<{ file: PendingFile; offset: number }>>,
  files: PendingFile[],
): Promise<RestoreStats> {
  const signal = options.signal;
  // Directories level by level (parents first), each level in parallel: creating an inode is kernel work
  // that costs up to a millisecond here, and the thread pool overlaps it.
  const levels = new Map<number, TreeEntry[]>();
  for (const entry of manifest.entries) {
    if (entry.type !== 'directory') continue;
    const tree = toTreeEntry(entry);
    const depth = normalizeEntryPath(tree.path).split('/').length;
    const level = levels.get(depth);
    if (level) level.push(tree);
    else levels.set(depth, [tree]);
  }
  for (const depth of [...levels.keys()].sort((a, b) => a - b)) {
    // Checked before each directory, not only each level: one level may hold hundreds of thousands (red team
    // round 14, F5: 240,000 at one depth held a stop 8.8 s).
    await mapLimit(levels.get(depth) as TreeEntry[], directoryConcurrency, (tree) => {
      signal?.throwIfAborted();
      return writer.directory(tree);
    });
  }
  // Multi-blob and sparse files are created (and sized: a sparse file's holes stay holes) here; their blobs are
  // written into them by the workers, and owner, mode and times are set here once the last one is in.
  const created = (file: PendingFile): Promise<string> =>
    (file.created ??= (async () => {
      const { handle, path } = await writer.createFile(file.tree);
      try {
        await handle.truncate(file.entry.size);
      } finally {
        await handle.close();
      }
      return path;
    })());
  const finish = async (file: PendingFile): Promise<void> => {
    const path = await created(file);
    const handle = await open(`${root}/${path}`, constants.O_WRONLY | constants.O_NOFOLLOW);
    try {
      await writer.finishFile(handle, file.tree, path);
    } finally {
      await handle.close();
    }
  };

  for (const entry of manifest.entries) {
    if (entry.type !== 'file') continue;
    signal?.throwIfAborted();
    const tree = toTreeEntry(entry);
    const blobs = entry.blobs ?? [];
    const total = blobs.reduce(
      (sum, b) => sum + (manifest.blobs[b] as readonly [string, number, number, number])[3],
      0,
    );
    // A sparse file's blobs are the data of its extents (checked against its size by manifest-schema.ts).
    const content = entry.extents ? extentBytes(entry.extents) : entry.size;
    if (total !== content) {
      throw new InvalidArgumentError(
        'manifest',
        `entry '${entry.path}': blobs add up to ${total} bytes, not ${content}`,
      );
    }
    const sparse = entry.extents !== undefined;
    if (blobs.length === 0) {
      if (!sparse || entry.size === 0) await writer.queueSmallFile(tree, Buffer.alloc(0));
      else await finish({ entry, tree, remaining: 0, single: false });
      continue;
    }
    const file: PendingFile = {
      entry,
      tree,
      remaining: blobs.length,
      single: blobs.length === 1 && !sparse,
    };
    files.push(file);
    let offset = 0;
    for (const blob of blobs) {
      const list = placements.get(blob) ?? [];
      list.push({ file, offset });
      placements.set(blob, list);
      offset += (manifest.blobs[blob] as readonly [string, number, number, number])[3];
    }
  }

  // Which blobs each pack must deliver, in pack order.
  const byPack = new Map<number, number[]>();
  for (const blob of placements.keys()) {
    const pack = (manifest.blobs[blob] as readonly [string, number, number, number])[1];
    const list = byPack.get(pack) ?? [];
    list.push(blob);
    byPack.set(pack, list);
  }
  let transferredBytes = 0;
  const buffers = new SharedBuffers(12 * 1024 * 1024);
  /** Worker jobs still running: a failed restore waits for them before its caller may clean up. */
  const jobs = new Set<Promise<unknown>>();
  try {
    await mapLimit([...byPack.entries()], options.downloadConcurrency ?? 6, async ([pack, blobList]) => {
      signal?.throwIfAborted();
      const packInfo = manifest.packs[pack] as { id: string; size: number };
      const what = `pack ${packInfo.id}`;
      blobList.sort(
        (a, b) => (manifest.blobs[a] as readonly number[])[2]! - (manifest.blobs[b] as readonly number[])[2]!,
      );
      // Only the pack's bytes up to the end of its needed blobs are read (what follows is garbage awaiting a
      // repack). The furthest end, not the end of the blob with the highest offset: in a crafted manifest a blob
      // at a lower offset can be longer, and would be read past what was filled.
      let extent = 0;
      for (const blob of blobList) {
        const [, , offset, length] = manifest.blobs[blob] as readonly [string, number, number, number];
        extent = Math.max(extent, offset + length);
      }
      if (extent > maxPackBytes) {
        throw new InvalidArgumentError(
          'manifest',
          `${what}: blobs reach ${extent} bytes into it, more than a pack holds`,
        );
      }
      const buffer = buffers.acquire(extent);
      try {
        transferredBytes += packInfo.size;
        await readPack(target, packInfo.id, manifest.compression !== 'none', buffer, extent, what, signal);
        // The job: every needed blob with the files it goes to, created by the worker (single-blob files) or
        // written into (the others, created here first).
        const job: PlaceBlob[] = [];
        const multi: PendingFile[] = [];
        const singles: Array<{ file: PendingFile; blob: number; length: number }> = [];
        for (const blob of blobList) {
          const [hash, , offset, length] = manifest.blobs[blob] as readonly [string, number, number, number];
          const targets: PlaceTarget[] = [];
          for (const { file, offset: position } of placements.get(blob) ?? []) {
            if (file.single) {
              file.remaining = 0;
              const reserved = await writer.reserveFile(file.tree);
              if (!reserved) continue;
              targets.push({ create: true, ...reserved });
              singles.push({ file, blob: job.length, length });
            } else if (file.entry.extents) {
              // `position` is in the data of the extents: each piece of the blob goes to its extent.
              const absolute = `${root}/${await created(file)}`;
              for (const [at, from, part] of placeData(file.entry.extents, position, length)) {
                targets.push({ create: false, absolute, position: at, from: from - position, length: part });
              }
              multi.push(file);
            } else {
              targets.push({ create: false, absolute: `${root}/${await created(file)}`, position });
              multi.push(file);
            }
          }
          job.push({ offset, length, hash, targets });
        }
        const running = placeOnWorker(buffer, job);
        jobs.add(running);
        const answer = await running.finally(() => jobs.delete(running));
        if (answer.corrupt) {
          const blob = job[answer.corrupt.blob] as PlaceBlob;
          throw new DataCorruptionError(`blob in ${what}`, `sha256:${blob.hash}`, `sha256:${answer.corrupt.actual}`);
        }
        for (const failure of answer.failures) {
          const blob = job[failure.blob] as PlaceBlob;
          const placed = blob.targets[failure.target] as PlaceTarget;
          // Something in the way of a new file (a duplicate path in the manifest): the writer replaces it, or
          // refuses a directory, as archive order says. Any other failure ends the restore.
          const single = singles.find((s) => s.blob === failure.blob && placed.create);
          if (failure.code === 'EEXIST' && single) {
            await writer.queueSmallFile(
              single.file.tree,
              Buffer.from(buffer.subarray(blob.offset, blob.offset + blob.length)),
            );
            continue;
          }
          throw placeFailure(placed, failure);
        }
        for (const file of multi) if (--file.remaining === 0) await finish(file);
      } finally {
        buffers.release(buffer);
      }
    });
  } catch (error) {
    // Deliberate: the first failure is the one reported; the others only have to be over.
    await Promise.allSettled([...jobs]);
    throw error;
  }

  const incomplete = files.find((file) => file.remaining > 0);
  if (incomplete)
    throw new DataCorruptionError(
      `restore of '${incomplete.entry.path}'`,
      'all of its blobs',
      `${incomplete.remaining} missing`,
    );
  for (const entry of manifest.entries) {
    if (entry.type === 'directory' || entry.type === 'file') continue;
    // Links and special files can be millions (hardlinks cost no quota): a stop or the initialization's deadline
    // ends the restore here too (red team round 13b: a stop waited 2 minutes for a million hardlinks).
    signal?.throwIfAborted();
    await writer.write(toTreeEntry(entry));
  }
  await writer.finish(signal);
  return { files: manifest.totals.files, contentBytes: manifest.totals.contentBytes, transferredBytes };
}

/** The largest part of a pack a restore reads into memory (packs are ~8 MiB; a manifest claiming more is refused). */
const maxPackBytes = 256 * 1024 * 1024;

/**
 * Reads the first `extent` bytes of a pack (decompressed) into `buffer`; a shorter pack is corrupt. Uncompressed
 * packs are read straight into the buffer where the storage can (`readInto`): no stream, no copy, no garbage.
 */
async function readPack(
  target: BackupTarget,
  id: string,
  compressed: boolean,
  buffer: Buffer,
  extent: number,
  what: string,
  signal: AbortSignal | undefined,
): Promise<void> {
  const missing = (error: unknown): unknown =>
    isWorkbayError(error, 'not-found')
      ? new NotFoundError(`backup is incomplete: pack ${id} is missing`, { cause: error })
      : error;
  const name = packName(target, id);
  if (!compressed && target.storage.readInto) {
    const filled = await target.storage
      .readInto(target.bucket, name, buffer.subarray(0, extent), signal ? { signal } : {})
      .catch((error: unknown) => {
        throw missing(error);
      });
    if (filled < extent) throw new DataCorruptionError(what, `at least ${extent} bytes`, `${filled} bytes`);
    return;
  }
  let stream: Readable;
  try {
    stream = await target.storage.download(target.bucket, name, signal ? { signal } : {});
  } catch (error) {
    throw missing(error);
  }
  try {
    let filled = 0;
    for await (const chunk of (await decompressAuto(stream)) as AsyncIterable<Buffer>) {
      // Into the workers' shared memory: a plain memcpy (see copyBytes in @workbay/api), not Buffer#copy.
      filled += copyBytes(chunk.subarray(0, Math.min(chunk.length, extent - filled)), buffer, filled);
      if (filled === extent) break;
    }
    if (filled < extent) throw new DataCorruptionError(what, `at least ${extent} bytes`, `${filled} bytes`);
  } finally {
    // Also when it ended early (the rest is not needed) or failed: the download must not stay open.
    stream.destroy();
  }
}
