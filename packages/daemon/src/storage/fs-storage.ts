/**
 * The built-in filesystem storage backend (`kind: 'fs'`): buckets are directories under a root, objects are
 * files. It keeps the full `RemoteStorage` contract, so the daemon's embedded default behaves like the remote
 * backends, and it is what the conformance suite in `@workbay/testing` runs against first.
 *
 * On-disk layout of one object `a/b/c` in bucket `bkt`:
 * - `<root>/bkt/a/b/c%o`: the sidecar, JSON with the name, size, digest, content type, user metadata and the id
 *   of the data file it points to. Replacing this file (rename) is the commit point of an upload.
 * - `<root>/bkt/a/b/c%z<uploadId>`: the bytes. Every upload writes a new data file, so a reader holding the
 *   previous sidecar still finds the previous bytes until the new upload has committed.
 * Path segments are percent-encoded (`encodeURIComponent`, upper-case hex), which never produces `%o`, `%z`,
 * `%t`, `%E` or `%H`, so object files never collide with directories of longer names (`a` and `a/b` can both
 * exist, as in S3). Segments whose encoding is too long for a file name are stored under their SHA-256.
 */
import type { Hash } from 'node:crypto';
import { createHash, randomBytes } from 'node:crypto';
import type { FileHandle } from 'node:fs/promises';
import { mkdir, open, readFile, readdir, rename, rm, rmdir, stat, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import type {
  BucketLayout,
  DeleteTarget,
  DownloadOptions,
  ListOptions,
  ObjectInfo,
  PluginLogger,
  PresignMethod,
  PresignOptions,
  ReadIntoOptions,
  RemoteStorage,
  UploadOptions,
} from '@workbay/api';
import { silentLogger } from '@workbay/api';
import { InvalidArgumentError, NotFoundError } from '../errors.js';
import { KeyedMutex } from '../util/concurrency.js';
import { DirectorySyncs } from './directory-sync.js';
import { digestFile, SharedMemoryDigest } from '../backup/worker-pool.js';
import { PresignServer } from './presign-server.js';
import type { PresignServerOptions } from './presign-server.js';

export interface FsStorageOptions {
  /** Directory holding one sub-directory per bucket. Created if missing. */
  readonly root: string;
  /** Where presigned URLs are served. */
  readonly presign?: PresignServerOptions;
  readonly logger?: PluginLogger;
  /** Where owners' objects live; the daemon names buckets with `locateOwner(layout, owner)`. */
  readonly layout?: BucketLayout;
}

interface Sidecar {
  readonly v: 1;
  readonly name: string;
  readonly size: number;
  readonly lastModified: string;
  /** Absent when the caller verifies the content itself (`UploadOptions.verifiedByCaller`). */
  readonly digest?: string;
  readonly contentType?: string;
  readonly metadata: Record<string, string>;
  /** Upload id of the data file (`<segment>%z<data>`). */
  readonly data: string;
}

const bucketPattern = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/;
const maxNameBytes = 1024;
const maxEncodedSegment = 200;
/** Leftover data files older than this (from crashed uploads of other processes) are swept. */
const orphanAgeMs = 10 * 60 * 1000;
const metaSuffix = '%o';
const dataMarker = '%z';
const tempMarker = '%t';
/** How often one directory is swept for leftovers of crashed uploads (see `sweepDirectory`). */
const sweepIntervalMs = 60 * 1000;
/** Objects up to this size are hashed on the event loop as they stream by (a worker round trip costs more). */
const inlineDigestLimit = 1024 * 1024;

function assertBucket(bucket: string): void {
  if (!bucketPattern.test(bucket)) {
    throw new InvalidArgumentError('bucket', `'${bucket}' is not a valid bucket name (3-63 of a-z, 0-9, '.', '-')`);
  }
}

function assertName(name: string): void {
  if (name.length === 0) throw new InvalidArgumentError('name', 'object name must not be empty');
  if (Buffer.byteLength(name) > maxNameBytes) {
    throw new InvalidArgumentError('name', `object name is longer than ${maxNameBytes} bytes`);
  }
  if (name.includes('\0')) throw new InvalidArgumentError('name', 'object name must not contain NUL bytes');
}

function encodeSegment(segment: string): string {
  if (segment === '') return '%E';
  if (segment === '.') return '%2E';
  if (segment === '..') return '%2E%2E';
  const encoded = encodeURIComponent(segment);
  if (encoded.length > maxEncodedSegment) return `%H${createHash('sha256').update(segment).digest('hex')}`;
  return encoded;
}

/** Decodes a directory segment; undefined for hashed segments (their names live in the sidecars). */
function decodeSegment(segment: string): string | undefined {
  if (segment === '%E') return '';
  if (segment.startsWith('%H')) return undefined;
  try {
    return decodeURIComponent(segment);
  } catch {
    // Deliberate: not one of our encodings (a foreign file in the bucket directory); listings skip it.
    return undefined;
  }
}

function compareNames(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a), Buffer.from(b));
}

