/**
 * Large uploads into the filesystem backend are written with `O_DIRECT`, past the page cache.
 *
 * A backup's packs are written once and read rarely (on a restore, usually elsewhere and much later). Through the
 * page cache each byte is first copied into a newly allocated cache page, then written back by the kernel's
 * flusher threads, and the cache fills with it, pushing the workspaces' own files out. On the project's VMs, whose
 * free memory is handed back to the host, that copy cost 0.3 to 2.6 CPU-s per GiB from one run to the next (1 GiB
 * in 8 MiB files, 4 at a time, fsync each: 0.6–1.8 s wall), against 0.07 CPU-s and 0.5 s wall with `O_DIRECT`.
 *
 * `O_DIRECT` wants the memory, the length and the file offset of every write aligned to the device's block. The
 * bytes are therefore copied into aligned staging buffers (a `memcpy`, a tenth of the page-cache path's cost), two
 * per upload: one fills while the other is written. The last block is padded with zeros and the file then cut to
 * its length. A filesystem that refuses `O_DIRECT` is found once, by the first large upload, and from then on
 * written through the page cache as before.
 */
import { constants } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { open } from 'node:fs/promises';
import { copyBytes } from '@workbay/api';

/** Alignment of every direct write: a page, which covers the 512- and 4096-byte blocks of the devices we meet. */
const blockAlignment = 4096;

/** Bytes per staging buffer: 2 MiB writes keep a virtio disk busy without holding much memory per upload. */
const stagingBytes = 2 * 1024 * 1024;

/** Objects smaller than this go through the page cache: a few blocks gain nothing, and they are read soon. */
export const directWriteMinBytes = 1024 * 1024;

/** Staging buffers a storage keeps at most (16 MiB, one memory): four uploads written directly at once. */
const maxStagingBuffers = 8;

/**
 * A buffer whose memory starts on a page boundary. Node's own buffers come from `malloc`, which promises 16
 * bytes; a WebAssembly memory is a mapping of its own, so its first byte is page-aligned. V8 reserves about
 * 10 GiB of address space around each such memory (not memory, but it shows in VSZ), so a storage makes one.
 */
function alignedBuffer(bytes: number): Buffer {
  const pages = Math.ceil(bytes / 65536);
  return Buffer.from(new WebAssembly.Memory({ initial: pages, maximum: pages }).buffer, 0, bytes);
}

/** Node's WebAssembly global, as far as {@link alignedBuffer} uses it (the compiler's libraries here lack its types). */
declare const WebAssembly: { Memory: new (size: { initial: number; maximum: number }) => { buffer: ArrayBuffer } };

/** The errors by which a filesystem says it does not do `O_DIRECT` (at the open, or at the first write). */
function refusesDirect(error: unknown): boolean {
  const code = (error as NodeJS.ErrnoException).code;
  return code === 'EINVAL' || code === 'EOPNOTSUPP';
}

/** One storage root's direct writes: whether its filesystem takes them, and the staging buffers they share. */
export class DirectWrites {
  /** `onRefused` hears once that the filesystem refused `O_DIRECT` (operators want to know why the cache fills). */
  constructor(private readonly onRefused: (error: unknown) => void = () => undefined) {}

  /**
   * Unknown until the first large upload tries; `false` once the filesystem refused, and from the start where
   * the flag or aligned memory is missing (not Linux; `node --jitless` has no WebAssembly).
   */
  private supported: boolean | undefined =
    constants.O_DIRECT === undefined || typeof WebAssembly === 'undefined' ? false : undefined;
  private readonly spare: Buffer[] = [];
  private created = 0;
  /** The staging buffers' memory, made at the first large upload: the buffers are slices of it. */
  private arena: Buffer | undefined;

