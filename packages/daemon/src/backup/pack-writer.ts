/**
 * Packs of a chunked backup: new blobs are collected into packs (~8 MiB), and full packs are uploaded with
 * bounded concurrency while the backup goes on.
 *
 * A pack is a list of views, not one copied buffer: blobs the workers read stay in the workers' shared buffers,
 * held until the pack is uploaded, and consecutive blobs of one buffer form one view, so the event loop copies
 * nothing and a pack is written with a few large writes. A pack holds at most {@link maxHeldBuffers} worker
 * buffers: blobs from further buffers (a few new blobs among many known ones) are copied into the pack's own
 * arena, so memory stays bounded however the new blobs are scattered.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import { promisify } from 'node:util';
import { gzip } from 'node:zlib';
import { copyBytes } from '@workbay/api';
import type { Compression } from '../archive/compression.js';
import { Semaphore } from '../util/concurrency.js';
import type { BackupTarget } from './chunked.js';

const packContentType = 'application/vnd.workbay.backup-pack';
/** Worker buffers one pack may hold (each is 12 MiB or more). */
export const maxHeldBuffers = 3;

/** Where a backup's packs live, below its prefix. */
export const chunksDirectory = 'chunks/';

export function packName(target: BackupTarget, id: string): string {
  return `${target.prefix}${chunksDirectory}${id}`;
}

export interface PackRef {
  id?: string;
  size?: number;
  rawSize?: number;
}

export interface BlobRef {
  readonly hash: string;
  readonly pack: PackRef;
  readonly offset: number;
  readonly length: number;
}

type Backing = ArrayBufferLike;

export class PackWriter {
  private parts: Buffer[] = [];
  private releases: Array<() => void> = [];
  private held = new Set<Backing>();
  /** Where blobs that are not held are copied to (allocated when first needed, reused after uploads). */
  private arena: Buffer | undefined;
  private arenaUsed = 0;
  private readonly spareArenas: Buffer[] = [];
  private hashes: string[] = [];
  private size = 0;
  private current: PackRef = {};
  private readonly inFlight = new Set<Promise<void>>();
  private readonly slots: Semaphore;
  private failure: unknown;
  readonly written: PackRef[] = [];
  uploadedBytes = 0;

  constructor(
    private readonly target: BackupTarget,
    private readonly packSize: number,
    private readonly compression: Compression,
    concurrency: number,
    private readonly signal: AbortSignal | undefined,
  ) {
    this.slots = new Semaphore(concurrency);
  }

  private check(): void {
    if (this.failure !== undefined) throw this.failure;
  }

  /** Worker buffers the pack being filled holds (for tests of the bound). */
  get heldBuffers(): number {
    return this.held.size;
  }

  /**
   * Adds `data` to the current pack. With `hold`, `data` is a view of a buffer that is reused once released:
   * the writer holds it until the pack is uploaded, or copies the bytes. Without, the caller hands `data` over.
   */
  async add(hash: string, data: Buffer, hold?: () => () => void): Promise<BlobRef> {
    this.check();
    if (this.size > 0 && this.size + data.length > this.packSize) await this.seal();
    return this.place(hash, data, hold);
  }

  /**
   * {@link add} without waiting, when the current pack has room for `data`; undefined when the pack must be
   * sealed first (then call {@link add}). Spares a promise per blob on the backup's event loop.
   */
  tryAdd(hash: string, data: Buffer, hold?: () => () => void): BlobRef | undefined {
    this.check();
    if (this.size > 0 && this.size + data.length > this.packSize) return undefined;
    return this.place(hash, data, hold);
  }

  private place(hash: string, data: Buffer, hold?: () => () => void): BlobRef {
    const ref: BlobRef = { hash, pack: this.current, offset: this.size, length: data.length };
    let view = data;
    if (hold) {
      if (this.held.has(data.buffer) || this.held.size < maxHeldBuffers) {
        this.held.add(data.buffer);
        this.releases.push(hold());
      } else {
        view = this.copy(data);
      }
    }
    this.append(view);
    this.hashes.push(hash);
    this.size += data.length;
    return ref;
  }

