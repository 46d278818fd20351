/**
 * Small files of an extraction, created in batches by other threads: their bytes are copied into shared memory and
 * a worker creates them with the calls tar makes (`PlaceFiles`, the backup workers' `place` jobs), several batches
 * at once. Creating files is kernel work; on the event loop, even through the thread pool, a tar restore created
 * one file after another at 0.8x GNU tar's speed while the chunked restore, whose files the workers create, ran
 * at 2x.
 *
 * Entries still apply in archive order: a batch's files are admitted and their parents checked when they are
 * added (as for any entry), and before any later entry touches a path that a batch has not created yet (the same
 * path, a path below it, or a hard link to it), {@link FileBatches.settle} sends the batch and waits for it.
 *
 * @module
 */
import { copyBytes } from '@workbay/api';
import type { PlaceAnswer, PlaceBlob } from '../backup/worker-writes.js';
import { placeFailure } from '../backup/worker-writes.js';
import type { SafeTreeWriter } from './safe-writer.js';
import type { TreeEntry } from './tree.js';

/** Creates the files of a batch on another thread: `placeOnWorker` (backup/worker-writes.ts) without hashes. */
export type PlaceFiles = (buffer: Buffer, blobs: readonly PlaceBlob[]) => Promise<PlaceAnswer>;

export interface FileBatchesOptions {
  /** Bytes of one batch (default 8 MiB); a file larger than this is not batched. */
  readonly batchBytes?: number;
  /** Files in one batch (default 512). */
  readonly batchFiles?: number;
  /** Batches being created at once (default 4). */
  readonly inFlight?: number;
}

interface Batch {
  readonly buffer: Buffer;
  used: number;
  readonly blobs: PlaceBlob[];
  readonly entries: TreeEntry[];
  readonly paths: Set<string>;
}

export class FileBatches {
  private readonly batchBytes: number;
  private readonly batchFiles: number;
  private readonly inFlight: number;
  private current: Batch | undefined;
  /** Sent batches still running, with the paths they create. */
  private readonly running = new Map<Promise<void>, Set<string>>();
  private failure: { error: unknown } | undefined;
  private readonly spare: Buffer[] = [];

  constructor(
    private readonly writer: SafeTreeWriter,
    private readonly place: PlaceFiles,
    options: FileBatchesOptions = {},
  ) {
    this.batchBytes = options.batchBytes ?? 8 * 1024 * 1024;
    this.batchFiles = options.batchFiles ?? 512;
    this.inFlight = options.inFlight ?? 4;
  }

  /** Whether a file of `size` bytes goes into a batch. */
  fits(size: number): boolean {
    return size <= this.batchBytes;
  }

  /**
   * Before an entry at `path` (normalized), or a hard link to it, is applied: when a batch has yet to create
   * `path` or one of its ancestors, sends it and waits until it has.
   */
  async settle(path: string): Promise<void> {
    this.checkFailure();
    const touches = (paths: Set<string>): boolean => {
      if (paths.size === 0) return false;
      for (let end = path.length; end > 0; end = path.lastIndexOf('/', end - 1)) {
        if (paths.has(path.slice(0, end))) return true;
      }
      return false;
    };
    if (this.current && touches(this.current.paths)) this.send();
    for (const [running, paths] of this.running) {
      if (touches(paths)) await running.catch(() => undefined);
    }
    this.checkFailure();
  }

  /** Adds a file whose `size` bytes are `chunks` (`size` must {@link fits}); the policy may leave it out. */
  async add(entry: TreeEntry, path: string, chunks: readonly Buffer[], size: number): Promise<void> {
    await this.settle(path);
    const reserved = await this.writer.reserveFile(entry);
    if (!reserved) return;
    let batch = this.current;
    if (batch && (batch.used + size > this.batchBytes || batch.blobs.length >= this.batchFiles)) {
      this.send();
      batch = undefined;
    }
    if (!batch) {
      while (this.running.size >= this.inFlight) await Promise.race(this.running.keys()).catch(() => undefined);
      this.checkFailure();
      batch = this.current = {
        buffer: this.spare.pop() ?? Buffer.from(new SharedArrayBuffer(this.batchBytes)),
        used: 0,
        blobs: [],
        entries: [],
        paths: new Set(),
      };
    }
    const offset = batch.used;
    for (const chunk of chunks) batch.used += copyBytes(chunk, batch.buffer, batch.used);
    batch.blobs.push({ offset, length: size, targets: [{ create: true, ...reserved }] });
    batch.entries.push(entry);
    batch.paths.add(path);
  }

  /** Sends what is left and waits for every batch; throws the first failure. */
  async finish(): Promise<void> {
    if (this.current) this.send();
    await this.drain();
    this.checkFailure();
  }

  /** Waits for every sent batch (after a failure elsewhere: nothing may still write once the caller goes on). */
  async drain(): Promise<void> {
    this.current = undefined;
    while (this.running.size > 0) await Promise.allSettled([...this.running.keys()]);
  }

  private checkFailure(): void {
    if (this.failure) throw this.failure.error;
  }

  private send(): void {
    const batch = this.current as Batch;
    this.current = undefined;
    const running: Promise<void> = this.run(batch).then(
      () => {
        this.running.delete(running);
        this.spare.push(batch.buffer);
      },
      (error: unknown) => {
        this.running.delete(running);
        this.failure ??= { error };
      },
    );
    this.running.set(running, batch.paths);
  }

  private async run(batch: Batch): Promise<void> {
    const answer = await this.place(batch.buffer, batch.blobs);
    for (const failure of answer.failures) {
      const blob = batch.blobs[failure.blob] as PlaceBlob;
      // Something in the way of a new file (the target was not empty): the writer replaces it, or refuses a
      // directory, as archive order says. Any other failure ends the extraction.
      if (failure.code === 'EEXIST') {
        const data = Buffer.from(batch.buffer.subarray(blob.offset, blob.offset + blob.length));
        await this.writer.queueSmallFile(batch.entries[failure.blob] as TreeEntry, data);
        continue;
      }
      throw placeFailure(blob.targets[failure.target] as PlaceBlob['targets'][number], failure);
    }
  }
}