  /**
   * Opens `path` (a new, empty data file) for direct writes, or returns `undefined` when they are not to be
   * used: the filesystem refuses them, or every staging buffer is taken (the upload then goes through the page
   * cache rather than waiting).
   */
  async open(path: string): Promise<DirectFileWriter | undefined> {
    if (this.supported === false) return undefined;
    let staging: Buffer[] | undefined;
    try {
      staging = this.take(2);
    } catch (error) {
      // No aligned memory to be had (an address-space limit such as `ulimit -v` refuses the mapping): the
      // uploads of this root go through the page cache, as on a filesystem without O_DIRECT.
      this.supported = false;
      this.onRefused(error);
      return undefined;
    }
    if (!staging) return undefined;
    let handle: FileHandle | undefined;
    try {
      handle = await open(path, constants.O_WRONLY | constants.O_DIRECT);
      if (this.supported === undefined) {
        // Some filesystems accept the flag at the open and refuse the writes: one block settles it.
        staging[0].fill(0, 0, blockAlignment);
        await handle.write(staging[0], 0, blockAlignment, 0);
        await handle.truncate(0);
        this.supported = true;
      }
      return new DirectFileWriter(handle, staging, (buffers) => this.spare.push(...buffers));
    } catch (error) {
      this.spare.push(...staging);
      await handle?.close();
      if (!refusesDirect(error)) throw error;
      // Expected on filesystems without O_DIRECT: every upload into this root now uses the page cache.
      this.supported = false;
      this.onRefused(error);
      return undefined;
    }
  }

  private take(count: number): Buffer[] | undefined {
    if (this.spare.length + (maxStagingBuffers - this.created) < count) return undefined;
    const taken: Buffer[] = [];
    try {
      while (taken.length < count) {
        const reused = this.spare.pop();
        if (reused) taken.push(reused);
        else {
          this.arena ??= alignedBuffer(maxStagingBuffers * stagingBytes);
          taken.push(this.arena.subarray(this.created * stagingBytes, (this.created + 1) * stagingBytes));
          this.created++;
        }
      }
    } catch (error) {
      this.spare.push(...taken);
      throw error;
    }
    return taken;
  }
}

/** Writes one file front to back through two aligned staging buffers (see the module comment). */
export class DirectFileWriter {
  /** File offset of the next staged write (always aligned). */
  private position = 0;
  /** Bytes staged in `filling`. */
  private staged = 0;
  private filling: Buffer;
  private writing: Buffer;
  /** The write of `writing`, awaited before that buffer is filled again. */
  private pending: Promise<void> | undefined;
  private closed = false;

  constructor(
    private readonly handle: FileHandle,
    staging: Buffer[],
    private readonly giveBack: (buffers: Buffer[]) => void,
  ) {
    [this.filling, this.writing] = staging as [Buffer, Buffer];
  }

  /** Stages `data`, writing each staging buffer as it fills. */
  async write(data: Uint8Array): Promise<void> {
    for (let offset = 0; offset < data.length;) {
      const count = Math.min(data.length - offset, this.filling.length - this.staged);
      this.staged += copyBytes(data.subarray(offset, offset + count), this.filling, this.staged);
      offset += count;
      if (this.staged === this.filling.length) await this.flush(this.staged);
    }
  }

  /** Writes what is staged (its last block padded with zeros) and cuts the file to the bytes written. */
  async finish(): Promise<number> {
    const size = this.position + this.staged;
    if (this.staged > 0) {
      const padded = Math.ceil(this.staged / blockAlignment) * blockAlignment;
      this.filling.fill(0, this.staged, padded);
      await this.flush(padded);
    }
    await this.pending;
    if (this.position !== size) await this.handle.truncate(size);
    return size;
  }

  /** Closes the direct descriptor once its write has settled, and returns the staging buffers. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    // Settled here whatever its outcome: a failed write has already failed `write` or `finish`.
    await this.pending?.catch(() => undefined);
    await this.handle.close();
    this.giveBack([this.filling, this.writing]);
  }

  private async flush(length: number): Promise<void> {
    await this.pending;
    const buffer = this.filling;
    this.filling = this.writing;
    this.writing = buffer;
    this.staged = 0;
    const at = this.position;
    this.position += length;
    this.pending = writeFully(this.handle, buffer, length, at);
    // Awaited by the next flush, by `finish` or by `close`; this only keeps it from counting as unhandled.
    this.pending.catch(() => undefined);
  }
}

async function writeFully(handle: FileHandle, buffer: Buffer, length: number, at: number): Promise<void> {
  for (let written = 0; written < length;) {
    written += (await handle.write(buffer, written, length - written, at + written)).bytesWritten;
  }
}
