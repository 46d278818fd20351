/**
 * Incremental backups: a manifest of the tree plus content-addressed blobs packed into pack objects.
 *
 * Backup:
 * 1. Walk the tree. A file whose inode, ctime, mtime and size match the previous manifest reuses its blobs
 *    without being read (the quick check git uses for its index).
 * 2. Other files are read and cut into content-defined chunks, and the chunks hashed, by worker threads (every
 *    core; read-pipeline.ts) from the moment the walk meets them, while this thread walks, packs and uploads. A chunk whose SHA-256 is already stored is
 *    referenced, a new one goes into the current pack (~8 MiB), which is uploaded (and synced once) when full.
 * 3. Once the garbage in the packs still in use exceeds `repackGarbageShare` of them, previous packs whose live
 *    share fell below `repackBelow` get their live blobs rewritten into new packs
 *    (read back from the local files and verified), so garbage does not accumulate.
 * 4. Every new pack is verified (stat: present, right size) before the manifest is replaced (the commit).
 *    Only then are packs that the new manifest no longer references deleted. A crash at any point leaves the
 *    previous manifest and all of its packs intact (invariant 3).
 *
 * Steps 1 and 2 are here (the previous manifest's offer: previous-backup.ts), step 3 is chunked-repack.ts and step 4
 * chunked-commit.ts. Restore: chunked-restore.ts.
 */
import type { Compression } from '../archive/compression.js';
import type { TreeEntry, WalkOptions } from '../archive/tree.js';
import { walkTreeSync } from '../archive/tree.js';
import type { Xattrs } from '../archive/xattr.js';
import { readTreeXattrs, xattrSupport } from '../archive/xattr.js';
import { LoopYielder } from '../util/small-files.js';
import type { ChunkerOptions } from './chunker.js';
import { defaultChunkerOptions } from './chunker.js';
import { FileQueue, readFiles } from './read-pipeline.js';
import { sharedWorkerPool } from './worker-pool.js';
import type { BlobRef } from './pack-writer.js';
import { PackWriter } from './pack-writer.js';
import type { BackupManifest, ManifestEntry } from './manifest.js';
import { MalformedManifestError, ManifestTooLargeError, quickKey, toManifestEntry } from './manifest.js';
import type { BackupTarget } from './backup-target.js';
import { listStoredPacks, readManifest } from './backup-target.js';
import { indexPreviousBackup } from './previous-backup.js';
import type { BlobSource } from './chunked-repack.js';
import { repackMostlyGarbage } from './chunked-repack.js';
import { commitBackup } from './chunked-commit.js';

export type { BackupTarget };
export { manifestName, manifestObjectSuffix, readManifest } from './backup-target.js';
export { chunksDirectory } from './pack-writer.js';

export interface ChunkedBackupOptions {
  readonly compression?: Compression;
  /** Target size of a pack before compression (default 8 MiB). */
  readonly packSize?: number;
  /**
   * Pack uploads in flight (default 5). A durable upload waits for its fsyncs, which on a busy disk wait for a
   * journal commit: concurrent ones share commits, so more in flight keeps the reads from stalling on them (the
   * backup then waited 0.2-0.4 s on upload slots per GiB instead of 1.8-2.1 s with 3). Each holds its pack's
   * memory (at most 3 worker buffers and an 8 MiB arena) until it resolves.
   */
  readonly uploadConcurrency?: number;
  readonly chunker?: ChunkerOptions;
  /** Packs whose live share is below this are rewritten (default 0.5), when a repack is due at all: */
  readonly repackBelow?: number;
  /**
   * A repack is due once dead bytes make up more than this share of the packs the new backup still uses (default
   * 0.05, restic's `prune --max-unused`). Below it, dead blobs stay where they are: rewriting the live rest of a
   * pack on every small change would upload more than the change (a 1% edit re-uploaded 1.8x what changed).
   */
  readonly repackGarbageShare?: number;
  readonly exclude?: WalkOptions['exclude'];
  readonly xattrs?: boolean;
  readonly onWarning?: (message: string) => void;
  readonly signal?: AbortSignal;
}

export interface ChunkedBackupResult {
  /** The committed manifest's object name. */
  readonly manifestName: string;
  readonly files: number;
  readonly contentBytes: number;
  /** Bytes read from disk (files that failed the quick check). */
  readonly readBytes: number;
  /** Bytes uploaded: new packs plus the manifest. */
  readonly uploadedBytes: number;
  readonly newPacks: number;
  readonly deletedPacks: number;
  readonly newBlobs: number;
  readonly reusedBlobs: number;
  /** Live blobs moved out of mostly-garbage packs. */
  readonly repackedBlobs: number;
}