function isNotFound(error: unknown): boolean {
  const code = (error as NodeJS.ErrnoException | undefined)?.code;
  return code === 'ENOENT' || code === 'ENOTDIR';
}

/** A data (`%z`) or temp (`%t`) file's object segment and upload id; undefined for sidecars and other names. */
function parseLeftover(entry: string): { base: string; marker: string; id: string } | undefined {
  for (const marker of [dataMarker, tempMarker]) {
    const at = entry.lastIndexOf(marker);
    if (at <= 0) continue;
    const id = entry.slice(at + marker.length);
    // Upload ids are base-36 time and hex: anything else is part of an encoded name, not a leftover.
    if (/^[0-9a-z]+$/.test(id)) return { base: entry.slice(0, at), marker, id };
  }
  return undefined;
}

function newUploadId(): string {
  return `${Date.now().toString(36)}${randomBytes(8).toString('hex')}`;
}

/** A filesystem-backed {@link RemoteStorage}. */
export class FsRemoteStorage implements RemoteStorage {
  readonly kind = 'fs';
  readonly root: string;
  readonly layout: BucketLayout;
  private readonly logger: PluginLogger;
  private readonly commitLock = new KeyedMutex();
  private readonly presign: PresignServer;
  private readonly directorySync = new DirectorySyncs();
  /** When each directory was last swept for leftovers of crashed uploads. */
  private readonly swept = new Map<string, number>();

  constructor(options: FsStorageOptions) {
    this.root = options.root;
    this.layout = options.layout ?? { mode: 'per-owner' };
    this.logger = options.logger ?? silentLogger;
    this.presign = new PresignServer(this, options.presign ?? {}, this.logger);
  }

  async ensureBucket(bucket: string): Promise<void> {
    assertBucket(bucket);
    await mkdir(join(this.root, bucket), { recursive: true });
  }

  async bucketExists(bucket: string): Promise<boolean> {
    assertBucket(bucket);
    try {
      return (await stat(join(this.root, bucket))).isDirectory();
    } catch (error) {
      if (isNotFound(error)) return false;
      throw error;
    }
  }

  private objectPaths(bucket: string, name: string): { dir: string; base: string } {
    assertBucket(bucket);
    assertName(name);
    const segments = name.split('/').map(encodeSegment);
    const base = segments.pop() as string;
    return { dir: join(this.root, bucket, ...segments), base };
  }

