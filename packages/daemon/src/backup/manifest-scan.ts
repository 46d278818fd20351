/**
 * Reads a stored manifest one value at a time, for a backup that only needs an index of it (previous-backup.ts).
 * Decoding it whole (manifest-decode.ts, which the restore uses) holds the inflated bytes, one string of them and
 * every entry as an object at once: for 300,000 files with long paths the next backup's daemon took 1.4 GB of heap
 * before it walked a single file. Here each pack, blob and entry is parsed (and checked, manifest-schema.ts) alone
 * and handed on; the same limits apply as to a whole decode, counted as the data inflates.
 */
import type { Readable } from 'node:stream';
import { createGunzip } from 'node:zlib';
import type { ManifestLimits } from './manifest-decode.js';
import { manifestLimits, maxContainers, maxSeparators } from './manifest-decode.js';
import type { BackupManifest } from './manifest.js';
import { MalformedManifestError, ManifestTooLargeError } from './manifest-errors.js';
import { checkBlobs, checkEntry, checkManifestHead, checkPacks } from './manifest-schema.js';

/** The manifest's parts as they come, in its order: the tables, then the entries, then the rest. */
export interface ManifestVisitor {
  /** A top-level value other than the three tables (format, version, ..., totals). */
  field(key: string, value: unknown): void;
  pack(value: unknown, index: number): void;
  blob(value: unknown, index: number): void;
  entry(value: unknown, index: number): void;
}

/**
 * The one value of the manifest text parsed at a time: above any real entry (a path is at most 32 KiB, a file of
 * a TiB lists a million blobs), and a bound on what one JSON.parse allocates.
 */
const maxValueBytes = 32 * 1024 * 1024;
const tables = new Set(['packs', 'blobs', 'entries']);

/** Scans the gzip-compressed manifest `stored` (as downloaded), calling `visitor` for every value. */
export async function scanManifest(
  stored: Readable,
  visitor: ManifestVisitor,
  limits: ManifestLimits = {},
): Promise<void> {
  const max = manifestLimits(limits);
  const scanner = new Scanner(visitor, max);
  const gunzip = createGunzip({ chunkSize: 1024 * 1024 });
  let compressed = 0;
  /** A failed download is no malformed manifest: it fails the backup (which is retried), as readManifest's does. */
  let failure: { error: unknown } | undefined;
  stored.on('data', (chunk: Buffer) => {
    compressed += chunk.length;
    // Stop downloading at the limit rather than inflate whatever storage holds.
    if (compressed > max.maxCompressedBytes) {
      gunzip.destroy(new ManifestTooLargeError(`more than the limit of ${max.maxCompressedBytes} bytes stored`));
    }
  });
  stored.on('error', (error) => {
    failure = { error };
    gunzip.destroy(error);
  });
  stored.pipe(gunzip);
  let total = 0;
  try {
    for await (const chunk of gunzip as AsyncIterable<Buffer>) {
      total += chunk.length;
      if (total > max.maxDecompressedBytes) {
        throw new ManifestTooLargeError(`decompresses to more than the limit of ${max.maxDecompressedBytes} bytes`);
      }
      scanner.scan(chunk);
    }
  } catch (error) {
    if (failure) throw failure.error;
    if (error instanceof ManifestTooLargeError || error instanceof MalformedManifestError) throw error;
    throw new MalformedManifestError('manifest', 'not gzip-compressed', { cause: error });
  } finally {
    stored.destroy();
    gunzip.destroy();
  }
  scanner.finish();
}

/**
 * Decodes the gzip-compressed manifest `stored` for a restore, a value at a time as it inflates, each pack, blob
 * and entry checked as it comes (against the tables before it: the order every writer of manifests keeps), with
 * turns for the event loop between the inflated chunks. `decodeManifest` (one JSON.parse of the whole text, then one
 * walk over it) held the daemon's event loop 7–14 s for a manifest of 3.4 million hardlinks, and three such restores
 * at once made its `/live` fail until the supervisor restarted it, for every owner (red team round 13, L1). The
 * limits are those of `decodeManifest`.
 */
