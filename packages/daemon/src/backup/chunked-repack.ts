/**
 * The repack step of a chunked backup (step 3 in chunked.ts): once the garbage in the packs still in use exceeds
 * `repackGarbageShare` of them, previous packs whose live share fell below `repackBelow` get their live blobs
 * rewritten into new packs, so garbage does not accumulate.
 */
import { createHash } from 'node:crypto';
import { constants } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { open } from 'node:fs/promises';
import type { BlobRef, PackRef, PackWriter } from './pack-writer.js';

/** Where a blob can be read again locally: the file it was first used in, and its offset there. */
export interface BlobSource {
  readonly absolute: string;
  readonly offset: number;
}

export interface RepackInput {
  /** The backup's pack writer, not finished yet: the rewritten blobs go into its packs. */
  readonly writer: PackWriter;
  /** The new manifest's blobs; a repacked blob's ref is replaced in place. */
  readonly blobs: BlobRef[];
  readonly blobSource: ReadonlyMap<number, BlobSource>;
  /** The previous manifest's packs: only blobs in these are repacked. */
  readonly previousRefs: readonly PackRef[];
  /** Bytes of the blobs this backup added: part of the packs still in use. */
  readonly newBlobBytes: number;
  readonly repackBelow: number;
  readonly repackGarbageShare: number;
}

async function readRange(path: string, offset: number, length: number): Promise<Buffer | undefined> {
  let handle: FileHandle;
  try {
    handle = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW);
  } catch {
    // Deliberate: a file gone or replaced (by a link) since the walk cannot be repacked; the blob keeps its old pack.
    return undefined;
  }
  try {
    const buffer = Buffer.allocUnsafe(length);
    const { bytesRead } = await handle.read(buffer, 0, length, offset);
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
  const { writer, blobs, blobSource, previousRefs, newBlobBytes, repackBelow, repackGarbageShare } = input;
  let repackedBlobs = 0;
  // Repack, once enough garbage accumulated: previous packs now mostly garbage get their live blobs rewritten
  // (read back from the local files), so the old pack can be deleted. A blob whose file changed meanwhile
  // keeps its old pack.
  const live = new Map<PackRef, number>();
  for (const blob of blobs) live.set(blob.pack, (live.get(blob.pack) ?? 0) + blob.length);
  const previousSet = new Set(previousRefs);
  let deadBytes = 0;
  let usedBytes = newBlobBytes;
  for (const [pack, liveBytes] of live) {
    if (!previousSet.has(pack)) continue;
    usedBytes += pack.rawSize ?? 0;
    deadBytes += Math.max(0, (pack.rawSize ?? 0) - liveBytes);
  }
  const repackDue = deadBytes > repackGarbageShare * usedBytes;
  for (const [index, blob] of repackDue ? blobs.entries() : []) {
    const pack = blob.pack;
    if (!previousSet.has(pack)) continue;
    if ((live.get(pack) ?? 0) >= repackBelow * Math.max(1, pack.rawSize ?? 0)) continue;
    const source = blobSource.get(index);
    if (!source) continue;
    const data = await readRange(source.absolute, source.offset, blob.length);
    if (!data || sha256(data) !== blob.hash) continue;
    blobs[index] = await writer.add(blob.hash, data);
    repackedBlobs++;
  }
  return repackedBlobs;
}