  async upload(bucket: string, name: string, body: Readable, options: UploadOptions = {}): Promise<ObjectInfo> {
    const { dir, base } = this.objectPaths(bucket, name);
    if (!(await this.bucketExists(bucket))) {
      body.destroy();
      throw new NotFoundError(`bucket '${bucket}' does not exist`);
    }
    if (options.digest !== undefined && !/^sha256:[0-9a-f]{64}$/.test(options.digest)) {
      body.destroy();
      throw new InvalidArgumentError('digest', `'${options.digest}' is not a sha256 digest ('sha256:<64 hex>')`);
    }
    const id = newUploadId();
    const dataPath = join(dir, `${base}${dataMarker}${id}`);
    const tempMeta = join(dir, `${base}${tempMarker}${id}`);
    let size = 0;
    // The digest is computed here, of exactly the bytes written, so the event loop never spends a pass over a
    // large object's bytes: small objects are hashed as they stream by; a large body of shared memory is hashed
    // by a worker thread from that memory while it is written; any other large object afterwards by a worker
    // thread reading the written file back (beside its fsync). Content its caller verifies itself (a backup's
    // packs, whose blobs are checked on restore) is not hashed at all: that pass was a sixth of a backup's CPU.
    const wantDigest = options.digest !== undefined || options.verifiedByCaller !== true;
    let hash: Hash | undefined = wantDigest ? createHash('sha256') : undefined;
    let shared: SharedMemoryDigest | undefined;
    let first = true;
    const handle = await this.createInDirectory(dir, dataPath);
    /** The data file's fsync and close, running beside the digest and the sidecar's write and fsync. */
    let dataDone: Promise<void> | undefined;
    try {
      let digest: string | undefined;
      try {
        for await (const chunk of body as AsyncIterable<Buffer | string>) {
          options.signal?.throwIfAborted();
          let buffer = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
          if (
            wantDigest &&
            first &&
            SharedMemoryDigest.accepts(buffer) &&
            (options.size ?? Infinity) > inlineDigestLimit
          ) {
            shared = new SharedMemoryDigest();
            hash = undefined;
          }
          first = false;
          size += buffer.length;
          if (shared) {
            // A body mixing in unshared buffers (rare): a copy of those is still cheaper than a read-back.
            if (!SharedMemoryDigest.accepts(buffer)) {
              const copy = Buffer.from(new SharedArrayBuffer(buffer.length));
              buffer.copy(copy);
              buffer = copy;
            }
            shared.update(buffer);
          } else if (size > inlineDigestLimit) hash = undefined;
          else hash?.update(buffer);
          // Every byte handed to the digest is written: a short write continues where it stopped.
          for (let written = 0; written < buffer.length;) {
            written += (await handle.write(buffer, written, buffer.length - written)).bytesWritten;
          }
        }
        options.signal?.throwIfAborted();
        const synced = handle.sync();
        try {
          if (wantDigest) {
            digest = `sha256:${shared ? await shared.digest() : hash ? hash.digest('hex') : await digestFile(handle.fd)}`;
          }
        } finally {
          // Closed only once the worker no longer reads it (a reused descriptor number must not be read).
          dataDone = synced.finally(() => handle.close());
          dataDone.catch(() => undefined); // awaited before the commit, or on the way out of a failure
        }
      } catch (error) {
        shared?.drop();
        if (!dataDone) await handle.close();
        throw error;
      }
      if (options.digest !== undefined && options.digest !== digest) {
        throw new InvalidArgumentError(
          'digest',
          `upload of '${name}' has digest ${digest}, expected ${options.digest}`,
        );
      }
      const sidecar: Sidecar = {
        v: 1,
        name,
        size,
        lastModified: new Date().toISOString(),
        ...(digest !== undefined ? { digest } : {}),
        ...(options.contentType !== undefined ? { contentType: options.contentType } : {}),
        metadata: lowerCaseKeys(options.metadata ?? {}),
        data: id,
      };
      const metaHandle = await this.createInDirectory(dir, tempMeta);
      try {
        await metaHandle.writeFile(JSON.stringify(sidecar));
        await metaHandle.sync();
      } finally {
        await metaHandle.close();
      }
      // Both files are on disk before the sidecar's rename makes the object visible.
      await dataDone;
      await this.commitLock.run(`${bucket}/${name}`, async () => {
        const previous = await this.readSidecar(dir, base);
        await rename(tempMeta, join(dir, `${base}${metaSuffix}`));
        // Uploads committing into the same directory at once share one directory fsync.
        await this.directorySync.sync(dir);
        if (previous && previous.data !== id) {
          await rm(join(dir, `${base}${dataMarker}${previous.data}`), { force: true });
        }
      });
      await this.sweepDirectory(dir);
      return toInfo(bucket, sidecar);
    } catch (error) {
      await dataDone?.catch(() => undefined);
      await rm(dataPath, { force: true });
      await rm(tempMeta, { force: true });
      body.destroy();
      throw error;
    }
  }