/**
 * The previous manifest, for deduplication only: one that is malformed or too large (crafted, or corrupted in
 * storage) is not a backup anyone can restore, so this backup goes ahead in full instead of failing every time.
 */
async function readUsableManifest(
  target: BackupTarget,
  options: ChunkedBackupOptions,
): Promise<BackupManifest | undefined> {
  try {
    return await readManifest(target);
  } catch (error) {
    if (!(error instanceof MalformedManifestError) && !(error instanceof ManifestTooLargeError)) throw error;
    options.onWarning?.(
      `the previous backup's manifest is unusable, backing up in full: ${error.message.slice(0, 300)}`,
    );
    return undefined;
  }
}

/** Backs up `root` incrementally against the previous manifest (read from storage when not given). */
export async function createChunkedBackup(
  root: string,
  target: BackupTarget,
  workspaceId: string,
  options: ChunkedBackupOptions = {},
  previousManifest?: BackupManifest | null,
): Promise<ChunkedBackupResult> {
  const compression = options.compression ?? 'none';
  const repackBelow = options.repackBelow ?? 0.5;
  const repackGarbageShare = options.repackGarbageShare ?? 0.05;
  const chunker = options.chunker ?? defaultChunkerOptions;
  const signal = options.signal;
  const previous =
    previousManifest === null ? undefined : (previousManifest ?? (await readUsableManifest(target, options)));
  const startedNs = BigInt(Date.now()) * 1_000_000n;

  // Packs that really exist: reuse only those, and collect garbage among them after the commit.
  const stored = await listStoredPacks(target, signal);

  // getfattr (a child process) reads the xattrs while this thread walks the tree; they are attached after.
  const xattrsRead = (async (): Promise<Map<string, Xattrs>> => {
    if (options.xattrs === false) return new Map();
    const support = await xattrSupport();
    if (support.available) return readTreeXattrs(root);
    options.onWarning?.(support.reason ?? 'xattrs not supported');
    return new Map();
  })();
  xattrsRead.catch(() => undefined); // awaited below; a failed walk must not leave it unhandled

  const { previousBlobs, previousRefs, known, reusable } = indexPreviousBackup(previous, stored);

  const writer = new PackWriter(
    target,
    options.packSize ?? 8 * 1024 * 1024,
    compression,
    options.uploadConcurrency ?? 5,
    signal,
  );
  const blobs: BlobRef[] = [];
  const blobIndex = new Map<string, number>();
  const useBlob = (ref: BlobRef): number => {
    let index = blobIndex.get(ref.hash);
    if (index === undefined) {
      index = blobs.length;
      blobs.push(ref);
      blobIndex.set(ref.hash, index);
    }
    return index;
  };
  let newBlobs = 0;
  let newBlobBytes = 0;
  let reusedBlobs = 0;
  let repackedBlobs = 0;
  let readBytes = 0;
  let files = 0;
  let contentBytes = 0;
  const entries: Array<ManifestEntry> = [];
  const pool = sharedWorkerPool();
  /** Where each blob can be read again locally (first use), for repacking. */
  const blobSource = new Map<number, BlobSource>();
  const noteSources = (absolute: string, indices: readonly number[]): void => {
    let offset = 0;
    for (const index of indices) {
      if (!blobSource.has(index)) blobSource.set(index, { absolute, offset });
      offset += (blobs[index] as BlobRef).length;
    }
  };

  /** The chunk's blob index; a promise only when a full pack must be sealed first (once per pack). */
  const storeChunk = (hash: string, chunk: Buffer, hold: () => () => void): number | Promise<number> => {
    const existing = blobIndex.get(hash);
    if (existing !== undefined) return existing;
    const old = known.get(hash);
    if (old) {
      reusedBlobs++;
      return useBlob(old);
    }
    newBlobs++;
    newBlobBytes += chunk.length;
    const added = writer.tryAdd(hash, chunk, hold);
    return added ? useBlob(added) : writer.add(hash, chunk, hold).then(useBlob);
  };

  // The walk runs beside the reads: files to read go to the workers as soon as the walk meets them.
  // What the manifest needs of each walked entry, without its stats: a tree's worth of BigIntStats kept to the
  // end would be promoted to the old generation and cost the collector more than the walk itself.
  const walked: Array<{ readonly entry: TreeEntry; readonly absolute: string; readonly quick?: string }> = [];
  /** The quick check's verdict per walked file (undefined: read it), decided once, when the walk meets it. */
  const reuses: Array<readonly number[] | undefined> = [];
  const queue = new FileQueue();
  const read = new Map<number, { size: number; blobs: number[]; quick?: string }>();
  const reading = (async (): Promise<void> => {
    let indices: number[] = [];
    let size = 0;
    for await (const piece of readFiles(pool, queue, chunker)) {
      signal?.throwIfAborted();
      if (piece.vanished) {
        options.onWarning?.(`skipped '${piece.item.entry.path}': vanished`);
        continue;
      }
      for (const chunk of piece.chunks) {
        const index = storeChunk(chunk.hash, chunk.data, piece.hold);
        indices.push(typeof index === 'number' ? index : await index);
      }
      size += piece.bytes;
      if (!piece.done) continue;
      const item = piece.item;
      noteSources(item.absolute, indices);
      readBytes += size;
      files++;
      contentBytes += size;
      // A file modified within the timestamp granularity of our read could keep its ctime; do not trust the
      // quick check for files that changed just before the backup started.
      const racy = item.stats.ctimeNs > startedNs - 2_000_000_000n;
      const quick = (walked[piece.index] as { quick?: string }).quick;
      read.set(piece.index, { size, blobs: indices, ...(racy || quick === undefined ? {} : { quick }) });
      indices = [];
      size = 0;
    }
  })();
  let readFailure: { error: unknown } | undefined;
  reading.catch((error: unknown) => (readFailure = { error }));

  try {
    try {
      // The walk is synchronous; the event loop gets a turn every 2 ms, so that the workers' answers are taken
      // (and their next tasks sent) before they run out of work.
      const yielder = new LoopYielder(2);
      let sinceYield = 0;
      for (const item of walkTreeSync(root, {
        ...(options.exclude ? { exclude: options.exclude } : {}),
        onSkip: (path, reason) => options.onWarning?.(`skipped '${path}': ${reason}`),
      })) {
        if (++sinceYield === 32) {
          sinceYield = 0;
          await yielder.maybeYield();
        }
        signal?.throwIfAborted();
        if (readFailure) throw readFailure.error;
        if (item.entry.type !== 'file') {
          walked.push({ entry: item.entry, absolute: item.absolute });
          continue;
        }
        const quick = quickKey(item);
        const index = walked.push({ entry: item.entry, absolute: item.absolute, quick }) - 1;
        const reuse = reusable(item.entry.path, quick);
        reuses[index] = reuse;
        if (!reuse) queue.push({ index, item });
      }
    } catch (error) {
      queue.end(error);
      await reading.catch(() => undefined);
      throw error;
    }
    queue.end();
    const xattrs = await xattrsRead;
    await reading;

    // The manifest's entries in walk order: metadata, unchanged files (reused blobs), and what was read.
    for (const [index, item] of walked.entries()) {
      signal?.throwIfAborted();
      const tree = item.entry;
      const attrs = xattrs.get(tree.path) ?? tree.xattrs;
      if (tree.type !== 'file') {
        entries.push(toManifestEntry(tree, attrs));
        continue;
      }
      const reuse = reuses[index];
      if (reuse) {
        const indices = reuse.map((b) => {
          const hash = (previousBlobs[b] as readonly [string, number, number, number])[0];
          const existing = blobIndex.get(hash);
          if (existing !== undefined) return existing;
          reusedBlobs++;
          return useBlob(known.get(hash) as BlobRef);
        });
        noteSources(item.absolute, indices);
        entries.push(toManifestEntry(tree, attrs, { size: tree.size, blobs: indices, quick: item.quick }));
        files++;
        contentBytes += tree.size;
        continue;
      }
      // Not read: it vanished before it could be opened (warned above).
      const result = read.get(index);
      if (result) entries.push(toManifestEntry(tree, attrs, result));
    }
    repackedBlobs = await repackMostlyGarbage({
      writer,
      blobs,
      blobSource,
      previousRefs,
      newBlobBytes,
      repackBelow,
      repackGarbageShare,
    });
    await writer.finish();
  } catch (error) {
    await writer.abort();
    throw error;
  }

  const commit = await commitBackup({
    target,
    workspaceId,
    compression,
    writer,
    blobs,
    entries,
    totals: { files, contentBytes },
    stored,
  });

  return {
    manifestName: commit.manifestName,
    files,
    contentBytes,
    readBytes,
    uploadedBytes: writer.uploadedBytes + commit.manifestBytes,
    newPacks: writer.written.length,
    deletedPacks: commit.deletedPacks,
    newBlobs,
    reusedBlobs,
    repackedBlobs,
  };
}
