/**
 * Data extents of sparse files. A workspace can write an 8 GiB file that allocates 20 KiB: read as it is, its
 * holes cost ~2 s/GiB of zeros and, in a tar, their full size (red team: a 2 GiB quota made an 8 GiB snapshot,
 * and sparse files held the backup slots for minutes). lseek(SEEK_DATA/SEEK_HOLE) finds the data without
 * reading the holes, but Node has no binding for it; Perl's `sysseek` passes `whence` through, and perl-base is
 * on every Debian system. Perl reaches the file the daemon opened through its descriptor, never by its path: a
 * workspace can swap paths at any moment (see util/pinned-path.ts). One Perl probes all the files of an archive
 * run (sparse-prober.ts).
 *
 * Extents are kept flat, `[offset0, length0, offset1, length1, ...]`, sorted, non-overlapping, non-empty.
 */
import { FailedPreconditionError } from '../errors.js';

/**
 * A sparse file whose data could not be found (the probe timed out, the file kept changing under it, Perl failed).
 * Read as it is, its holes would be read, and stored by a tar, byte for byte: a 16 TiB file allocating a few MiB
 * held a backup slot for hours and wrote 3 GB into storage per snapshot (red team round 6, which made the probe
 * fail on purpose). The archive fails instead, not retried; the content is kept, as for any failed backup.
 */
export class SparseProbeError extends FailedPreconditionError {
  constructor(what: string, reason: string) {
    super(
      `the data of sparse file '${what.slice(0, 200)}' could not be located (${reason}); the content is not archived`,
    );
  }
}

/**
 * The most extents a file is stored with; more are merged across their smallest holes (read as zeros). A manifest
 * entry then lists at most ~400 KB of them, a tar map as much.
 */
export const maxExtents = 16_384;
/**
 * The largest sparse file restored (ext4's largest file, 16 TiB): a size read from storage or an archive that is
 * bigger is no file we archived, and could not be created.
 */
export const maxSparseSize = 16 * 1024 ** 4;
/**
 * Holes smaller than this are read as they are: 4 MiB of holes read in ~8 ms (~2 s/GiB), not worth an extent map.
 */
export const sparseSlack = 4 * 1024 * 1024;

/** Whether a file may be worth probing: fewer bytes allocated than its size, by more than {@link sparseSlack}. */
export function isSparseCandidate(stats: {
  readonly size: number | bigint;
  readonly blocks: number | bigint;
}): boolean {
  return Number(stats.blocks) * 512 + sparseSlack < Number(stats.size);
}

/** `extents` merged across their smallest holes until at most `max` remain (holes merged in read as zeros). */
export function capExtents(extents: number[], max: number): number[] {
  const count = extents.length / 2;
  if (count <= max) return extents;
  const gaps: number[] = [];
  for (let i = 1; i < count; i++) gaps.push((extents[2 * i] as number) - end(extents, i - 1));
  gaps.sort((a, b) => a - b);
  // Merging every gap up to this one leaves at most `max` extents (equal gaps may merge a few more).
  const threshold = gaps[count - max - 1] as number;
  const merged: number[] = [extents[0] as number, extents[1] as number];
  for (let i = 1; i < count; i++) {
    const start = extents[2 * i] as number;
    const last = merged.length - 2;
    if (start - ((merged[last] as number) + (merged[last + 1] as number)) <= threshold) {
      merged[last + 1] = end(extents, i) - (merged[last] as number);
    } else merged.push(start, extents[2 * i + 1] as number);
  }
  return merged;
}

function end(extents: readonly number[], i: number): number {
  return (extents[2 * i] as number) + (extents[2 * i + 1] as number);
}

/** Bytes of data the extents hold. */
export function extentBytes(extents: readonly number[]): number {
  let total = 0;
  for (let i = 1; i < extents.length; i += 2) total += extents[i] as number;
  return total;
}

/** The first `dataBytes` bytes of data of `extents` (a file that shrank while it was read). */
export function truncateExtents(extents: readonly number[], dataBytes: number): number[] {
  const cut: number[] = [];
  for (let i = 0; i < extents.length && dataBytes > 0; i += 2) {
    const length = Math.min(extents[i + 1] as number, dataBytes);
    cut.push(extents[i] as number, length);
    dataBytes -= length;
  }
  return cut;
}

/**
 * Why `extents` (from storage or an archive: hostile) is no extent list of a file of `size` bytes, or undefined
 * when it is one: integers, sorted, non-overlapping, non-empty, inside the file, at most `max` of them.
 */
export function extentsProblem(extents: unknown, size: number, max = maxExtents): string | undefined {
  if (!Array.isArray(extents) || extents.length % 2 !== 0) return 'is not a list of offset/length pairs';
  if (extents.length / 2 > max) return `has ${extents.length / 2} extents, more than ${max}`;
  let previousEnd = 0;
  for (let i = 0; i < extents.length; i += 2) {
    const offset: unknown = extents[i];
    const length: unknown = extents[i + 1];
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length)) return `extent ${i / 2} is not integers`;
    if ((offset as number) < previousEnd) return `extent ${i / 2} starts before the previous one ends`;
    if ((length as number) <= 0) return `extent ${i / 2} is empty`;
    previousEnd = (offset as number) + (length as number);
    if (previousEnd > size) return `extent ${i / 2} ends at ${previousEnd}, past the file's ${size} bytes`;
  }
  return undefined;
}

/**
 * Maps the range [`from`, `from + length`) of a file's data (its extents back to back) to places in the file:
 * `[position, dataOffset, length]` triples.
 */
export function placeData(extents: readonly number[], from: number, length: number): Array<[number, number, number]> {
  const places: Array<[number, number, number]> = [];
  let data = 0;
  for (let i = 0; i < extents.length && length > 0; i += 2) {
    const offset = extents[i] as number;
    const size = extents[i + 1] as number;
    if (from < data + size) {
      const skip = from - data;
      const take = Math.min(size - skip, length);
      places.push([offset + skip, from, take]);
      from += take;
      length -= take;
    }
    data += size;
  }
  return places;
}
