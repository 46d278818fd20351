import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, open, readdir, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type {
  BucketLayout,
  DeleteTarget,
  DownloadOptions,
  ListOptions,
  ObjectInfo,
  RemoteStorage,
  UploadOptions,
} from '@workbay/api';
import { FailedPreconditionError, InvalidArgumentError, NotFoundError, lowerCaseMetadata } from '@workbay/api';
import type { ExampleStorageConfig } from './config.js';

/**
 * Every object is one file: a fixed 64 KiB header slot (length-prefixed JSON: size, digest, content type,
 * metadata) followed by the bytes. One file per object makes an upload atomic with a single rename, and the fixed
 * slot lets the header (which needs the digest) be written after the body streamed through.
 */
const headerSlot = 64 * 1024;
/** Object names are stored hex-encoded (byte order = name order, no path tricks); 255-byte file names cap them. */
const maxNameBytes = 120;
const bucketPattern = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/;

interface Header {
  readonly size: number;
  readonly digest: string;
  readonly contentType?: string;
  readonly metadata: Record<string, string>;
}

/**
 * A complete {@link RemoteStorage} on a local directory: the example of the plugin authoring guide
 * (docs/plugin-authoring.md). It declares no presigned URLs (an optional capability), so it has no
 * `presignedUrl` method.
 */
export class ExampleStorage implements RemoteStorage {
  readonly kind = 'example';
  readonly layout?: BucketLayout;
  private readonly root: string;

  constructor(config: ExampleStorageConfig) {
    this.root = config.root;
    this.layout = config.layout;
  }

  async ensureBucket(bucket: string): Promise<void> {
    // mkdir with recursive is race-free: several callers creating the same bucket all succeed.
    await mkdir(join(this.bucketDir(bucket), '.partial'), { recursive: true });
  }

  async bucketExists(bucket: string): Promise<boolean> {
    return (await stat(this.bucketDir(bucket)).catch(() => undefined))?.isDirectory() ?? false;
  }

  async upload(bucket: string, name: string, body: Readable, options: UploadOptions = {}): Promise<ObjectInfo> {
    const target = this.objectPath(bucket, name);
    if (!(await this.bucketExists(bucket))) throw new NotFoundError(`bucket '${bucket}' does not exist`);
    const partial = join(this.bucketDir(bucket), '.partial', randomBytes(8).toString('hex'));
    try {
      const hash = createHash('sha256');
      let size = 0;
      const count = new Transform({
        transform(chunk: Buffer, _encoding, done) {
          hash.update(chunk);
          size += chunk.length;
          done(null, chunk);
        },
      });
      await pipeline(body, count, createWriteStream(partial, { start: headerSlot }), { signal: options.signal });
      const digest = `sha256:${hash.digest('hex')}`;
      if (options.digest && options.digest.startsWith('sha256:') && options.digest !== digest) {
        throw new FailedPreconditionError(`upload of '${name}': content digest ${digest} is not ${options.digest}`);
      }
      const header: Header = {
        size,
        digest: options.digest ?? digest,
        ...(options.contentType ? { contentType: options.contentType } : {}),
        metadata: lowerCaseMetadata(options.metadata),
      };
      await writeHeader(partial, header);
      await rename(partial, target);
      await syncDir(this.bucketDir(bucket));
      return this.info(bucket, name, header, new Date());
    } catch (error) {
      // The partial file is ours alone; removing it is what keeps a failed upload invisible.
      await rm(partial, { force: true });
      throw error;
    }
  }

  async download(bucket: string, name: string, options: DownloadOptions = {}): Promise<Readable> {
    const path = this.objectPath(bucket, name);
    if (!(await this.readHeader(path))) throw new NotFoundError(`object '${name}' not found in bucket '${bucket}'`);
    return createReadStream(path, { start: headerSlot, signal: options.signal });
  }

