import { once } from 'node:events';
import { finished } from 'node:stream/promises';
import { setImmediate as yieldToLoop } from 'node:timers/promises';
import { promisify } from 'node:util';
import { createGzip, gzip } from 'node:zlib';
import type { Compression } from '../archive/compression.js';
import type { EntryType, TreeEntry, WalkedEntry } from '../archive/tree.js';
import type { Xattrs } from '../archive/xattr.js';
import type { ManifestLimits } from './manifest-decode.js';
import { manifestLimits } from './manifest-decode.js';
import { UnrestorableBackupError } from './manifest-errors.js';

/**
 * A chunked backup: the tree's entries with their metadata, and for file content a list of blobs
 * (content-addressed pieces, SHA-256) stored inside pack objects under `workspaces/<id>/chunks/`.
 */
export interface BackupManifest {
  readonly format: 'workbay-backup-manifest';
  readonly version: 1;
  readonly workspaceId: string;
  readonly createdAt: string;
  /** How pack objects are compressed (decompression also detects it). */
  readonly compression: Compression;
  /** Pack object ids (object names are `chunks/<id>`), with their stored sizes. */
  readonly packs: ReadonlyArray<{ readonly id: string; readonly size: number; readonly rawSize: number }>;
  /** [sha256 hex, pack index, offset in the uncompressed pack, length]. */
  readonly blobs: ReadonlyArray<readonly [string, number, number, number]>;
  readonly entries: readonly ManifestEntry[];
  readonly totals: { readonly files: number; readonly contentBytes: number };
}

export interface ManifestEntry {
  readonly path: string;
  readonly type: EntryType;
  readonly mode: number;
  readonly uid: number;
  readonly gid: number;
  readonly size: number;
  readonly mtimeMs: number;
  readonly linkTarget?: string;
  readonly devMajor?: number;
  readonly devMinor?: number;
  /** base64 values */
  readonly xattrs?: Readonly<Record<string, string>>;
  /** Blob indices making up the content, in order. */
  readonly blobs?: readonly number[];
  /** `ino:ctimeNs:mtimeNs:size` when backed up: unchanged files are not read again. */
  readonly quick?: string;
  /**
   * A sparse file's data extents, `[offset, length, ...]` (archive/sparse.ts): its blobs hold only these bytes,
   * back to back, and the rest of its `size` is holes. Absent (every manifest before it): the blobs are the
   * whole file.
   */
  readonly extents?: readonly number[];
}

// Decoding checks every value and bounds the sizes (the manifest is untrusted input): manifest-decode.ts.
export type { ManifestLimits } from './manifest-decode.js';
export { decodeManifest, defaultManifestLimits } from './manifest-decode.js';
export { MalformedManifestError, ManifestTooLargeError } from './manifest-errors.js';

export const manifestContentType = 'application/vnd.workbay.backup-manifest.v1+json';

type Mutable<T> = { -readonly [K in keyof T]: T[K] };

/**
 * One manifest entry, built as one object (spreads of optional parts made four more per entry, and a backup makes
 * one per file). `content`: what was stored of a file (`size` is what was read, which can differ from the walk's).
 */
export function toManifestEntry(
  tree: TreeEntry,
  xattrs: Xattrs | undefined,
  content?: {
    readonly size: number;
    readonly blobs: number[];
    readonly quick?: string | undefined;
    readonly extents?: readonly number[];
  },
): ManifestEntry {
  const entry: Mutable<ManifestEntry> = {
    path: tree.path,
    type: tree.type,
    mode: tree.mode,
    uid: tree.uid,
    gid: tree.gid,
    size: content?.size ?? tree.size,
    mtimeMs: tree.mtimeMs,
  };
  if (tree.linkTarget !== undefined) entry.linkTarget = tree.linkTarget;
  if (tree.devMajor !== undefined) entry.devMajor = tree.devMajor;
  if (tree.devMinor !== undefined) entry.devMinor = tree.devMinor;
  if (xattrs) entry.xattrs = Object.fromEntries(Object.entries(xattrs).map(([k, v]) => [k, v.toString('base64')]));
  if (content) {
    entry.blobs = content.blobs;
    if (content.quick !== undefined) entry.quick = content.quick;
    if (content.extents) entry.extents = content.extents;
  }
  return entry;
}

export function quickKey(entry: WalkedEntry): string {
  const s = entry.stats;
  return `${s.ino}:${s.ctimeNs}:${s.mtimeNs}:${s.size}`;
}