  private copy(data: Buffer): Buffer {
    if (data.length > this.packSize) return Buffer.from(data);
    if (!this.arena || this.arenaUsed + data.length > this.arena.length) {
      // A pack's blobs add up to at most packSize (or it is one larger blob, copied above): one arena a pack.
      // Shared memory, like the workers' buffers: the storage can then hash it on a worker without a copy.
      this.arena = this.spareArenas.pop() ?? Buffer.from(new SharedArrayBuffer(this.packSize));
      this.arenaUsed = 0;
    }
    const view = this.arena.subarray(this.arenaUsed, this.arenaUsed + data.length);
    this.arenaUsed += copyBytes(data, this.arena, this.arenaUsed);
    return view;
  }

  private append(view: Buffer): void {
    const last = this.parts[this.parts.length - 1];
    if (last && last.buffer === view.buffer && last.byteOffset + last.length === view.byteOffset) {
      this.parts[this.parts.length - 1] = Buffer.from(last.buffer, last.byteOffset, last.length + view.length);
    } else {
      this.parts.push(view);
    }
  }

  private async seal(): Promise<void> {
    if (this.size === 0) return;
    const parts = this.parts;
    const releases = this.releases;
    const arena = this.arena;
    const pack = this.current;
    // Content-addressed by its blobs (each already hashed), so no second pass over the bytes is needed.
    pack.id = createHash('sha256').update(this.hashes.join('\n')).digest('hex');
    pack.rawSize = this.size;
    this.parts = [];
    this.releases = [];
    this.held = new Set();
    this.arena = undefined;
    this.arenaUsed = 0;
    this.hashes = [];
    this.size = 0;
    this.current = {};
    const release = await this.slots.acquire();
    this.check();
    const upload = (async () => {
      try {
        const body = this.compression === 'none' ? parts : [await compressPack(Buffer.concat(parts), this.compression)];
        const size = body.reduce((sum, part) => sum + part.length, 0);
        const info = await this.target.storage.upload(
          this.target.bucket,
          packName(this.target, pack.id as string),
          Readable.from(body),
          {
            contentType: packContentType,
            size,
            // Every blob is checked against its SHA-256 on restore: a whole-pack digest would be a second pass.
            verifiedByCaller: true,
            ...(this.signal ? { signal: this.signal } : {}),
          },
        );
        pack.size = info.size;
        this.uploadedBytes += info.size;
        this.written.push(pack);
        // The storage has consumed the body once the upload resolved (not so after a failure: the buffers are
        // then left to the garbage collector instead of being reused).
        for (const done of releases) done();
        if (arena) this.spareArenas.push(arena);
      } catch (error) {
        this.failure ??= error;
      } finally {
        release();
      }
    })();
    this.inFlight.add(upload);
    void upload.finally(() => this.inFlight.delete(upload));
  }

  async finish(): Promise<void> {
    await this.seal();
    await Promise.all([...this.inFlight]);
    this.check();
  }

  async abort(): Promise<void> {
    this.failure ??= new Error('aborted');
    await Promise.allSettled([...this.inFlight]);
  }

  /**
   * After {@link abort}: deletes the packs this writer stored that were not in storage before (`stored`, the
   * listing the backup started from), which no manifest will name. A failed attempt would otherwise leave up to a
   * whole workspace of them, on every retry (red team round 10: 726 MB on a full disk). Returns the failures to
   * delete, for the caller to report: the backup fails with its own error either way.
   */
  async discard(stored: ReadonlyMap<string, number>): Promise<unknown[]> {
    const failures: unknown[] = [];
    for (const pack of this.written) {
      if (pack.id === undefined || stored.has(pack.id)) continue;
      try {
        await this.target.storage.delete(this.target.bucket, { name: packName(this.target, pack.id) });
      } catch (error) {
        failures.push(error);
      }
    }
    return failures;
  }
}

/** Compresses a whole pack; zstd runs as a process (binary stdout, so not through runProcess). */
async function compressPack(content: Buffer, compression: Compression): Promise<Buffer> {
  if (compression === 'none') return content;
  if (compression === 'gzip') return promisify(gzip)(content, { level: 1 });
  return new Promise<Buffer>((resolve, reject) => {
    const child = spawn('zstd', ['-q', '-c', '-1'], { stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => out.push(chunk));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.on('error', reject);
    child.on('close', (code) =>
      code === 0 ? resolve(Buffer.concat(out)) : reject(new Error(`zstd failed: ${stderr.trim()}`)),
    );
    child.stdin.on('error', () => undefined);
    child.stdin.end(content);
  });
}
