/**
 * The files a backup's walk hands to the read pipeline (read-pipeline.ts), in walk order: filled while the reads
 * already run, drained by them, and bounded by the walk waiting for room.
 */
import type { WalkedEntry } from '../archive/tree.js';

export interface FileToRead {
  /** The caller's index of the file. */
  readonly index: number;
  readonly item: WalkedEntry;
}

/** A queue of files to read, filled while the consumer already reads (the walk runs beside the reads). */
export class FileQueue {
  private readonly items: Array<FileToRead | undefined> = [];
  private head = 0;
  private wake: (() => void) | undefined;
  /** The producer waiting for room: resolved once fewer than `below` files wait. */
  private roomWaiter: { readonly below: number; readonly resolve: () => void } | undefined;
  private ended = false;
  private failure: { error: unknown } | undefined;

  static of(files: Iterable<FileToRead>): FileQueue {
    const queue = new FileQueue();
    for (const file of files) queue.push(file);
    queue.end();
    return queue;
  }

  push(file: FileToRead): void {
    this.items.push(file);
    this.wake?.();
  }

  /** Files queued and not taken yet. */
  get pending(): number {
    return this.items.length - this.head;
  }

  /**
   * Resolves once fewer than `below` files wait. A producer that walks faster than the files are read waits here:
   * every queued file holds its entry and stats (~0.5 KB), and a tree of empty files walks far ahead of its reads.
   */
  room(below: number): Promise<void> {
    if (this.pending < below || this.ended) return Promise.resolve();
    return new Promise<void>((resolve) => (this.roomWaiter = { below, resolve }));
  }

  /** No more files; with an error, the reader fails with it at once (files still queued are dropped). */
  end(error?: unknown): void {
    this.ended = true;
    if (error !== undefined) this.failure = { error };
    this.wake?.();
    this.roomWaiter?.resolve();
    this.roomWaiter = undefined;
  }

  /** The next file if one is queued (without waiting); throws the error the queue ended with. */
  take(): FileToRead | undefined {
    if (this.failure) throw this.failure.error;
    if (this.head === this.items.length) return undefined;
    const file = this.items[this.head] as FileToRead;
    // Let go of taken entries at once (each holds its stats): kept until the next splice, they would outlive
    // young-generation collections and be promoted.
    this.items[this.head++] = undefined;
    if (this.head > 1024 && this.head * 2 > this.items.length) {
      this.items.splice(0, this.head);
      this.head = 0;
    }
    if (this.roomWaiter && this.pending < this.roomWaiter.below) {
      this.roomWaiter.resolve();
      this.roomWaiter = undefined;
    }
    return file;
  }

  /** True once ended and drained. */
  get finished(): boolean {
    return this.ended && this.head === this.items.length;
  }

  /** Resolves when a file arrives or the queue ends. */
  wait(): Promise<void> {
    if (this.ended || this.head < this.items.length) return Promise.resolve();
    return new Promise<void>((resolve) => {
      this.wake = () => {
        this.wake = undefined;
        resolve();
      };
    });
  }
}