  /** Creates a new file; a concurrent delete may prune the (empty) directory between mkdir and open. */
  private async createInDirectory(dir: string, path: string): Promise<FileHandle> {
    for (let attempt = 0; ; attempt++) {
      await mkdir(dir, { recursive: true });
      try {
        return await open(path, 'wx+', 0o644);
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'ENOENT' || attempt >= 3) throw error;
      }
    }
  }

  /**
   * Removes data and temp files that crashed uploads left in `dir` (older than {@link orphanAgeMs}, and for a data
   * file no longer its object's current one). At most once per {@link sweepIntervalMs} a directory: a listing per
   * upload was quadratic in a directory's objects (a 20 GiB backup's 2,500 packs listed 2,500 times).
   */
  private async sweepDirectory(dir: string): Promise<void> {
    const now = Date.now();
    const last = this.swept.get(dir);
    if (last !== undefined && now - last < sweepIntervalMs) return;
    // Bounded: forgetting a directory only means it is swept again sooner.
    if (this.swept.size >= 10_000) this.swept.clear();
    this.swept.set(dir, now);
    let names: string[];
    try {
      names = await readdir(dir);
    } catch {
      // Deliberate: best effort after a committed write; leftovers stay for a later sweep.
      return;
    }
    for (const entry of names) {
      const leftover = parseLeftover(entry);
      if (!leftover) continue;
      const path = join(dir, entry);
      try {
        if (now - (await stat(path)).mtimeMs <= orphanAgeMs) continue;
        if (leftover.marker === dataMarker && (await this.readSidecar(dir, leftover.base))?.data === leftover.id)
          continue;
        await rm(path, { force: true });
      } catch {
        // Deliberate: raced with another sweeper or a delete; the file is gone or stays for the next sweep.
      }
    }
  }

  private async readSidecar(dir: string, base: string): Promise<Sidecar | undefined> {
    try {
      return JSON.parse(await readFile(join(dir, `${base}${metaSuffix}`), 'utf8')) as Sidecar;
    } catch (error) {
      if (isNotFound(error)) return undefined;
      throw error;
    }
  }

  async download(bucket: string, name: string, options: DownloadOptions = {}): Promise<Readable> {
    const handle = await this.openData(bucket, name, options.signal);
    // 1 MiB reads: a sixteenth of the thread-pool round trips of the 64 KiB default for large objects.
    return handle.createReadStream({ autoClose: true, signal: options.signal, highWaterMark: 1024 * 1024 });
  }

  async readInto(bucket: string, name: string, into: Uint8Array, options: ReadIntoOptions = {}): Promise<number> {
    const offset = options.offset ?? 0;
    if (!Number.isSafeInteger(offset) || offset < 0) {
      throw new InvalidArgumentError('offset', `must be a non-negative integer, not ${offset}`);
    }
    const handle = await this.openData(bucket, name, options.signal);
    try {
      let filled = 0;
      while (filled < into.length) {
        options.signal?.throwIfAborted();
        const { bytesRead } = await handle.read(into, filled, into.length - filled, offset + filled);
        if (bytesRead === 0) break;
        filled += bytesRead;
      }
      return filled;
    } finally {
      await handle.close();
    }
  }

  /** Opens the data file of an object's current version. */
  private async openData(bucket: string, name: string, signal: AbortSignal | undefined): Promise<FileHandle> {
    const { dir, base } = this.objectPaths(bucket, name);
    // A concurrent upload can replace the sidecar and delete the data file we were about to open; re-read.
    for (let attempt = 0; ; attempt++) {
      signal?.throwIfAborted();
      const sidecar = await this.readSidecar(dir, base);
      if (!sidecar) throw new NotFoundError(`object '${name}' not found in bucket '${bucket}'`);
      try {
        return await open(join(dir, `${base}${dataMarker}${sidecar.data}`), 'r');
      } catch (error) {
        if (!isNotFound(error) || attempt >= 5) throw error;
      }
    }
  }

  async stat(bucket: string, name: string): Promise<ObjectInfo | undefined> {
    const { dir, base } = this.objectPaths(bucket, name);
    const sidecar = await this.readSidecar(dir, base);
    return sidecar ? toInfo(bucket, sidecar) : undefined;
  }

  async *list(bucket: string, options: ListOptions = {}): AsyncIterable<ObjectInfo> {
    assertBucket(bucket);
    const prefix = options.prefix ?? '';
    const found: Sidecar[] = [];
    await this.walk(join(this.root, bucket), '', true, prefix, found, options.signal);
    found.sort((a, b) => compareNames(a.name, b.name));
    for (const sidecar of found) yield toInfo(bucket, sidecar);
  }

  private async walk(
    dir: string,
    decodedDir: string,
    decodable: boolean,
    prefix: string,
    out: Sidecar[],
    signal: AbortSignal | undefined,
  ): Promise<void> {
    signal?.throwIfAborted();
    let entries;
    try {
      entries = await readdir(dir, { withFileTypes: true });
    } catch (error) {
      if (isNotFound(error)) return;
      throw error;
    }
    for (const entry of entries) {
      if (entry.isDirectory()) {
        const decoded = decodeSegment(entry.name);
        const childDecodable = decodable && decoded !== undefined;
        const childPath = childDecodable ? `${decodedDir}${decoded as string}/` : '';
        // Skip directories that cannot hold a name starting with the prefix.
        if (childDecodable && !(childPath.startsWith(prefix) || prefix.startsWith(childPath))) continue;
        await this.walk(join(dir, entry.name), childPath, childDecodable, prefix, out, signal);
      } else if (entry.isFile() && entry.name.endsWith(metaSuffix)) {
        let sidecar: Sidecar;
        try {
          sidecar = JSON.parse(await readFile(join(dir, entry.name), 'utf8')) as Sidecar;
        } catch (error) {
          if (isNotFound(error)) continue; // deleted while listing
          throw error;
        }
        if (sidecar.name.startsWith(prefix)) out.push(sidecar);
      }
    }
  }

  async delete(bucket: string, target: DeleteTarget): Promise<number> {
    assertBucket(bucket);
    if ('name' in target) {
      return (await this.deleteOne(bucket, target.name)) ? 1 : 0;
    }
    let count = 0;
    const names: string[] = [];
    for await (const info of this.list(bucket, { prefix: target.prefix })) names.push(info.name);
    for (const name of names) {
      if (await this.deleteOne(bucket, name)) count++;
    }
    return count;
  }

  private async deleteOne(bucket: string, name: string): Promise<boolean> {
    const { dir, base } = this.objectPaths(bucket, name);
    return this.commitLock.run(`${bucket}/${name}`, async () => {
      const sidecar = await this.readSidecar(dir, base);
      if (!sidecar) return false;
      await unlink(join(dir, `${base}${metaSuffix}`)).catch((error: unknown) => {
        if (!isNotFound(error)) throw error;
      });
      await rm(join(dir, `${base}${dataMarker}${sidecar.data}`), { force: true });
      await this.pruneEmptyDirs(join(this.root, bucket), dir);
      return true;
    });
  }

  /** Removes now-empty directories between `dir` and the bucket directory (exclusive). */
  private async pruneEmptyDirs(bucketDir: string, dir: string): Promise<void> {
    let current = dir;
    while (current.length > bucketDir.length && current.startsWith(bucketDir)) {
      try {
        await rmdir(current);
      } catch {
        return; // not empty (or gone): stop
      }
      current = join(current, '..');
    }
  }

  async presignedUrl(
    method: PresignMethod,
    bucket: string,
    name: string,
    options: PresignOptions = {},
  ): Promise<string> {
    assertBucket(bucket);
    assertName(name);
    if (method !== 'GET' && method !== 'PUT')
      throw new InvalidArgumentError('method', `'${String(method)}' must be GET or PUT`);
    return this.presign.sign(method, bucket, name, options);
  }

  async diskUsage(bucket: string, prefix?: string): Promise<number> {
    let total = 0;
    for await (const info of this.list(bucket, prefix === undefined ? {} : { prefix })) total += info.size;
    return total;
  }

  async close(): Promise<void> {
    await this.presign.close();
  }

  /** The address presigned URLs point at, once the server runs. */
  get presignAddress(): string | undefined {
    return this.presign.baseUrl;
  }
}

function lowerCaseKeys(metadata: Readonly<Record<string, string>>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [key, value] of Object.entries(metadata)) out[key.toLowerCase()] = value;
  return out;
}

function toInfo(bucket: string, sidecar: Sidecar): ObjectInfo {
  return {
    bucket,
    name: sidecar.name,
    size: sidecar.size,
    lastModified: new Date(sidecar.lastModified),
    ...(sidecar.digest !== undefined ? { digest: sidecar.digest } : {}),
    ...(sidecar.contentType !== undefined ? { contentType: sidecar.contentType } : {}),
    metadata: { ...sidecar.metadata },
  };
}

/** Exposed for tests of the layout. */
export const fsStorageInternals = { encodeSegment, decodeSegment } as const;
