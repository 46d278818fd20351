/**
 * What the previous backup offers the next one: files the quick check lets it reuse without reading them, and
 * blobs it can reference by content, as long as their pack still exists.
 *
 * The previous manifest is read a value at a time (manifest-scan.ts) and only its files' paths, quick keys and blob
 * lists are kept, in walk order in a compact log (as entry-log.ts keeps the new one's). The walk meets the files in
 * the same order, so a lookup is a step of a cursor through the log: no map from every path to an entry object.
 */
import type { BackupTarget } from './backup-target.js';
import { manifestName } from './backup-target.js';
import { isWorkbayError } from '../errors.js';
import { ByteLog } from './byte-log.js';
import type { ByteReader } from './byte-log.js';
import type { BlobRef, PackRef } from './pack-writer.js';
import { BlobTable } from './blob-table.js';
import type { BackupManifest } from './manifest.js';
import type { ManifestLimits } from './manifest-decode.js';
import { MalformedManifestError, ManifestTooLargeError } from './manifest-errors.js';
import type { ManifestVisitor } from './manifest-scan.js';
import { scanManifest } from './manifest-scan.js';
import { checkBlobs, checkEntry, checkPacks } from './manifest-schema.js';

export interface PreviousBackup {
  /** The previous manifest's packs, one object each (new blob refs to them are told apart by identity). */
  readonly previousRefs: readonly PackRef[];
  /** Blobs of the previous backup whose pack still exists (found by hash). */
  readonly known: BlobTable;
  /**
   * The previous blobs of the file at `path` when its quick key is unchanged and they are all known. Asked in walk
   * order (a path asked out of order is not found, and the file is read).
   */
  readonly reusable: (path: string, quick: string) => Reusable | undefined;
}

/** A previous file's content, reusable as it was: its blobs, and a sparse file's extents (see manifest.ts). */
export interface Reusable {
  readonly blobs: readonly BlobRef[];
  readonly extents?: readonly number[];
}

/** `/` sorts before every other byte: a directory's entries then come right after it, as the walk yields them. */
function walkOrder(a: Buffer, aLength: number, b: Buffer, bLength: number): number {
  const length = Math.min(aLength, bLength);
  for (let i = 0; i < length; i++) {
    const x = a[i] as number;
    const y = b[i] as number;
    if (x !== y) return (x === 0x2f ? -1 : x) - (y === 0x2f ? -1 : y);
  }
  return aLength - bLength;
}

function grown(buffer: Buffer, length: number, keep: number): Buffer {
  if (buffer.length >= length) return buffer;
  const larger = Buffer.allocUnsafe(Math.max(length, 2 * buffer.length));
  buffer.copy(larger, 0, 0, keep);
  return larger;
}

/** Builds the index from the manifest's values as they come (a manifest object's, or a scanned one's). */
class PreviousIndex implements ManifestVisitor, PreviousBackup {
  readonly previousRefs: PackRef[] = [];
  readonly known = new BlobTable();
  private readonly packs: unknown[] = [];
  private rawSizes: number[] | undefined;
  private usable: boolean[] = [];
  /** Every previous blob's binary hash, by its index in the previous manifest (a file's blobs name those). */
  private hashes: Buffer = Buffer.alloc(32 * 1024);
  private readonly lengths: number[] = [];
  private entries = 0;
  private formatSeen = false;
  /** Files: front-coded path, quick key, blob indices. */
  private readonly files = new ByteLog();
  private last: Buffer = Buffer.allocUnsafe(4096);
  private lastLength = 0;
  private cursor: Cursor | undefined;

  constructor(private readonly stored: ReadonlyMap<string, number>) {}

  field(key: string, value: unknown): void {
    if ((key === 'format' && value !== 'workbay-backup-manifest') || (key === 'version' && value !== 1)) {
      throw new MalformedManifestError('manifest.format', 'unknown backup manifest format or version');
    }
    if (key === 'format') this.formatSeen = true;
  }

  pack(value: unknown, index: number): void {
    // The tables must come in the order this daemon writes them: blobs are checked against packs, entries against
    // blobs. Another order is no backup of ours; the next backup then reads every file.
    if (this.rawSizes) throw new MalformedManifestError('manifest.packs', 'after the blobs or the entries');
    checkPacks([value], index);
    this.packs.push(value);
  }

