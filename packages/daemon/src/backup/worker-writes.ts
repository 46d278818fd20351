/**
 * Files written by the backup workers (hash-worker.ts, `place`): a restore hands over a shared buffer and says
 * which of its byte ranges go to which files, and a worker creates the files with the calls tar makes (or writes
 * into files the restore created). The event loop then only plans, and the kernel's work of creating thousands of
 * files runs on every core instead of as six thread-pool round trips per file.
 */
import { sharedWorkerPool } from './worker-pool.js';

export interface PlaceTarget {
  /** True: a new file holding just these bytes (O_EXCL, O_NOFOLLOW), with the metadata below. */
  readonly create: boolean;
  readonly absolute: string;
  /** Where the bytes go in an existing file (`create: false`). */
  readonly position?: number;
  /** Only the blob's bytes [`from`, `from + length`) (a sparse file's data between two holes). */
  readonly from?: number;
  readonly length?: number;
  readonly mode?: number;
  /** Seconds. */
  readonly mtime?: number;
  readonly uid?: number;
  readonly gid?: number;
}

export interface PlaceBlob {
  readonly offset: number;
  readonly length: number;
  /** SHA-256 (hex) the bytes must have, checked before anything of them is written (absent: not checked). */
  readonly hash?: string;
  readonly targets: PlaceTarget[];
}

export interface PlaceAnswer {
  /** The first blob whose bytes are not its hash; nothing from it on was written. */
  readonly corrupt?: { readonly blob: number; readonly actual: string };
  /** Targets that failed (`code`: the errno name), the others are written. */
  readonly failures: ReadonlyArray<{ blob: number; target: number; code?: string; message: string }>;
}

/** Runs one `place` job on the least busy worker; `buffer` (shared memory) must stay unchanged until it settles. */
export function placeOnWorker(buffer: Buffer, blobs: readonly PlaceBlob[]): Promise<PlaceAnswer> {
  if (!(buffer.buffer instanceof SharedArrayBuffer)) throw new TypeError('place jobs need shared memory');
  return sharedWorkerPool().run<PlaceAnswer>({ kind: 'place', buffer: buffer.buffer, blobs });
}

/** The error a failed target ends a restore with. */
export function placeFailure(target: PlaceTarget, failure: { code?: string; message: string }): Error {
  return Object.assign(new Error(`restoring '${target.absolute}': ${failure.message}`), { code: failure.code });
}

/** Shared buffers reused across jobs: fresh memory costs a page fault per 4 KiB and garbage collections. */
export class SharedBuffers {
  private readonly free: Buffer[] = [];

  constructor(
    private readonly minimum: number,
    private readonly keep = 4,
  ) {}

  acquire(bytes: number): Buffer {
    const index = this.free.findIndex((b) => b.length >= bytes);
    if (index >= 0) return (this.free.splice(index, 1)[0] as Buffer).subarray(0, bytes);
    return Buffer.from(new SharedArrayBuffer(Math.max(bytes, this.minimum))).subarray(0, bytes);
  }

  release(buffer: Buffer): void {
    if (this.free.length < this.keep) this.free.push(Buffer.from(buffer.buffer));
  }
}
