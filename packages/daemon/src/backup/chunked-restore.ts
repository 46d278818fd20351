/**
 * Restore of an incremental backup (see chunked.ts for the layout): reads the manifest's tree, creates it, and
 * streams each pack once, writing every blob (verified against its SHA-256) to the files that use it.
 */
import { createHash } from 'node:crypto';
import { constants } from 'node:fs';
import { open } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import { DataCorruptionError, InvalidArgumentError, isWorkbayError, NotFoundError } from '../errors.js';
import { decompressAuto } from '../archive/compression.js';
import { normalizeEntryPath, SafeTreeWriter } from '../archive/safe-writer.js';
import type { SafeWriterOptions } from '../archive/safe-writer.js';
import type { TreeEntry } from '../archive/tree.js';
import { mapLimit } from '../util/concurrency.js';
import { smallFileLimit } from '../util/small-files.js';
import type { BackupTarget } from './chunked.js';
import type { BackupManifest, ManifestEntry } from './manifest.js';
import { toTreeEntry } from './manifest.js';
import { packName } from './pack-writer.js';

/** Directories created at once during a restore. */
const directoryConcurrency = 8;

function sha256(data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

/** A FIFO of buffers that hands out exact byte ranges without quadratic copying. */
class ByteQueue {
  private chunks: Buffer[] = [];
  length = 0;

  constructor(private readonly source: AsyncIterator<Buffer>) {}

  private async pull(what: string): Promise<void> {
    const step = await this.source.next();
    if (step.done) throw new DataCorruptionError(what, 'more data', 'end of stream');
    this.chunks.push(step.value);
    this.length += step.value.length;
  }

  async skip(count: number, what: string): Promise<void> {
    let left = count;
    while (left > 0) {
      if (this.chunks.length === 0) await this.pull(what);
      const head = this.chunks[0] as Buffer;
      if (head.length <= left) {
        this.chunks.shift();
        this.length -= head.length;
        left -= head.length;
      } else {
        this.chunks[0] = head.subarray(left);
        this.length -= left;
        left = 0;
      }
    }
  }

  async take(count: number, what: string): Promise<Buffer> {
    while (this.length < count) await this.pull(what);
    const parts: Buffer[] = [];
    let left = count;
    while (left > 0) {
      const head = this.chunks[0] as Buffer;
      if (head.length <= left) {
        parts.push(head);
        this.chunks.shift();
        left -= head.length;
      } else {
        parts.push(head.subarray(0, left));
        this.chunks[0] = head.subarray(left);
        left = 0;
      }
    }
    this.length -= count;
    return parts.length === 1 ? (parts[0] as Buffer) : Buffer.concat(parts, count);
  }
}

export interface ChunkedRestoreOptions extends SafeWriterOptions {
  /** Pack downloads in flight (default 3). */
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
  /** Whole file in one blob and small: written in one synchronous burst when its blob arrives. */
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
    signal?.throwIfAborted();
    await mapLimit(levels.get(depth) as TreeEntry[], directoryConcurrency, (tree) => writer.directory(tree));
  }
  for (const entry of manifest.entries) {
    if (entry.type !== 'file') continue;
    signal?.throwIfAborted();
    const tree = toTreeEntry(entry);
    const blobs = entry.blobs ?? [];
    const total = blobs.reduce(
      (sum, b) => sum + (manifest.blobs[b] as readonly [string, number, number, number])[3],
      0,
    );
    if (total !== entry.size) {
      throw new InvalidArgumentError(
        'manifest',
        `entry '${entry.path}': blobs add up to ${total} bytes, not ${entry.size}`,
      );
    }
    if (blobs.length === 0) {
      await writer.queueSmallFile(tree, Buffer.alloc(0));
      continue;
    }
    const file: PendingFile = {
      entry,
      tree,
      remaining: blobs.length,
      single: blobs.length === 1 && entry.size <= smallFileLimit,
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

  const place = async (file: PendingFile, offset: number, content: Buffer): Promise<void> => {
    if (file.single) {
      await writer.queueSmallFile(file.tree, content);
      file.remaining = 0;
      return;
    }
    file.created ??= (async () => {
      const { handle, path } = await writer.createFile(file.tree);
      try {
        await handle.truncate(file.entry.size);
      } finally {
        await handle.close();
      }
      return path;
    })();
    const path = await file.created;
    const absolute = `${root}/${path}`;
    const handle = await open(absolute, constants.O_WRONLY | constants.O_NOFOLLOW);
    try {
      await handle.write(content, 0, content.length, offset);
      if (--file.remaining === 0) await writer.finishFile(handle, file.tree, path);
    } finally {
      await handle.close();
    }
  };

  // Which blobs each pack must deliver, in pack order.
  const byPack = new Map<number, number[]>();
  for (const blob of placements.keys()) {
    const pack = (manifest.blobs[blob] as readonly [string, number, number, number])[1];
    const list = byPack.get(pack) ?? [];
    list.push(blob);
    byPack.set(pack, list);
  }
  let transferredBytes = 0;
  await mapLimit([...byPack.entries()], options.downloadConcurrency ?? 3, async ([pack, blobList]) => {
    const packInfo = manifest.packs[pack] as { id: string; size: number };
    let stream: Readable;
    try {
      stream = await target.storage.download(target.bucket, packName(target, packInfo.id), signal ? { signal } : {});
    } catch (error) {
      if (isWorkbayError(error, 'not-found')) {
        throw new NotFoundError(`backup is incomplete: pack ${packInfo.id} is missing`, { cause: error });
      }
      throw error;
    }
    transferredBytes += packInfo.size;
    try {
      const data = await decompressAuto(stream);
      blobList.sort(
        (a, b) => (manifest.blobs[a] as readonly number[])[2]! - (manifest.blobs[b] as readonly number[])[2]!,
      );
      const iterator = (data as AsyncIterable<Buffer>)[Symbol.asyncIterator]();
      const queue = new ByteQueue(iterator);
      const what = `pack ${packInfo.id}`;
      let position = 0;
      for (const blob of blobList) {
        signal?.throwIfAborted();
        const [hash, , offset, length] = manifest.blobs[blob] as readonly [string, number, number, number];
        // Bytes before the blob belong to blobs this restore does not need (garbage awaiting a repack).
        if (offset > position) await queue.skip(offset - position, what);
        const content = await queue.take(length, what);
        position = offset + length;
        // On this thread: WebCrypto's thread-pool digest copies every blob first, and that copy and the garbage
        // it makes cost more of the event loop than the hash itself (~0.7 ms a MiB), while the pool's threads are
        // busy creating the restored files.
        const actual = sha256(content);
        if (actual !== hash) throw new DataCorruptionError(`blob in ${what}`, `sha256:${hash}`, `sha256:${actual}`);
        for (const target of placements.get(blob) ?? []) await place(target.file, target.offset, content);
      }
      await iterator.return?.();
    } finally {
      // Also on failure (a corrupt blob): the download must not stay open.
      stream.destroy();
    }
  });

  const incomplete = files.find((file) => file.remaining > 0);
  if (incomplete)
    throw new DataCorruptionError(
      `restore of '${incomplete.entry.path}'`,
      'all of its blobs',
      `${incomplete.remaining} missing`,
    );
  for (const entry of manifest.entries) {
    if (entry.type === 'directory' || entry.type === 'file') continue;
    await writer.write(toTreeEntry(entry));
  }
  await writer.finish();
  return { files: manifest.totals.files, contentBytes: manifest.totals.contentBytes, transferredBytes };
}
