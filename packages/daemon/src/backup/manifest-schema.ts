/**
 * The shape of a decoded backup manifest, checked value by value. Everything downstream (the archive policy,
 * fchmod, the restore's offset arithmetic) trusts these types: a string mode such as "24755" reads as decimal to
 * the policy's set-id test and as octal to fchmod, so it must be refused here, not coerced somewhere later.
 */
import type { Compression } from '../archive/compression.js';
import { entryTypes } from '../archive/tree.js';
import type { EntryType } from '../archive/tree.js';
import type { BackupManifest, ManifestEntry } from './manifest.js';
import { MalformedManifestError, ManifestTooLargeError } from './manifest-errors.js';
import { extentBytes, extentsProblem, maxSparseSize } from '../archive/sparse.js';

/** The counts `checkManifest` allows (sizes are checked while decoding, see manifest-decode.ts). */
export interface ManifestCounts {
  readonly maxEntries: number;
  readonly maxBlobs: number;
  readonly maxPacks: number;
}

const knownEntryTypes: ReadonlySet<string> = new Set<EntryType>(entryTypes);
const compressions: ReadonlySet<string> = new Set<Compression>(['none', 'gzip', 'zstd']);
const sha256Hex = /^[0-9a-f]{64}$/;
const packId = /^[0-9a-f]{1,128}$/;
/** Standard base64 with padding, as Buffer#toString('base64') writes it. */
const base64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/**
 * Entry paths: generous, since a tree can nest deeper than PATH_MAX (it is created relative to open
 * directories), and one such path must not make a whole backup unrestorable; the bound is only against waste.
 */
const maxPathBytes = 32 * 1024;
/** symlink(2) refuses targets of PATH_MAX (4096) bytes or more. */
const maxLinkTargetBytes = 4095;
/** XATTR_NAME_MAX and XATTR_SIZE_MAX (as base64), the kernel's own limits. */
const maxXattrNameBytes = 255;
const maxXattrValueChars = Math.ceil((64 * 1024) / 3) * 4;
/** A handful is normal; the kernel's list of names per inode is 64 KiB, so this is already more than fits. */
const maxXattrsPerEntry = 256;
/** uid/gid 0xffffffff means "leave unchanged" to chown, so it is not a real owner. */
const maxId = 0xfffffffe;
/** The largest time a Date holds, in ms either side of 1970. */
const maxTimeMs = 8.64e15;
const maxQuickChars = 256;

const isRecord = (value: unknown): value is Record<string, unknown> =>
  typeof value === 'object' && value !== null && !Array.isArray(value);
const isCount = (value: unknown): value is number => Number.isSafeInteger(value) && (value as number) >= 0;
const isIntIn = (value: unknown, max: number): value is number => isCount(value) && value <= max;

