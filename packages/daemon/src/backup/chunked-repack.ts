/**
 * The repack step of a chunked backup (step 3 in chunked.ts): once the garbage in the packs still in use exceeds
 * `repackGarbageShare` of them, previous packs whose live share fell below `repackBelow` get their live blobs
 * rewritten into new packs, so garbage does not accumulate.
 */
import { createHash } from 'node:crypto';
import { openFileBeneath } from '../util/pinned-path.js';
import type { PackRef, PackWriter } from './pack-writer.js';
import type { BlobTable } from './blob-table.js';
import type { EntryLog } from './entry-log.js';

/** Where a blob can be read again locally: the file it was first used in, and its offset there. */
export interface BlobSource {
  /** The walk's root, and the file below it (opened beneath the root: util/pinned-path.ts). */
  readonly root: string;
  readonly path: string;
  readonly offset: number;
}

/**
 * The first file (by its entry index) and offset of every blob, in two typed arrays: 16 bytes a blob instead of a
 * map entry, an object and the file's path kept alive for each (a hostile tree has a blob per tiny file). Paths are
 * looked up only for the few blobs a repack moves.
 */
export class BlobSources {
  private entries = new Float64Array(1024).fill(-1);
  private offsets = new Float64Array(1024);

  /** Notes `entry` as the source of those of `blobs` that have none yet; `lengthOf` gives a blob's length. */
  note(entry: number, blobs: readonly number[], lengthOf: (blob: number) => number): void {
    let offset = 0;
    for (const blob of blobs) {
      if (blob >= this.entries.length) this.grow(blob + 1);
      if (this.entries[blob] === -1) {
        this.entries[blob] = entry;
        this.offsets[blob] = offset;
      }
      offset += lengthOf(blob);
    }
  }

  /** The entry index and offset of `blob`'s source, if it has one. */
  get(blob: number): { readonly entry: number; readonly offset: number } | undefined {
    const entry = blob < this.entries.length ? (this.entries[blob] as number) : -1;
    return entry === -1 ? undefined : { entry, offset: this.offsets[blob] as number };
  }

  private grow(length: number): void {
    const size = Math.max(length, 2 * this.entries.length);
    const entries = new Float64Array(size).fill(-1);
    entries.set(this.entries);
    const offsets = new Float64Array(size);
    offsets.set(this.offsets);
    this.entries = entries;
    this.offsets = offsets;
  }
}

/** Where the blobs at `indices` can be read again: their first file (path looked up in the log) and offset. */
export function locateBlobs(
  indices: readonly number[],
  sources: BlobSources,
  log: EntryLog,
  walkedRoot: string,
): Map<number, BlobSource> {
  const found = new Map<number, { entry: number; offset: number }>();
  for (const index of indices) {
    const source = sources.get(index);
    if (source) found.set(index, source);
  }
  const paths = log.paths(new Set([...found.values()].map((source) => source.entry)));
  const located = new Map<number, BlobSource>();
  for (const [index, { entry, offset }] of found) {
    const path = paths.get(entry);
    if (path !== undefined) located.set(index, { root: walkedRoot, path, offset });
  }
  return located;
}

export interface RepackInput {
  /** The backup's pack writer, not finished yet: the rewritten blobs go into its packs. */
  readonly writer: PackWriter;
  /** The new manifest's blobs; a repacked blob's ref is replaced in place. */
  readonly blobs: BlobTable;
  /** Where the blobs at these indices can be read again (those that have a source). */
  readonly locate: (blobs: readonly number[]) => ReadonlyMap<number, BlobSource>;
  /** The previous manifest's packs: only blobs in these are repacked. */
  readonly previousRefs: readonly PackRef[];
  /** Bytes of the blobs this backup added: part of the packs still in use. */
  readonly newBlobBytes: number;
  readonly repackBelow: number;
  readonly repackGarbageShare: number;
}

async function readRange(source: BlobSource, length: number): Promise<Buffer | undefined> {
  // Beneath the root, a regular file only: a FIFO or a directory swapped for a link since the walk gives nothing
  // to repack (the blob keeps its old pack).
  const handle = await openFileBeneath(source.root, source.path);
  if (!handle) return undefined;
  try {
    const buffer = Buffer.allocUnsafe(length);
    const { bytesRead } = await handle.read(buffer, 0, length, source.offset);
    return bytesRead === length ? buffer : undefined;
  } finally {
    await handle.close();
  }
}

function sha256(data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

/** Rewrites the live blobs of mostly-garbage previous packs when a repack is due; returns how many it moved. */
export async function repackMostlyGarbage(input: RepackInput): Promise<number> {
  const { writer, blobs, locate, previousRefs, newBlobBytes, repackBelow, repackGarbageShare } = input;
  let repackedBlobs = 0;
  // Repack, once enough garbage accumulated: previous packs now mostly garbage get their live blobs rewritten
  // (read back from the local files), so the old pack can be deleted. A blob whose file changed meanwhile
  // keeps its old pack.
  const live = new Map<PackRef, number>();
  for (let index = 0; index < blobs.length; index++) {
    const pack = blobs.packOf(index);
    live.set(pack, (live.get(pack) ?? 0) + blobs.lengthOf(index));
  }
  const previousSet = new Set(previousRefs);
  let deadBytes = 0;
  let usedBytes = newBlobBytes;
  for (const [pack, liveBytes] of live) {
    if (!previousSet.has(pack)) continue;
    usedBytes += pack.rawSize ?? 0;
    deadBytes += Math.max(0, (pack.rawSize ?? 0) - liveBytes);
  }
  if (!(deadBytes > repackGarbageShare * usedBytes)) return 0;
  const moving: number[] = [];
  for (let index = 0; index < blobs.length; index++) {
    const pack = blobs.packOf(index);
    if (!previousSet.has(pack)) continue;
    if ((live.get(pack) ?? 0) < repackBelow * Math.max(1, pack.rawSize ?? 0)) moving.push(index);
  }
  const sources = locate(moving);
  for (const index of moving) {
    const blob = blobs.at(index);
    const source = sources.get(index);
    if (!source) continue;
    const data = await readRange(source, blob.length);
    if (!data || sha256(data) !== blob.hash) continue;
    blobs.set(index, await writer.add(blob.hash, data));
    repackedBlobs++;
  }
  return repackedBlobs;
}
