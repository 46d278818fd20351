/**
 * The entries of the manifest being built, kept compactly until the commit writes them (see byte-log.ts for why):
 * one binary record per walked entry, in walk order, with its path front-coded against the previous one (the
 * walk is depth-first in name order, so a path usually repeats its predecessor's directories), and one record per
 * file read, in the same order. An empty file costs ~90 bytes instead of ~1.3 KB of objects, and a long path
 * mostly costs its last component.
 */
import type { BigIntStats } from 'node:fs';
import { entryTypes } from '../archive/tree.js';
import type { EntryType, TreeEntry } from '../archive/tree.js';
import type { Xattrs } from '../archive/xattr.js';
import { ByteLog } from './byte-log.js';
import type { ByteReader } from './byte-log.js';
import type { ManifestEntry } from './manifest.js';
import { toManifestEntry } from './manifest.js';

const types: readonly EntryType[] = entryTypes;
const typeCodes = new Map(types.map((type, code) => [type, code]));

const hasLink = 1;
const hasDevice = 2;
const hasQuick = 4;
/** Content comes from the read records. */
const isRead = 8;
/** Content is the blob list that follows (a file the quick check let reuse its previous blobs). */
const isReused = 16;
/** A reused sparse file: its extents follow the blob list. */
const hasExtents = 32;

/** type, flags, mode, uid, gid, size, mtimeMs, shared path bytes, own path bytes. */
const headerBytes = 1 + 1 + 2 + 4 + 4 + 8 + 8 + 4 + 4;
const quickBytes = 32;

/** What a file adds to its walk record. */
export interface FileContent {
  readonly stats: BigIntStats;
  /** Its blobs when reused; without, the file is read and its content comes from {@link EntryLog.addRead}. */
  readonly blobs?: readonly number[];
  /** A reused sparse file's extents (manifest.ts). */
  readonly extents?: readonly number[];
}

interface Decoded {
  readonly index: number;
  readonly path: string;
  readonly tree: TreeEntry;
  readonly quick: string | undefined;
  readonly read: boolean;
  readonly blobs: number[] | undefined;
  readonly extents: number[] | undefined;
}

/** A growable scratch buffer for path bytes. */
function ensure(buffer: Buffer, length: number, keep: number): Buffer {
  if (buffer.length >= length) return buffer;
  const larger = Buffer.allocUnsafe(Math.max(length, 2 * buffer.length));
  buffer.copy(larger, 0, 0, keep);
  return larger;
}

export class EntryLog {
  private readonly walk = new ByteLog();
  private readonly reads = new ByteLog();
  private count = 0;
  private previous: Buffer = Buffer.allocUnsafe(4096);
  private previousLength = 0;
  private current: Buffer = Buffer.allocUnsafe(4096);