  blob(value: unknown, index: number): void {
    if (this.entries > 0) throw new MalformedManifestError('manifest.blobs', 'after the entries');
    const rawSizes = this.sealPacks();
    const length = checkBlobs([value], rawSizes, index)[0] as number;
    const [hash, pack, offset] = value as [string, number, number, number];
    this.hashes = grown(this.hashes, 32 * (index + 1), 32 * index);
    this.hashes.write(hash, 32 * index, 'hex');
    this.lengths.push(length);
    if (this.usable[pack]) {
      // As a map by hash would: a hash listed twice is found at its last place.
      const ref = { hash, pack: this.previousRefs[pack] as PackRef, offset, length };
      const known = this.known.find(hash);
      if (known === -1) this.known.push(ref);
      else this.known.set(known, ref);
    }
  }

  entry(value: unknown, index: number): void {
    this.sealPacks();
    this.entries++;
    checkEntry(value, index, this.lengths);
    if (value.type !== 'file' || value.quick === undefined) return;
    const blobs = value.blobs ?? [];
    const extents = value.extents;
    const path = Buffer.from(value.path, 'utf8');
    const quick = Buffer.from(value.quick, 'utf8');
    let shared = 0;
    const limit = Math.min(path.length, this.lastLength);
    while (shared < limit && path[shared] === this.last[shared]) shared++;
    const extentBytes = 4 + 8 * (extents?.length ?? 0);
    const { buffer, at } = this.files.reserve(
      4 + 4 + path.length - shared + 2 + quick.length + 4 + 4 * blobs.length + extentBytes,
    );
    let o = buffer.writeUInt32LE(shared, at);
    o = buffer.writeUInt32LE(path.length - shared, o);
    o += path.copy(buffer, o, shared);
    o = buffer.writeUInt16LE(quick.length, o);
    o += quick.copy(buffer, o);
    o = buffer.writeUInt32LE(blobs.length, o);
    for (const blob of blobs) o = buffer.writeUInt32LE(blob, o);
    // A sparse file's extents (their count plus one; 0: a file without).
    o = buffer.writeUInt32LE(extents ? extents.length + 1 : 0, o);
    for (const value of extents ?? []) o = buffer.writeDoubleLE(value, o);
    this.last = grown(this.last, path.length, 0);
    path.copy(this.last);
    this.lastLength = path.length;
  }

  finish(): this {
    if (!this.formatSeen) throw new MalformedManifestError('manifest.format', 'missing');
    this.sealPacks();
    this.cursor = new Cursor(this.files.reader());
    return this;
  }

  readonly reusable = (path: string, quick: string): Reusable | undefined => {
    const found = this.cursor?.seek(path);
    if (!found || found.quick !== quick) return undefined;
    const refs: BlobRef[] = [];
    for (const blob of found.blobs) {
      const known = this.known.findKey(this.hashes, 32 * blob);
      if (known === -1) return undefined;
      refs.push(this.known.at(known));
    }
    return found.extents ? { blobs: refs, extents: found.extents } : { blobs: refs };
  };

  private sealPacks(): number[] {
    if (this.rawSizes) return this.rawSizes;
    this.rawSizes = checkPacks(this.packs);
    for (const pack of this.packs as Array<{ id: string; size: number; rawSize: number }>) {
      this.usable.push(this.stored.get(pack.id) === pack.size);
      this.previousRefs.push({ id: pack.id, size: pack.size, rawSize: pack.rawSize });
    }
    this.packs.length = 0;
    return this.rawSizes;
  }
}

/** Walks the previous files' log forwards, to the record of a path or past where it would be. */
class Cursor {
  private path: Buffer = Buffer.allocUnsafe(4096);
  private pathLength = 0;
  private query: Buffer = Buffer.allocUnsafe(4096);
  /** The current record's quick key and blobs (decoded once it matched). */
  private at = -1;
  private loaded = false;

  constructor(private readonly reader: ByteReader) {
    this.loaded = this.load();
  }

