/**
 * Decoding a backup manifest (gzip-compressed JSON) under size limits. The manifest comes from storage an
 * attacker may have written, and gzip shrinks repetitive JSON a thousandfold: 88 KB inflated to 30 million
 * entries froze the daemon for minutes and took GBs. So the decompressed size and the number of objects and
 * arrays (what JSON.parse allocates per value) are counted as the data inflates, and the manifest is refused
 * as soon as either passes its limit, before anything is parsed. The defaults admit the largest real workspaces.
 */
import { createGunzip } from 'node:zlib';
import type { BackupManifest } from './manifest.js';
import { MalformedManifestError, ManifestTooLargeError } from './manifest-errors.js';
import { checkManifest } from './manifest-schema.js';

export interface ManifestLimits {
  /** Stored (compressed) bytes read at most (default 256 MiB). */
  readonly maxCompressedBytes?: number;
  /**
   * Decompressed bytes (default 480 MiB). A real entry takes about 200 bytes, so that is over 2 million files;
   * it also stays below V8's largest string (~512 MiB), past which the JSON could not be parsed at all.
   */
  readonly maxDecompressedBytes?: number;
  /** Tree entries (default 4 million: files, directories and links). */
  readonly maxEntries?: number;
  /** Content blobs (default 6 million: one per small file, one per ~1 MiB chunk of larger ones). */
  readonly maxBlobs?: number;
  /** Pack objects (default 1 million, ~8 TiB at 8 MiB a pack). */
  readonly maxPacks?: number;
}

export const defaultManifestLimits: Required<ManifestLimits> = Object.freeze({
  maxCompressedBytes: 256 * 1024 * 1024,
  maxDecompressedBytes: 480 * 1024 * 1024,
  maxEntries: 4_000_000,
  maxBlobs: 6_000_000,
  maxPacks: 1_000_000,
});

/**
 * Extent numbers (two per extent of a sparse file, see archive/sparse.ts) a manifest within `max` may hold: on
 * average one extent per entry. They count into its values (see {@link maxSeparators}).
 */
export function maxExtentNumbers(max: Required<ManifestLimits>): number {
  return 2 * max.maxEntries;
}

/** What a backup records at most (past it, its sparse files are read whole): what a restore decodes. */
export const maxBackupExtentNumbers = maxExtentNumbers(defaultManifestLimits);

export function manifestLimits(limits: ManifestLimits = {}): Required<ManifestLimits> {
  return { ...defaultManifestLimits, ...limits };
}

export async function decodeManifest(data: Buffer, limits: ManifestLimits = {}): Promise<BackupManifest> {
  const max = manifestLimits(limits);
  if (data.length > max.maxCompressedBytes) {
    throw new ManifestTooLargeError(`${data.length} bytes stored, more than the limit of ${max.maxCompressedBytes}`);
  }
  const json = await inflate(data, max);
  let text: string;
  try {
    text = json.toString('utf8');
  } catch (cause) {
    // Only with maxDecompressedBytes raised past V8's largest string: say so rather than "not JSON".
    throw new ManifestTooLargeError(`${json.length} bytes do not fit in one string`, { cause });
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (cause) {
    throw new MalformedManifestError('manifest', 'not valid JSON', { cause });
  }
  return checkManifest(parsed, max);
}

/**
 * The most objects and arrays a manifest within the count limits holds: per entry itself, its blob list, its
 * xattrs and its extents; per blob its tuple; per pack its object; a few at the top.
 */
export function maxContainers(max: Required<ManifestLimits>): number {
  return 4 * max.maxEntries + max.maxBlobs + max.maxPacks + 8;
}

/**
 * The most values (separators between them) such a manifest holds: an entry has about ten fields and a few xattrs,
 * a blob tuple four values, a pack a handful; sparse files' extents add their numbers. Plain values cost JSON.parse as much as containers: 220 million
 * numbers in an unused array fit in 418 KiB of gzip and stalled the daemon for 12 s (found by a red-team run).
 */
export function maxSeparators(max: Required<ManifestLimits>): number {
  return 16 * max.maxEntries + 5 * max.maxBlobs + 8 * max.maxPacks + maxExtentNumbers(max) + 64;
}

async function inflate(data: Buffer, max: Required<ManifestLimits>): Promise<Buffer> {
  const containers = maxContainers(max);
  const separators = maxSeparators(max);
  const counter = new ContainerCounter();
  const chunks: Buffer[] = [];
  let total = 0;
  // Chunks of 1 MiB: the per-chunk work (an async step, a count) stays negligible next to the inflating.
  const gunzip = createGunzip({ chunkSize: 1024 * 1024 });
  try {
    gunzip.end(data);
    for await (const chunk of gunzip as AsyncIterable<Buffer>) {
      total += chunk.length;
      if (total > max.maxDecompressedBytes) {
        throw new ManifestTooLargeError(`decompresses to more than the limit of ${max.maxDecompressedBytes} bytes`);
      }
      if (counter.count(chunk) > containers) {
        throw new ManifestTooLargeError(
          `more than ${containers} objects and arrays (limits: ${max.maxEntries} entries, ${max.maxBlobs} blobs)`,
        );
      }
      if (counter.separators > separators) {
        throw new ManifestTooLargeError(
          `more than ${separators} values (limits: ${max.maxEntries} entries, ${max.maxBlobs} blobs)`,
        );
      }
      chunks.push(chunk);
    }
  } catch (error) {
    if (error instanceof ManifestTooLargeError) throw error;
    throw new MalformedManifestError('manifest', 'not gzip-compressed', { cause: error });
  } finally {
    // Also when refused half way: the rest is never inflated.
    gunzip.destroy();
  }
  return Buffer.concat(chunks, total);
}

/**
 * Counts `{` and `[` (and `,`) outside strings across chunks. For valid JSON this is exactly the number of objects and
 * arrays JSON.parse will create; for invalid JSON, exactly those of the valid part JSON.parse gets through
 * before it fails. Bytes of multi-byte UTF-8 characters are all >= 0x80, so they never look like `"` or `\`.
 */
class ContainerCounter {
  private inString = false;
  private escaped = false;
  private containers = 0;
  /** `,` outside strings: one fewer than the values of each object or array. */
  separators = 0;

  count(chunk: Buffer): number {
    let { inString, escaped, containers, separators } = this;
    for (let i = 0; i < chunk.length; i++) {
      const byte = chunk[i] as number;
      if (inString) {
        if (escaped) escaped = false;
        else if (byte === 0x5c) escaped = true;
        else if (byte === 0x22) inString = false;
      } else if (byte === 0x22) inString = true;
      else if (byte === 0x7b || byte === 0x5b) containers++;
      else if (byte === 0x2c) separators++;
    }
    this.inString = inString;
    this.escaped = escaped;
    this.containers = containers;
    this.separators = separators;
    return containers;
  }
}