  /** Logs a walked entry; returns its index. */
  add(entry: TreeEntry, file?: FileContent): number {
    this.current = ensure(this.current, 3 * entry.path.length, 0);
    const pathLength = this.current.write(entry.path, 0, 'utf8');
    const limit = Math.min(pathLength, this.previousLength);
    let shared = 0;
    while (shared < limit && this.current[shared] === this.previous[shared]) shared++;
    const link = entry.linkTarget === undefined ? undefined : Buffer.from(entry.linkTarget, 'utf8');
    const device = entry.devMajor !== undefined || entry.devMinor !== undefined;
    const blobs = file?.blobs;
    const extents = blobs ? file?.extents : undefined;
    let flags = 0;
    let length = headerBytes + pathLength - shared;
    if (link) {
      flags |= hasLink;
      length += 4 + link.length;
    }
    if (device) {
      flags |= hasDevice;
      length += 8;
    }
    if (file) {
      flags |= blobs ? hasQuick | isReused : hasQuick | isRead;
      length += quickBytes + (blobs ? 4 + 4 * blobs.length : 0);
    }
    if (extents) {
      flags |= hasExtents;
      length += 4 + 8 * extents.length;
    }

    const { buffer, at } = this.walk.reserve(length);
    let o = buffer.writeUInt8(typeCodes.get(entry.type) as number, at);
    o = buffer.writeUInt8(flags, o);
    o = buffer.writeUInt16LE(entry.mode, o);
    o = buffer.writeUInt32LE(entry.uid, o);
    o = buffer.writeUInt32LE(entry.gid, o);
    o = buffer.writeDoubleLE(entry.size, o);
    o = buffer.writeDoubleLE(entry.mtimeMs, o);
    o = buffer.writeUInt32LE(shared, o);
    o = buffer.writeUInt32LE(pathLength - shared, o);
    o += this.current.copy(buffer, o, shared, pathLength);
    if (link) o += link.copy(buffer, buffer.writeUInt32LE(link.length, o));
    if (device) o = buffer.writeUInt32LE(entry.devMinor ?? 0, buffer.writeUInt32LE(entry.devMajor ?? 0, o));
    if (file) {
      const s = file.stats;
      o = buffer.writeBigUInt64LE(s.ino, o);
      o = buffer.writeBigInt64LE(s.ctimeNs, o);
      o = buffer.writeBigInt64LE(s.mtimeNs, o);
      o = buffer.writeBigUInt64LE(s.size, o);
    }
    if (blobs) {
      o = buffer.writeUInt32LE(blobs.length, o);
      for (const blob of blobs) o = buffer.writeUInt32LE(blob, o);
    }
    if (extents) {
      o = buffer.writeUInt32LE(extents.length, o);
      for (const value of extents) o = buffer.writeDoubleLE(value, o);
    }
    [this.previous, this.current] = [this.current, this.previous];
    this.previousLength = pathLength;
    return this.count++;
  }

  /**
   * Logs what was read of the file logged as `index` (in walk order; a file that vanished before it could be read
   * has no read record, and is left out of the manifest). `size`: the bytes read; `keepQuick`: whether the next
   * backup may trust the quick check.
   */
  addRead(
    index: number,
    size: number,
    keepQuick: boolean,
    blobs: readonly number[],
    extents?: readonly number[],
  ): void {
    const extra = extents ? 4 + 8 * extents.length : 0;
    const { buffer, at } = this.reads.reserve(4 + 8 + 1 + 4 + 4 * blobs.length + extra);
    let o = buffer.writeUInt32LE(index, at);
    o = buffer.writeDoubleLE(size, o);
    o = buffer.writeUInt8((keepQuick ? 1 : 0) | (extents ? 2 : 0), o);
    o = buffer.writeUInt32LE(blobs.length, o);
    for (const blob of blobs) o = buffer.writeUInt32LE(blob, o);
    if (extents) {
      o = buffer.writeUInt32LE(extents.length, o);
      for (const value of extents) o = buffer.writeDoubleLE(value, o);
    }
  }

  /** The manifest's entries in walk order, with the xattrs `xattrsOf` finds for their paths. */
  *entries(xattrsOf: (path: string) => Xattrs | undefined): Generator<ManifestEntry> {
    const reads = this.reads.reader();
    for (const item of this.decode()) {
      const attrs = xattrsOf(item.path) ?? item.tree.xattrs;
      if (item.blobs) {
        const content = {
          size: item.tree.size,
          blobs: item.blobs,
          quick: item.quick,
          ...(item.extents ? { extents: item.extents } : {}),
        };
        yield toManifestEntry(item.tree, attrs, content);
      } else if (!item.read) {
        yield toManifestEntry(item.tree, attrs);
      } else if (reads.more() && reads.buffer.readUInt32LE(reads.at) === item.index) {
        const { buffer } = reads;
        const size = buffer.readDoubleLE(reads.at + 4);
        const flags = buffer.readUInt8(reads.at + 12);
        const count = buffer.readUInt32LE(reads.at + 13);
        const blobs: number[] = [];
        for (let i = 0; i < count; i++) blobs.push(buffer.readUInt32LE(reads.at + 17 + 4 * i));
        reads.at += 17 + 4 * count;
        let extents: number[] | undefined;
        if (flags & 2) {
          const values = buffer.readUInt32LE(reads.at);
          extents = [];
          for (let i = 0; i < values; i++) extents.push(buffer.readDoubleLE(reads.at + 4 + 8 * i));
          reads.at += 4 + 8 * values;
        }
        yield toManifestEntry(item.tree, attrs, {
          size,
          blobs,
          ...(flags & 1 ? { quick: item.quick } : {}),
          ...(extents ? { extents } : {}),
        });
      }
    }
  }

