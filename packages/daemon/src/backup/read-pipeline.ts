/**
 * Reading, chunking and hashing of a backup's files on the worker pool, delivered in walk order to the main
 * thread (which deduplicates, packs and uploads meanwhile). Small files go in batches (one message per batch);
 * a large file is read in pieces by one worker through the main thread's descriptor, the next piece being
 * read while the previous one is consumed. A bounded window of tasks is in flight, so memory stays bounded.
 */
import type { Stats } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { openedAt, openFileBeneath } from '../util/pinned-path.js';
import { extentBytes, isSparseCandidate, SparseProbeError, truncateExtents } from '../archive/sparse.js';
import { SparseProber } from '../archive/sparse-prober.js';
import type { WalkedEntry } from '../archive/tree.js';
import type { ChunkerOptions } from './chunker.js';
import type { ChunkWorkerPool } from './worker-pool.js';
import type { FileToRead } from './file-queue.js';
import { FileQueue } from './file-queue.js';

/** Files up to this size are read whole by a worker (the rest in pieces). */
export const wholeFileLimit = 256 * 1024;
const batchFiles = 256;
const batchBytes = 4 * 1024 * 1024;

export interface ReadChunk {
  readonly hash: string;
  /**
   * A view of the worker's shared buffer, valid until the consumer asks for the next piece (the buffer then
   * goes back to the worker), unless the consumer holds it (see {@link FilePiece.hold}).
   */
  readonly data: Buffer;
}

/** One piece of a file's content, in order; `done` on its last piece. */
export interface FilePiece {
  /** The caller's index of the file. */
  readonly index: number;
  readonly item: WalkedEntry;
  readonly chunks: readonly ReadChunk[];
  readonly bytes: number;
  readonly done: boolean;
  /** The file vanished (or became a symlink) before it could be opened. */
  readonly vanished?: boolean;
  /**
   * On the last piece of a sparse file (see archive/sparse.ts): the data extents its pieces were read from (the
   * chunks hold only their bytes, back to back), and the file's size, holes included.
   */
  readonly sparse?: { readonly extents: readonly number[]; readonly size: number };
  /**
   * Keeps the buffer behind this piece's chunks from going back to the worker until the returned release is
   * called (once), so the consumer can keep views instead of copying them.
   */
  readonly hold: () => () => void;
}

/** Counts the holders of one worker buffer; the last release sends it back to its worker. */
class Lease {
  private holders = 1;

  constructor(private readonly giveBack: () => void) {}

  readonly hold = (): (() => void) => {
    this.holders++;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.release();
    };
  };

  release(): void {
    if (--this.holders === 0) this.giveBack();
  }
}

const noHold = (): (() => void) => () => undefined;

interface FilesAnswer {
  data: Uint8Array;
  /** `grown`: opened larger than the whole-file limit, so not read (it is read piece by piece instead). */
  files: Array<{ vanished?: boolean; grown?: boolean; lengths?: number[]; hashes?: string[] }>;
}

interface SegmentAnswer {
  data: Uint8Array;
  lengths: number[];
  hashes: string[];
  bytesRead: number;
  eof: boolean;
}

export type { FileToRead } from './file-queue.js';
export { FileQueue } from './file-queue.js';

type Task =
  | { readonly kind: 'files'; readonly files: readonly FileToRead[] }
  | { readonly kind: 'large'; readonly index: number; readonly item: WalkedEntry };

function toChunks(data: Uint8Array, lengths: readonly number[], hashes: readonly string[], from = 0): ReadChunk[] {
  const buffer = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  const chunks: ReadChunk[] = [];
  let offset = from;
  for (const [i, length] of lengths.entries()) {
    chunks.push({ hash: hashes[i] as string, data: buffer.subarray(offset, offset + length) });
    offset += length;
  }
  return chunks;
}

/** Device and inode number of each file as the walk listed them, for the worker's check of what it opened. */
function inodesOf(files: readonly FileToRead[]): BigUint64Array {
  const inodes = new BigUint64Array(2 * files.length);
  for (const [i, file] of files.entries()) {
    inodes[2 * i] = file.item.stats.dev;
    inodes[2 * i + 1] = file.item.stats.ino;
  }
  return inodes;
}

let nextKey = 0;

/** A large file read piece by piece on one worker, one piece ahead of the consumer. */
class LargeFile {
  private readonly key = `f${process.pid}-${nextKey++}`;
  readonly worker: number;
  private ahead: Promise<SegmentAnswer> | undefined;
  private finished = false;

  /** Data bytes read so far (a sparse file's extents are cut to them when it shrank while read). */
  private read = 0;

  private constructor(
    private readonly pool: ChunkWorkerPool,
    private readonly handle: FileHandle,
    private readonly chunker: ChunkerOptions,
    private readonly sparse: { readonly extents: number[]; readonly size: number } | undefined,
    /** Its size when opened: nothing past it is read. */
    end: number,
  ) {
    this.worker = pool.leastBusy();
    this.ahead = this.request(sparse?.extents, end);
  }

