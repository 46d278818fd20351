/**
 * The built-in filesystem storage backend (`kind: 'fs'`): buckets are directories under a root, objects are
 * files. It keeps the full `RemoteStorage` contract, so the daemon's embedded default behaves like the remote
 * backends, and it is what the conformance suite in `@workbay/testing` runs against first.
 *
 * The on-disk layout of objects is described in `fs-layout.ts`; uploads are written and committed in `fs-upload.ts`.
 */
import type { FileHandle } from 'node:fs/promises';
import { mkdir, open, readFile, readdir, rm, rmdir, stat, statfs, unlink } from 'node:fs/promises';
import { dirname, join } from 'node:path';
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
import { DirectWrites } from './direct-writes.js';
import {
  assertBucket,
  assertName,
  compareNames,
  dataMarker,
  decodeSegment,
  encodeSegment,
  metaSuffix,
  objectPaths,
} from './fs-layout.js';
import type { Sidecar } from './fs-objects.js';
import { isNotFound, readSidecar, toInfo } from './fs-objects.js';
import { LeftoverSweeper } from './fs-sweep.js';
import { uploadObject } from './fs-upload.js';
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

/** A filesystem-backed {@link RemoteStorage}. */
export class FsRemoteStorage implements RemoteStorage {
  readonly kind = 'fs';
  readonly root: string;
  readonly layout: BucketLayout;
  private readonly logger: PluginLogger;
  private readonly commitLock = new KeyedMutex();
  private readonly presign: PresignServer;
  private readonly directorySync = new DirectorySyncs();
  private readonly sweeper = new LeftoverSweeper();
  private readonly directWrites: DirectWrites;

  constructor(options: FsStorageOptions) {
    this.root = options.root;
    this.layout = options.layout ?? { mode: 'per-owner' };
    this.logger = options.logger ?? silentLogger;
    this.presign = new PresignServer(this, options.presign ?? {}, this.logger);
    this.directWrites = new DirectWrites((error) =>
      this.logger.info(
        { root: this.root, err: (error as Error).message },
        'the storage filesystem refuses O_DIRECT: large objects are written through the page cache',
      ),
    );
  }

  async ensureBucket(bucket: string): Promise<void> {
    assertBucket(bucket);
    // Only the daemon reads storage: every owner's snapshots and backups are here (0700 dirs, 0600 files).
    await mkdir(join(this.root, bucket), { recursive: true, mode: 0o700 });
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

  async upload(bucket: string, name: string, body: Readable, options: UploadOptions = {}): Promise<ObjectInfo> {
    const { dir, base } = objectPaths(this.root, bucket, name);
    if (!(await this.bucketExists(bucket))) {
      body.destroy();
      throw new NotFoundError(`bucket '${bucket}' does not exist`);
    }
    const context = {
      commitLock: this.commitLock,
      directorySync: this.directorySync,
      sweeper: this.sweeper,
      directWrites: this.directWrites,
    };
    return uploadObject(context, { bucket, name, dir, base }, body, options);
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
    const { dir, base } = objectPaths(this.root, bucket, name);
    // A concurrent upload can replace the sidecar and delete the data file we were about to open; re-read.
    for (let attempt = 0; ; attempt++) {
      signal?.throwIfAborted();
      const sidecar = await readSidecar(dir, base);
      if (!sidecar) throw new NotFoundError(`object '${name}' not found in bucket '${bucket}'`);
      try {
        return await open(join(dir, `${base}${dataMarker}${sidecar.data}`), 'r');
      } catch (error) {
        if (!isNotFound(error) || attempt >= 5) throw error;
      }
    }
  }

  async stat(bucket: string, name: string): Promise<ObjectInfo | undefined> {
    const { dir, base } = objectPaths(this.root, bucket, name);
    const sidecar = await readSidecar(dir, base);
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
    const { dir, base } = objectPaths(this.root, bucket, name);
    return this.commitLock.run(`${bucket}/${name}`, async () => {
      const sidecar = await readSidecar(dir, base);
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

  /**
   * What the filesystem under the root still gives an unprivileged writer (`f_bavail`): every bucket shares it.
   * A root not created yet answers for the nearest directory above it that exists.
   */
  async availableBytes(bucket: string): Promise<number | undefined> {
    assertBucket(bucket);
    for (let dir = this.root; ; dir = dirname(dir)) {
      try {
        const stats = await statfs(dir);
        return stats.bavail * stats.bsize;
      } catch (error) {
        if (!isNotFound(error) || dirname(dir) === dir) throw error;
      }
    }
  }

  async close(): Promise<void> {
    await this.presign.close();
  }

  /** The address presigned URLs point at, once the server runs. */
  get presignAddress(): string | undefined {
    return this.presign.baseUrl;
  }
}

/** Exposed for tests of the layout. */
export const fsStorageInternals = { encodeSegment, decodeSegment } as const;