  /** The paths of the entries at `indices` (one pass over the log). */
  paths(indices: ReadonlySet<number>): Map<number, string> {
    const found = new Map<number, string>();
    if (indices.size === 0) return found;
    for (const item of this.decode()) {
      if (indices.has(item.index)) found.set(item.index, item.path);
      if (found.size === indices.size) break;
    }
    return found;
  }

  private *decode(): Generator<Decoded> {
    const reader = this.walk.reader();
    // The previous path's bytes: a record holds only what differs from them.
    const scratch: { path: Buffer } = { path: Buffer.allocUnsafe(4096) };
    for (let index = 0; reader.more(); index++) yield decodeRecord(reader, index, scratch);
  }
}

function decodeRecord(reader: ByteReader, index: number, scratch: { path: Buffer }): Decoded {
  const { buffer } = reader;
  let o = reader.at;
  const type = types[buffer.readUInt8(o)] as EntryType;
  const flags = buffer.readUInt8(o + 1);
  const mode = buffer.readUInt16LE(o + 2);
  const uid = buffer.readUInt32LE(o + 4);
  const gid = buffer.readUInt32LE(o + 8);
  const size = buffer.readDoubleLE(o + 12);
  const mtimeMs = buffer.readDoubleLE(o + 20);
  const shared = buffer.readUInt32LE(o + 28);
  const own = buffer.readUInt32LE(o + 32);
  o += headerBytes;
  const path = ensure(scratch.path, shared + own, shared);
  scratch.path = path;
  buffer.copy(path, shared, o, o + own);
  o += own;
  const tree: { -readonly [K in keyof TreeEntry]: TreeEntry[K] } = {
    path: path.toString('utf8', 0, shared + own),
    type,
    mode,
    uid,
    gid,
    size,
    mtimeMs,
  };
  if (flags & hasLink) {
    const length = buffer.readUInt32LE(o);
    tree.linkTarget = buffer.toString('utf8', o + 4, o + 4 + length);
    o += 4 + length;
  }
  if (flags & hasDevice) {
    tree.devMajor = buffer.readUInt32LE(o);
    tree.devMinor = buffer.readUInt32LE(o + 4);
    o += 8;
  }
  let quick: string | undefined;
  if (flags & hasQuick) {
    const ino = buffer.readBigUInt64LE(o);
    const ctimeNs = buffer.readBigInt64LE(o + 8);
    const mtimeNs = buffer.readBigInt64LE(o + 16);
    const bytes = buffer.readBigUInt64LE(o + 24);
    // The quick key's form, as quickKey() writes it (manifest.ts).
    quick = `${ino}:${ctimeNs}:${mtimeNs}:${bytes}`;
    o += quickBytes;
  }
  let blobs: number[] | undefined;
  if (flags & isReused) {
    const count = buffer.readUInt32LE(o);
    blobs = [];
    for (let i = 0; i < count; i++) blobs.push(buffer.readUInt32LE(o + 4 + 4 * i));
    o += 4 + 4 * count;
  }
  let extents: number[] | undefined;
  if (flags & hasExtents) {
    const values = buffer.readUInt32LE(o);
    extents = [];
    for (let i = 0; i < values; i++) extents.push(buffer.readDoubleLE(o + 4 + 8 * i));
    o += 4 + 8 * values;
  }
  reader.at = o;
  return { index, path: tree.path, tree, quick, read: (flags & isRead) !== 0, blobs, extents };
}