  seek(path: string): { quick: string; blobs: number[]; extents?: number[] } | undefined {
    this.query = grown(this.query, 3 * path.length, 0);
    const length = this.query.write(path, 0, 'utf8');
    while (this.loaded && walkOrder(this.path, this.pathLength, this.query, length) < 0) this.loaded = this.load();
    if (!this.loaded || walkOrder(this.path, this.pathLength, this.query, length) !== 0) return undefined;
    const buffer = this.reader.buffer;
    let o = this.at;
    const quickLength = buffer.readUInt16LE(o);
    const quick = buffer.toString('utf8', o + 2, o + 2 + quickLength);
    o += 2 + quickLength;
    const count = buffer.readUInt32LE(o);
    const blobs: number[] = [];
    for (let i = 0; i < count; i++) blobs.push(buffer.readUInt32LE(o + 4 + 4 * i));
    o += 4 + 4 * count;
    const values = buffer.readUInt32LE(o) - 1;
    if (values < 0) return { quick, blobs };
    const extents: number[] = [];
    for (let i = 0; i < values; i++) extents.push(buffer.readDoubleLE(o + 4 + 8 * i));
    return { quick, blobs, extents };
  }

  /** Moves to the next record; false at the end. */
  private load(): boolean {
    const reader = this.reader;
    if (this.at !== -1) {
      // Past the current record's quick key, blobs and extents.
      let o = this.at;
      o += 2 + reader.buffer.readUInt16LE(o);
      o += 4 + 4 * reader.buffer.readUInt32LE(o);
      reader.at = o + 4 + 8 * Math.max(0, reader.buffer.readUInt32LE(o) - 1);
    }
    if (!reader.more()) return false;
    const buffer = reader.buffer;
    const shared = buffer.readUInt32LE(reader.at);
    const own = buffer.readUInt32LE(reader.at + 4);
    this.path = grown(this.path, shared + own, shared);
    buffer.copy(this.path, shared, reader.at + 8, reader.at + 8 + own);
    this.pathLength = shared + own;
    this.at = reader.at + 8 + own;
    return true;
  }
}

/** The index of a manifest already decoded (undefined: no previous backup). */
export function indexPreviousBackup(
  previous: BackupManifest | undefined,
  stored: ReadonlyMap<string, number>,
): PreviousBackup {
  const index = new PreviousIndex(stored);
  index.field('format', previous?.format ?? 'workbay-backup-manifest');
  for (const [i, pack] of (previous?.packs ?? []).entries()) index.pack(pack, i);
  for (const [i, blob] of (previous?.blobs ?? []).entries()) index.blob(blob, i);
  for (const [i, entry] of (previous?.entries ?? []).entries()) index.entry(entry, i);
  return index.finish();
}

/**
 * Reads the committed manifest of `target` into an index; undefined when there is none. Throws
 * MalformedManifestError or ManifestTooLargeError (both invalid-argument) as readManifest does.
 */
export async function readPreviousBackup(
  target: BackupTarget,
  stored: ReadonlyMap<string, number>,
  limits: ManifestLimits = {},
): Promise<PreviousBackup | undefined> {
  let stream;
  try {
    stream = await target.storage.download(target.bucket, manifestName(target));
  } catch (error) {
    if (isWorkbayError(error, 'not-found')) return undefined;
    throw error;
  }
  const index = new PreviousIndex(stored);
  await scanManifest(stream, index, limits);
  return index.finish();
}

/**
 * {@link readPreviousBackup} for deduplication only: a manifest that is malformed or too large (crafted, or corrupted
 * in storage) is not a backup anyone can restore, so the backup goes ahead in full instead of failing every time.
 */
export async function readUsablePrevious(
  target: BackupTarget,
  stored: ReadonlyMap<string, number>,
  onWarning: ((message: string) => void) | undefined,
): Promise<PreviousBackup> {
  try {
    return (await readPreviousBackup(target, stored)) ?? indexPreviousBackup(undefined, stored);
  } catch (error) {
    if (!(error instanceof MalformedManifestError) && !(error instanceof ManifestTooLargeError)) throw error;
    onWarning?.(`the previous backup's manifest is unusable, backing up in full: ${error.message.slice(0, 300)}`);
    return indexPreviousBackup(undefined, stored);
  }
}