/** A short, printable rendering of a refused value for the error (never the whole of a huge string). */
function shown(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}...` : value);
  if (typeof value === 'number' || typeof value === 'boolean' || value === null || value === undefined) {
    return String(value);
  }
  return Array.isArray(value) ? 'an array' : `a ${typeof value}`;
}

function isName(value: unknown, maxBytes: number): value is string {
  return (
    typeof value === 'string' &&
    value.length > 0 &&
    !value.includes('\0') &&
    // UTF-8 takes at most 3 bytes per UTF-16 unit: only long strings need the exact count.
    (value.length * 3 <= maxBytes || Buffer.byteLength(value) <= maxBytes)
  );
}

/** The tables of a manifest whose top level {@link checkHead} passed, still to be checked element by element. */
interface ManifestTables {
  readonly packs: readonly unknown[];
  readonly blobs: readonly unknown[];
  readonly entries: readonly unknown[];
}

/**
 * Everything of `parsed` but its tables' elements (its kind, counts, fields and totals), for a decoder that checked
 * each element as it came (manifest-scan.ts); returns the tables.
 */
export function checkManifestHead(parsed: unknown, counts: ManifestCounts): ManifestTables {
  if (!isRecord(parsed)) throw new MalformedManifestError('manifest', `not an object (got ${shown(parsed)})`);
  if (parsed['format'] !== 'workbay-backup-manifest' || parsed['version'] !== 1) {
    throw new MalformedManifestError('manifest.format', 'unknown backup manifest format or version');
  }
  const { entries, blobs, packs, totals } = parsed;
  if (!Array.isArray(entries) || !Array.isArray(blobs) || !Array.isArray(packs) || !isRecord(totals)) {
    throw new MalformedManifestError('manifest', 'incomplete (entries, blobs, packs or totals missing)');
  }
  if (entries.length > counts.maxEntries) {
    throw new ManifestTooLargeError(`${entries.length} entries, more than the limit of ${counts.maxEntries}`);
  }
  if (blobs.length > counts.maxBlobs) {
    throw new ManifestTooLargeError(`${blobs.length} blobs, more than the limit of ${counts.maxBlobs}`);
  }
  if (packs.length > counts.maxPacks) {
    throw new ManifestTooLargeError(`${packs.length} packs, more than the limit of ${counts.maxPacks}`);
  }
  for (const field of ['workspaceId', 'createdAt'] as const) {
    if (typeof parsed[field] !== 'string') {
      throw new MalformedManifestError(`manifest.${field}`, `not a string (got ${shown(parsed[field])})`);
    }
  }
  if (typeof parsed['compression'] !== 'string' || !compressions.has(parsed['compression'])) {
    throw new MalformedManifestError('manifest.compression', `unknown compression ${shown(parsed['compression'])}`);
  }
  if (!isCount(totals['files']) || !isCount(totals['contentBytes'])) {
    throw new MalformedManifestError('manifest.totals', 'files and contentBytes must be non-negative integers');
  }
  return { packs, blobs, entries };
}

/**
 * Checks that `parsed` (JSON.parse's result) is a manifest in every detail the restore relies on and returns it
 * typed; throws MalformedManifestError naming the first offending field, or ManifestTooLargeError for counts.
 */
export function checkManifest(parsed: unknown, counts: ManifestCounts): BackupManifest {
  const { packs, blobs, entries } = checkManifestHead(parsed, counts);
  const rawSizes = checkPacks(packs);
  const lengths = checkBlobs(blobs, rawSizes);
  for (let index = 0; index < entries.length; index++) checkEntry(entries[index], index, lengths);
  return parsed as BackupManifest;
}

/** Returns each pack's uncompressed size, which bounds the blobs in it; `first`: the index of `packs[0]`. */
export function checkPacks(packs: readonly unknown[], first = 0): number[] {
  const rawSizes: number[] = [];
  for (let index = 0; index < packs.length; index++) {
    const pack = packs[index];
    const field = `manifest.packs[${first + index}]`;
    if (!isRecord(pack)) throw new MalformedManifestError(field, `not an object (got ${shown(pack)})`);
    // The id becomes part of an object name: hex only, so it cannot name anything outside the chunks directory.
    if (typeof pack['id'] !== 'string' || !packId.test(pack['id'])) {
      throw new MalformedManifestError(`${field}.id`, `not a hex pack id (got ${shown(pack['id'])})`);
    }
    for (const key of ['size', 'rawSize'] as const) {
      if (!isCount(pack[key])) {
        throw new MalformedManifestError(`${field}.${key}`, `not a non-negative integer (got ${shown(pack[key])})`);
      }
    }
    rawSizes.push(pack['rawSize'] as number);
  }
  return rawSizes;
}

/** Returns each blob's length, for checking the files' sizes against; `first`: the index of `blobs[0]`. */
export function checkBlobs(blobs: readonly unknown[], rawSizes: readonly number[], first = 0): number[] {
  const lengths: number[] = [];
  for (let index = 0; index < blobs.length; index++) {
    const blob = blobs[index];
    const field = `manifest.blobs[${first + index}]`;
    if (!Array.isArray(blob) || blob.length !== 4) {
      throw new MalformedManifestError(field, `not a [hash, pack, offset, length] tuple (got ${shown(blob)})`);
    }
    const [hash, pack, offset, length] = blob as unknown[];
    if (typeof hash !== 'string' || !sha256Hex.test(hash)) {
      throw new MalformedManifestError(`${field}[0]`, `not a SHA-256 hex digest (got ${shown(hash)})`);
    }
    if (!isIntIn(pack, rawSizes.length - 1)) {
      throw new MalformedManifestError(`${field}[1]`, `not the index of a pack (got ${shown(pack)})`);
    }
    if (!isCount(offset) || !isCount(length)) {
      throw new MalformedManifestError(field, 'offset and length must be non-negative integers');
    }
    // Past the pack's end the restore would read bytes that are not the blob's (or garbage left in its buffer).
    if (offset + length > (rawSizes[pack] as number)) {
      throw new MalformedManifestError(field, `ends at ${offset + length}, past its pack's ${rawSizes[pack]} bytes`);
    }
    lengths.push(length);
  }
  return lengths;
}