export async function decodeManifestStream(stored: Readable, limits: ManifestLimits = {}): Promise<BackupManifest> {
  const max = manifestLimits(limits);
  const fields: Record<string, unknown> = {};
  const packs: unknown[] = [];
  const blobs: unknown[] = [];
  const entries: unknown[] = [];
  const rawSizes: number[] = [];
  const lengths: number[] = [];
  await scanManifest(
    stored,
    {
      field: (key, value) => {
        fields[key] = value;
      },
      pack: (value, index) => {
        rawSizes.push(...checkPacks([value], index));
        packs.push(value);
      },
      blob: (value, index) => {
        lengths.push(...checkBlobs([value], rawSizes, index));
        blobs.push(value);
      },
      entry: (value, index) => {
        checkEntry(value, index, lengths);
        entries.push(value);
      },
    },
    max,
  );
  const manifest = { ...fields, packs, blobs, entries };
  checkManifestHead(manifest, max);
  return manifest as unknown as BackupManifest;
}

type Phase = 'key' | 'colon' | 'value';

/** A span of bytes being collected across chunks: its pieces from earlier chunks and its start in this one. */
class Capture {
  active = false;
  start = 0;
  private pieces: Buffer[] = [];
  private bytes = 0;

  constructor(private readonly limit: number) {}

  begin(at: number): void {
    this.active = true;
    this.start = at;
  }

  /** At the end of a chunk: keeps the captured part (copied: a view would keep the whole chunk alive). */
  carry(chunk: Buffer): void {
    if (!this.active) return;
    this.add(Buffer.from(chunk.subarray(this.start)));
    this.start = 0;
  }

  end(chunk: Buffer, at: number): string {
    this.add(chunk.subarray(this.start, at));
    const text = Buffer.concat(this.pieces, this.bytes).toString('utf8');
    this.active = false;
    this.pieces = [];
    this.bytes = 0;
    return text;
  }

  private add(piece: Buffer): void {
    this.bytes += piece.length;
    if (this.bytes > this.limit) throw new ManifestTooLargeError(`a value of more than ${this.limit} bytes`);
    this.pieces.push(piece);
  }
}

/**
 * Splits the manifest's JSON text into top-level values and the elements of its tables, tracking strings and
 * nesting byte by byte (UTF-8 continuation bytes are >= 0x80, so never look like `"` or `\`). JSON.parse checks
 * each value; the structure around them is checked here.
 */
class Scanner {
  private depth = 0;
  private inString = false;
  private escaped = false;
  private phase: Phase = 'key';
  /** The key whose value is being read. */
  private name = '';
  private readonly seen = new Set<string>();
  private readonly opened = new Set<string>();
  private readonly key = new Capture(64);
  private readonly value = new Capture(maxValueBytes);
  private readonly counts = { packs: 0, blobs: 0, entries: 0 };
  private readonly maxCounts: Readonly<Record<keyof Scanner['counts'], number>>;
  /** Objects, arrays and values JSON.parse will make, bounded as for a whole decode (its CPU and memory). */
  private containers = 0;
  private separators = 0;
  private readonly maxContainers: number;
  private readonly maxSeparators: number;

  constructor(
    private readonly visitor: ManifestVisitor,
    max: Required<ManifestLimits>,
  ) {
    this.maxCounts = { packs: max.maxPacks, blobs: max.maxBlobs, entries: max.maxEntries };
    this.maxContainers = maxContainers(max);
    this.maxSeparators = maxSeparators(max);
  }