  static async open(
    pool: ChunkWorkerPool,
    item: WalkedEntry,
    chunker: ChunkerOptions,
    budget: ExtentBudget,
    prober: SparseProber,
  ): Promise<LargeFile | undefined> {
    const path = item.absolute;
    const relative = item.entry.path;
    // Beneath the walk's root, never through a directory swapped for a link, and a regular file only (a FIFO
    // swapped in held a thread-pool thread forever: red team round 10).
    const handle = await openFileBeneath(path.slice(0, path.length - relative.length - 1), relative);
    if (!handle) return undefined;
    // A symlinked component crossed on the way (a workspace swapping a directory): not this file; as vanished.
    if (!openedAt(handle.fd, path)) {
      await handle.close();
      return undefined;
    }
    let sparse: { extents: number[]; size: number } | undefined;
    // Read no further than its size now: a file a workspace keeps growing must not be read forever.
    let size: number;
    try {
      const stats = await handle.stat();
      size = stats.size;
      sparse = await probeSparse(handle, stats, path, budget, prober);
    } catch (error) {
      await handle.close();
      throw error;
    }
    return new LargeFile(pool, handle, chunker, sparse, size);
  }

  private request(extents?: number[], end?: number): Promise<SegmentAnswer> {
    const answer = this.pool.run<SegmentAnswer>(
      {
        kind: 'segment',
        key: this.key,
        fd: this.handle.fd,
        chunker: this.chunker,
        ...(extents ? { extents } : {}),
        ...(end !== undefined ? { end } : {}),
      },
      this.worker,
    );
    answer.catch(() => undefined); // awaited by next() or close()
    return answer;
  }

  async next(): Promise<SegmentAnswer> {
    const answer = await (this.ahead as Promise<SegmentAnswer>);
    this.read += answer.bytesRead;
    this.finished = answer.eof;
    this.ahead = answer.eof ? undefined : this.request();
    return answer;
  }

  /** A sparse file's extents and size once read (undefined for the others). */
  sparseResult(): { readonly extents: readonly number[]; readonly size: number } | undefined {
    const sparse = this.sparse;
    if (!sparse) return undefined;
    if (this.read >= extentBytes(sparse.extents)) return sparse;
    // It shrank while read: what was read, and a size ending with it (as a dense file's size is what was read).
    const extents = truncateExtents(sparse.extents, this.read);
    const end = extents.length === 0 ? 0 : (extents.at(-2) as number) + (extents.at(-1) as number);
    return { extents, size: Math.min(sparse.size, end) };
  }

  /** Waits for the worker to stop using the descriptor before closing it (a reused number must not be read). */
  async close(): Promise<void> {
    // Deliberate: close only waits for the worker; a failed read-ahead was, or is no longer, the reader's to report.
    await this.ahead?.catch(() => undefined);
    if (!this.finished) this.pool.notify(this.worker, { kind: 'drop', key: this.key });
    await this.handle.close();
  }
}

/**
 * Extent numbers (two per extent) a backup may still record: its manifest must stay within what a restore
 * decodes (manifest-decode.ts). A sparse file past the budget fails the backup (reading its holes instead is what
 * a hostile workspace wants: see archive/sparse.ts).
 */
export interface ExtentBudget {
  left: number;
}

/** The data extents of a sparse file about to be read, or undefined to read it whole (see archive/sparse.ts). */
async function probeSparse(
  handle: FileHandle,
  stats: Stats,
  path: string,
  budget: ExtentBudget,
  prober: SparseProber,
): Promise<{ extents: number[]; size: number } | undefined> {
  if (!isSparseCandidate(stats)) return undefined;
  const extents = await prober.probe(handle.fd, stats.size, path);
  if (!extents) return undefined;
  if (extents.length > budget.left) throw new SparseProbeError(path, 'more extents than one backup records');
  budget.left -= extents.length;
  return { extents, size: stats.size };
}

/** The piece of a file that vanished (or was replaced by a link) before it was read. */
function vanished(index: number, item: WalkedEntry): FilePiece {
  return { index, item, chunks: [], bytes: 0, done: true, vanished: true, hold: noHold };
}

interface Started {
  readonly task: Task;
  readonly files?: Promise<FilesAnswer>;
  readonly worker?: number;
  readonly large?: Promise<LargeFile | undefined>;
}

/**
 * Yields the content of `files` (index, entry) in order. `window` tasks are read ahead of the consumer; every
 * descriptor is closed when the iteration ends, also early.
 */