export function checkEntry(
  entry: unknown,
  index: number,
  blobLengths: readonly number[],
): asserts entry is ManifestEntry {
  const at = `manifest.entries[${index}]`;
  if (!isRecord(entry)) throw new MalformedManifestError(at, `not an object (got ${shown(entry)})`);
  const path = entry['path'];
  if (!isName(path, maxPathBytes)) {
    throw new MalformedManifestError(`${at}.path`, `not a path without NUL of 1 to ${maxPathBytes} bytes`);
  }
  // From here on errors name the entry by its path too: that is what an operator can look for.
  const fail = (field: string, reason: string): never => {
    throw new MalformedManifestError(`${at}.${field}`, `entry ${shown(path)}: ${field} ${reason}`);
  };
  const type = entry['type'];
  if (typeof type !== 'string' || !knownEntryTypes.has(type)) fail('type', `is not an entry type (got ${shown(type)})`);
  if (!isIntIn(entry['mode'], 0o7777))
    fail('mode', `must be an integer from 0 to 0o7777 (got ${shown(entry['mode'])})`);
  if (!isIntIn(entry['uid'], maxId)) fail('uid', `must be an integer from 0 to ${maxId} (got ${shown(entry['uid'])})`);
  if (!isIntIn(entry['gid'], maxId)) fail('gid', `must be an integer from 0 to ${maxId} (got ${shown(entry['gid'])})`);
  if (!isCount(entry['size'])) fail('size', `must be a non-negative integer (got ${shown(entry['size'])})`);
  const mtime = entry['mtimeMs'];
  if (typeof mtime !== 'number' || !(Math.abs(mtime) <= maxTimeMs))
    fail('mtimeMs', `is not a time (got ${shown(mtime)})`);
  if (entry['linkTarget'] !== undefined && !isName(entry['linkTarget'], maxLinkTargetBytes)) {
    fail('linkTarget', `must be a path without NUL of 1 to ${maxLinkTargetBytes} bytes`);
  }
  for (const field of ['devMajor', 'devMinor'] as const) {
    if (entry[field] !== undefined && !isIntIn(entry[field], 0xffffffff)) {
      fail(field, `must be a 32-bit unsigned integer (got ${shown(entry[field])})`);
    }
  }
  if (entry['quick'] !== undefined && !(typeof entry['quick'] === 'string' && entry['quick'].length <= maxQuickChars)) {
    fail('quick', `must be a string of at most ${maxQuickChars} characters`);
  }
  if (entry['xattrs'] !== undefined) checkXattrs(entry['xattrs'], fail);
  // A sparse file's blobs hold the data of its extents only (absent in manifests before them: the whole file).
  const extents = entry['extents'];
  let contentSize = entry['size'] as number;
  if (extents !== undefined) {
    if (type !== 'file') fail('extents', `only files have content (this is a ${type as string})`);
    // Its size is no longer bounded by the data stored: by what a file can be.
    if (contentSize > maxSparseSize) fail('size', `is more than ${maxSparseSize} for a sparse file`);
    const problem = extentsProblem(extents, contentSize);
    if (problem !== undefined) fail('extents', problem);
    contentSize = extentBytes(extents as number[]);
  }
  const blobs = entry['blobs'];
  if (blobs === undefined) {
    if (type === 'file' && contentSize !== 0) fail('size', `is ${shown(entry['size'])} but the file has no blobs`);
    return;
  }
  if (!Array.isArray(blobs)) return fail('blobs', `must be an array of blob indices (got ${shown(blobs)})`);
  if (type !== 'file') fail('blobs', `only files have content (this is a ${type as string})`);
  let total = 0;
  for (let i = 0; i < blobs.length; i++) {
    const blob: unknown = blobs[i];
    if (!isIntIn(blob, blobLengths.length - 1)) fail(`blobs[${i}]`, `is not the index of a blob (got ${shown(blob)})`);
    total += blobLengths[blob as number] as number;
  }
  // The restore writes blobs at running offsets (of the extents' data) and sizes the file to `size`: they must agree.
  if (total !== contentSize) {
    if (extents === undefined) fail('size', `is ${shown(entry['size'])} but its blobs add up to ${total} bytes`);
    fail('extents', `hold ${contentSize} bytes of data but the blobs add up to ${total} bytes`);
  }
}

function checkXattrs(xattrs: unknown, fail: (field: string, reason: string) => never): void {
  if (!isRecord(xattrs)) return fail('xattrs', `must be an object of names to base64 values (got ${shown(xattrs)})`);
  const names = Object.keys(xattrs);
  if (names.length > maxXattrsPerEntry) fail('xattrs', `has ${names.length} names, more than ${maxXattrsPerEntry}`);
  for (const name of names) {
    if (!isName(name, maxXattrNameBytes)) {
      fail('xattrs', `name ${shown(name)} is not 1 to ${maxXattrNameBytes} bytes without NUL`);
    }
    const value = xattrs[name];
    if (typeof value !== 'string' || value.length > maxXattrValueChars || !base64.test(value)) {
      fail(`xattrs[${JSON.stringify(name)}]`, 'must be base64 of at most 64 KiB');
    }
  }
}