  scan(chunk: Buffer): void {
    for (let i = 0; i < chunk.length; i++) {
      const byte = chunk[i] as number;
      if (this.inString) {
        if (this.escaped) this.escaped = false;
        else if (byte === 0x5c) this.escaped = true;
        else if (byte === 0x22) {
          this.inString = false;
          if (this.key.active) this.endKey(chunk, i);
        }
        continue;
      }
      if (byte === 0x20 || byte === 0x0a || byte === 0x0d || byte === 0x09) continue;
      if (this.depth <= 0) {
        // Only one object, and nothing after it.
        if (this.depth === -1 || byte !== 0x7b) throw new MalformedManifestError('manifest', 'not one JSON object');
        this.depth = 1;
        continue;
      }
      if (this.depth === 1) {
        if (this.topLevel(chunk, i, byte)) continue;
      } else if (this.depth === 2 && tables.has(this.name)) {
        // A table's element ends at `,` or `]` at this depth.
        if (byte === 0x2c || byte === 0x5d) {
          if (this.value.active) this.table(this.value.end(chunk, i));
          else if (byte === 0x2c) throw new MalformedManifestError(`manifest.${this.name}`, 'an empty element');
          if (byte === 0x5d) this.depth = 1;
          continue;
        }
        if (!this.value.active) this.value.begin(i);
      }
      if (byte === 0x22) this.inString = true;
      else if (byte === 0x7b || byte === 0x5b) {
        this.depth++;
        if (++this.containers > this.maxContainers) throw new ManifestTooLargeError('too many objects and arrays');
      } else if (byte === 0x7d || byte === 0x5d) this.depth--;
      else if (byte === 0x2c && ++this.separators > this.maxSeparators) {
        throw new ManifestTooLargeError('too many values');
      }
    }
    this.key.carry(chunk);
    this.value.carry(chunk);
  }

  finish(): void {
    if (this.depth !== -1 || !this.seen.has('entries')) {
      throw new MalformedManifestError('manifest', 'incomplete (the JSON ends early or has no entries)');
    }
  }

  /** A byte at the top level; true when it was handled entirely. */
  private topLevel(chunk: Buffer, at: number, byte: number): boolean {
    if (this.phase === 'key') {
      if (byte === 0x7d && this.seen.size === 0) this.depth = -1;
      else if (byte !== 0x22) throw new MalformedManifestError('manifest', 'a key expected');
      else {
        this.inString = true;
        this.key.begin(at + 1);
      }
      return true;
    }
    if (this.phase === 'colon') {
      if (byte !== 0x3a) throw new MalformedManifestError('manifest', 'a colon expected');
      this.phase = 'value';
      return true;
    }
    if (byte === 0x2c || byte === 0x7d) {
      if (this.value.active) this.field(this.value.end(chunk, at));
      else if (!tables.has(this.name)) throw new MalformedManifestError(`manifest.${this.name}`, 'no value');
      this.phase = 'key';
      // After the closing brace: nothing but whitespace may follow (depth -1 refuses any other byte).
      if (byte === 0x7d) this.depth = -1;
      return true;
    }
    if (tables.has(this.name)) {
      // The table's `[` (once: after its `]` only a `,` or `}` may follow).
      if (byte !== 0x5b || this.opened.has(this.name)) {
        throw new MalformedManifestError(`manifest.${this.name}`, 'not an array');
      }
      this.opened.add(this.name);
      this.depth = 2;
      return true;
    }
    if (!this.value.active) this.value.begin(at);
    return false;
  }

  private endKey(chunk: Buffer, at: number): void {
    const name = this.parse(`"${this.key.end(chunk, at)}"`);
    if (typeof name !== 'string') throw new MalformedManifestError('manifest', 'a key expected');
    if (this.seen.has(name)) throw new MalformedManifestError(`manifest.${name}`, 'appears twice');
    this.seen.add(name);
    this.name = name;
    this.phase = 'colon';
  }

  private parse(text: string): unknown {
    try {
      return JSON.parse(text);
    } catch (cause) {
      throw new MalformedManifestError(`manifest.${this.name}`, 'not valid JSON', { cause });
    }
  }

  private field(text: string): void {
    this.visitor.field(this.name, this.parse(text));
  }

  private table(text: string): void {
    const kind = this.name as keyof Scanner['counts'];
    const index = this.counts[kind]++;
    if (index >= this.maxCounts[kind]) {
      throw new ManifestTooLargeError(`more ${kind} than the limit of ${this.maxCounts[kind]}`);
    }
    const value = this.parse(text);
    if (kind === 'packs') this.visitor.pack(value, index);
    else if (kind === 'blobs') this.visitor.blob(value, index);
    else this.visitor.entry(value, index);
  }
}