  async stat(bucket: string, name: string): Promise<ObjectInfo | undefined> {
    const path = this.objectPath(bucket, name);
    const header = await this.readHeader(path);
    if (!header) return undefined;
    return this.info(bucket, name, header, (await stat(path)).mtime);
  }

  async *list(bucket: string, options: ListOptions = {}): AsyncIterable<ObjectInfo> {
    for (const name of await this.names(bucket, options.prefix)) {
      options.signal?.throwIfAborted();
      const info = await this.stat(bucket, name);
      if (info) yield info; // deleted between readdir and stat: not listed, as a backend listing later would
    }
  }

  async delete(bucket: string, target: DeleteTarget): Promise<number> {
    const names = 'name' in target ? [target.name] : await this.names(bucket, target.prefix);
    let deleted = 0;
    for (const name of names) {
      const path = this.objectPath(bucket, name);
      if (await this.readHeader(path)) {
        await rm(path, { force: true });
        deleted += 1;
      }
    }
    return deleted;
  }

  async diskUsage(bucket: string, prefix?: string): Promise<number> {
    let total = 0;
    for await (const info of this.list(bucket, { prefix })) total += info.size;
    return total;
  }

  private bucketDir(bucket: string): string {
    if (!bucketPattern.test(bucket)) {
      throw new InvalidArgumentError('bucket', `'${bucket.slice(0, 64)}' is not a valid bucket name`);
    }
    return join(this.root, bucket);
  }

  private objectPath(bucket: string, name: string): string {
    const bytes = Buffer.from(name, 'utf8');
    if (bytes.length === 0 || bytes.length > maxNameBytes) {
      throw new InvalidArgumentError('name', `object names are 1 to ${maxNameBytes} bytes`);
    }
    return join(this.bucketDir(bucket), `${bytes.toString('hex')}.obj`);
  }

  /** Object names in name order (hex keeps byte order), those under `prefix` only. */
  private async names(bucket: string, prefix = ''): Promise<string[]> {
    const entries = await readdir(this.bucketDir(bucket)).catch((error: NodeJS.ErrnoException) => {
      if (error.code === 'ENOENT') return [] as string[]; // a missing bucket lists nothing (the SPI contract)
      throw error;
    });
    return entries
      .filter((entry) => entry.endsWith('.obj'))
      .sort()
      .map((entry) => Buffer.from(entry.slice(0, -4), 'hex').toString('utf8'))
      .filter((name) => name.startsWith(prefix));
  }

  private async readHeader(path: string): Promise<Header | undefined> {
    const file = await open(path, 'r').catch((error: NodeJS.ErrnoException) => {
      if (error.code === 'ENOENT') return undefined; // missing object: callers answer NotFound or undefined
      throw error;
    });
    if (!file) return undefined;
    try {
      const length = Buffer.alloc(4);
      await file.read(length, 0, 4, 0);
      const json = Buffer.alloc(length.readUInt32BE(0));
      await file.read(json, 0, json.length, 4);
      return JSON.parse(json.toString('utf8')) as Header;
    } finally {
      await file.close();
    }
  }

  private info(bucket: string, name: string, header: Header, lastModified: Date): ObjectInfo {
    return {
      bucket,
      name,
      size: header.size,
      lastModified,
      digest: header.digest,
      ...(header.contentType ? { contentType: header.contentType } : {}),
      metadata: header.metadata,
    };
  }
}

async function writeHeader(path: string, header: Header): Promise<void> {
  const json = Buffer.from(JSON.stringify(header), 'utf8');
  if (json.length + 4 > headerSlot)
    throw new InvalidArgumentError('metadata', 'content type and metadata exceed 64 KiB');
  const slot = Buffer.alloc(4 + json.length);
  slot.writeUInt32BE(json.length, 0);
  json.copy(slot, 4);
  const file = await open(path, 'r+');
  try {
    await file.write(slot, 0, slot.length, 0);
    await file.sync();
  } finally {
    await file.close();
  }
}

async function syncDir(dir: string): Promise<void> {
  const handle = await open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}