export async function* readFiles(
  pool: ChunkWorkerPool,
  files: FileQueue | Iterable<FileToRead>,
  chunker: ChunkerOptions,
  window = 2 * pool.size,
  extentBudget: ExtentBudget = { left: Infinity },
): AsyncGenerator<FilePiece> {
  // Tasks are formed as files arrive (the walk may still be running), so reading starts with the first batch.
  const queue = files instanceof FileQueue ? files : FileQueue.of(files);
  const ready: Task[] = [];
  let ended = false;
  let batch: FileToRead[] = [];
  let batchSize = 0;
  const flush = (): void => {
    if (batch.length) ready.push({ kind: 'files', files: batch });
    batch = [];
    batchSize = 0;
  };
  /**
   * The next task. Without `block`, only from files already queued (work is in flight, and the consumer must
   * not wait for the walk); with it, waits for files, sending a partial batch rather than waiting with it.
   */
  const nextTask = async (block: boolean): Promise<Task | undefined> => {
    while (ready.length === 0 && !ended) {
      const file = queue.take();
      if (file) {
        const size = Number(file.item.stats.size);
        if (size > wholeFileLimit) {
          flush();
          ready.push({ kind: 'large', index: file.index, item: file.item });
          continue;
        }
        batch.push(file);
        batchSize += size;
        if (batch.length >= batchFiles || batchSize >= batchBytes) flush();
        continue;
      }
      if (queue.finished) {
        ended = true;
        flush();
        break;
      }
      if (!block) break;
      if (batch.length) {
        flush();
        break;
      }
      await queue.wait();
    }
    return ready.shift();
  };

  // One Perl probes this read's sparse files (archive/sparse-prober.ts), one after the other: read ahead, they
  // wait for it in turn. It is closed when the read ends, however it ends.
  const prober = new SparseProber();
  const recycle = (worker: number, data: Uint8Array): void => {
    pool.notify(worker, { kind: 'recycle', buffer: data.buffer });
  };
  /** The pieces of a large file (its descriptor closed at the end, also an early one); undefined: it vanished. */
  async function* readLarge(large: LargeFile | undefined, file: FileToRead): AsyncGenerator<FilePiece> {
    if (!large) {
      yield vanished(file.index, file.item);
      return;
    }
    try {
      for (;;) {
        const answer = await large.next();
        const chunks = toChunks(answer.data, answer.lengths, answer.hashes);
        const lease = new Lease(() => recycle(large.worker, answer.data));
        const sparse = answer.eof ? large.sparseResult() : undefined;
        yield {
          index: file.index,
          item: file.item,
          chunks,
          bytes: answer.bytesRead,
          done: answer.eof,
          hold: lease.hold,
          ...(sparse ? { sparse } : {}),
        };
        lease.release();
        if (answer.eof) break;
      }
    } finally {
      await large.close();
    }
  }
  const started: Started[] = [];
  const start = (task: Task): Started => {
    if (task.kind === 'files') {
      const worker = pool.leastBusy();
      const answer = pool.run<FilesAnswer>(
        {
          kind: 'files',
          paths: task.files.map((f) => f.item.absolute),
          relatives: task.files.map((f) => f.item.entry.path),
          sizes: task.files.map((f) => Number(f.item.stats.size)),
          inodes: inodesOf(task.files),
          limit: wholeFileLimit,
          chunker,
        },
        worker,
      );
      answer.catch(() => undefined); // awaited in order below, or abandoned when an earlier task failed
      return { task, files: answer, worker };
    }
    const large = LargeFile.open(pool, task.item, chunker, extentBudget, prober);
    large.catch(() => undefined); // as above: awaited in order below, or abandoned when an earlier task failed
    return { task, large };
  };
  let current: Started | undefined;
  try {
    for (;;) {
      while (started.length < window) {
        const task = await nextTask(started.length === 0);
        if (!task) break;
        started.push(start(task));
      }
      current = started.shift();
      if (!current) break;
      const task = current.task;
      if (task.kind === 'files') {
        const answer = await (current.files as Promise<FilesAnswer>);
        const worker = current.worker as number;
        const lease = new Lease(() => recycle(worker, answer.data));
        let offset = 0;
        for (const [i, file] of task.files.entries()) {
          const result = answer.files[i] as FilesAnswer['files'][number];
          if (result.vanished) {
            yield vanished(file.index, file.item);
            continue;
          }
          if (result.grown) {
            // Larger once opened than a whole-file read takes (an editor's save, or a workspace growing it on
            // purpose): read piece by piece, as a large file.
            yield* readLarge(await LargeFile.open(pool, file.item, chunker, extentBudget, prober), file);
            continue;
          }
          const chunks = toChunks(answer.data, result.lengths ?? [], result.hashes ?? [], offset);
          const bytes = chunks.reduce((sum, c) => sum + c.data.length, 0);
          offset += bytes;
          yield { index: file.index, item: file.item, chunks, bytes, done: true, hold: lease.hold };
        }
        lease.release();
      } else {
        yield* readLarge(await (current.large as Promise<LargeFile | undefined>), task);
      }
      current = undefined;
    }
  } finally {
    // First: probes still waiting fail at once, rather than each take its turn (up to its time limit) for a read
    // that is over; their files are closed below.
    await prober.close();
    // Tasks read ahead of a failure: their descriptors are closed once their workers are done with them.
    for (const task of current ? [current, ...started] : started) {
      if (task.large) await task.large.then((file) => file?.close()).catch(() => undefined);
    }
  }
}