export function toTreeEntry(entry: ManifestEntry): TreeEntry {
  const xattrs = entry.xattrs
    ? Object.fromEntries(Object.entries(entry.xattrs).map(([k, v]) => [k, Buffer.from(v, 'base64')]))
    : undefined;
  return {
    path: entry.path,
    type: entry.type,
    mode: entry.mode,
    uid: entry.uid,
    gid: entry.gid,
    size: entry.size,
    mtimeMs: entry.mtimeMs,
    ...(entry.linkTarget !== undefined ? { linkTarget: entry.linkTarget } : {}),
    ...(entry.devMajor !== undefined ? { devMajor: entry.devMajor } : {}),
    ...(entry.devMinor !== undefined ? { devMinor: entry.devMinor } : {}),
    ...(xattrs ? { xattrs } : {}),
  };
}

export async function encodeManifest(manifest: BackupManifest): Promise<Buffer> {
  return promisify(gzip)(Buffer.from(JSON.stringify(manifest)), { level: 1 });
}

/** A manifest whose blob table and entries are produced while it is written, see {@link encodeManifestStream}. */
export interface ManifestParts extends Omit<BackupManifest, 'blobs' | 'entries'> {
  readonly blobs: Iterable<BackupManifest['blobs'][number]>;
  readonly entries: Iterable<ManifestEntry>;
}

/** Text handed to the compressor at a time. */
const textBatch = 64 * 1024;

/** Text the compressor may have queued before the text is made further: bounds what waits in memory. */
const queuedText = 4 * 1024 * 1024;

/**
 * {@link encodeManifest} without the whole tree as objects and one JSON string (for 300,000 files the string and
 * its copy alone were 100 MB, beside the objects): the JSON is the same, in the same key order, made and
 * compressed a batch of entries at a time. Only the compressed manifest is held.
 *
 * The text is made on this thread while the thread pool compresses the batches before it: after each batch the
 * event loop gets a turn, in which the compressor takes the next one. Made and compressed one after the other
 * (through a stream pipeline, which made the next batch only once the compressor asked for it), a GiB backup of
 * 20,000 files spent 0.3 s here, after every pack was stored: its serial tail (`npm run bench`).
 */
export async function encodeManifestStream(parts: ManifestParts, limits: ManifestLimits = {}): Promise<Buffer> {
  const max = manifestLimits(limits);
  const chunks: Buffer[] = [];
  let size = 0;
  const compressor = createGzip({ level: 1 });
  compressor.on('data', (chunk: Buffer) => {
    chunks.push(chunk);
    size += chunk.length;
    if (size > max.maxCompressedBytes) {
      compressor.destroy(
        new UnrestorableBackupError(`its manifest compresses to more than ${max.maxCompressedBytes} bytes`),
      );
    }
  });
  const compressed = finished(compressor);
  // Awaited below; a failure while the text is made must not leave it unhandled.
  compressed.catch(() => undefined);
  try {
    for (const text of boundedText(manifestText(parts, max), max)) {
      if (compressor.destroyed) break;
      compressor.write(text);
      if (compressor.writableLength > queuedText) await once(compressor, 'drain');
      else await yieldToLoop();
    }
    if (!compressor.destroyed) compressor.end();
  } catch (error) {
    compressor.destroy();
    throw error;
  }
  await compressed;
  return Buffer.concat(chunks, size);
}

/** The text as a restore will count it (manifest-decode.ts): more than it reads fails the backup, not the restore. */
function* boundedText(text: Iterable<string>, max: Required<ManifestLimits>): Generator<string> {
  let bytes = 0;
  for (const part of text) {
    bytes += Buffer.byteLength(part);
    if (bytes > max.maxDecompressedBytes) {
      throw new UnrestorableBackupError(`its manifest is more than ${max.maxDecompressedBytes} bytes`);
    }
    yield part;
  }
}

function* manifestText(parts: ManifestParts, max: Required<ManifestLimits>): Generator<string> {
  const { format, version, workspaceId, createdAt, compression, packs, totals } = parts;
  if (packs.length > max.maxPacks) throw new UnrestorableBackupError(`it has more than ${max.maxPacks} packs`);
  const head = JSON.stringify({ format, version, workspaceId, createdAt, compression, packs });
  let text = `${head.slice(0, -1)},"blobs":[`;
  for (const [name, items] of [
    ['blobs', parts.blobs],
    ['entries', parts.entries],
  ] as const) {
    if (name === 'entries') text += '],"entries":[';
    let first = true;
    let count = 0;
    const limit = name === 'blobs' ? max.maxBlobs : max.maxEntries;
    for (const item of items) {
      if (++count > limit) throw new UnrestorableBackupError(`it has more than ${limit} ${name}`);
      text += first ? JSON.stringify(item) : `,${JSON.stringify(item)}`;
      first = false;
      if (text.length >= textBatch) {
        yield text;
        text = '';
      }
    }
  }
  yield `${text}],"totals":${JSON.stringify(totals)}}`;
}
