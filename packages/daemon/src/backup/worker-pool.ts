/**
 * A small pool of backup worker threads (see hash-worker.ts), shared by all backups of the process. Workers are
 * unref'd, so an idle pool never keeps the daemon alive; a worker that dies fails its pending jobs and is
 * replaced on the next job.
 */
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { workerSource } from './hash-worker.js';

interface Pending {
  resolve(value: unknown): void;
  reject(error: Error): void;
}

interface Slot {
  worker: Worker;
  readonly pending: Map<number, Pending>;
}

export class WorkerFailure extends Error {
  constructor(
    message: string,
    readonly code?: string,
  ) {
    super(message);
  }
}

export class ChunkWorkerPool {
  private readonly slots: Array<Slot | undefined>;
  private nextId = 1;
  private source: string | undefined;

  constructor(readonly size: number) {
    this.slots = Array.from({ length: size }, () => undefined);
  }

  private slot(index: number): Slot {
    const existing = this.slots[index];
    if (existing) return existing;
    this.source ??= workerSource();
    // No inherited execArgv: the source is a CommonJS script, which `--input-type=module` would make ESM.
    const worker = new Worker(this.source, { eval: true, execArgv: [] });
    worker.unref();
    const slot: Slot = { worker, pending: new Map() };
    const fail = (error: Error): void => {
      if (this.slots[index] === slot) this.slots[index] = undefined;
      for (const pending of slot.pending.values()) pending.reject(error);
      slot.pending.clear();
    };
    worker.on('message', (message: { id: number; error?: { message: string; code?: string } }) => {
      const pending = slot.pending.get(message.id);
      if (!pending) return;
      slot.pending.delete(message.id);
      if (slot.pending.size === 0) worker.unref();
      if (message.error) pending.reject(new WorkerFailure(message.error.message, message.error.code));
      else pending.resolve(message);
    });
    worker.on('error', fail);
    worker.on('exit', (code) => fail(new WorkerFailure(`backup worker exited with code ${code}`)));
    this.slots[index] = slot;
    return slot;
  }

  /** The worker with the fewest pending jobs (for a job sequence that must stay on one worker). */
  leastBusy(): number {
    let best = 0;
    let fewest = Number.POSITIVE_INFINITY;
    for (let i = 0; i < this.slots.length; i++) {
      const load = this.slots[i]?.pending.size ?? 0;
      if (load < fewest) {
        fewest = load;
        best = i;
      }
    }
    return best;
  }

  /** Runs `job` on worker `index` (or the least busy one); resolves with its answer. */
  run<T>(job: Record<string, unknown>, index = this.leastBusy()): Promise<T> {
    const slot = this.slot(index);
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      // Referenced while it has work: a caller awaiting an answer must keep the process alive.
      if (slot.pending.size === 0) slot.worker.ref();
      slot.pending.set(id, { resolve: resolve as (value: unknown) => void, reject });
      slot.worker.postMessage({ ...job, id });
    });
  }

  /** The thread behind worker `index` (started if need be): a replaced worker is a different object. */
  thread(index: number): Worker {
    return this.slot(index).worker;
  }

  /** Sends a message that has no answer (to the given worker, if it is alive). */
  notify(index: number, message: Record<string, unknown>, transfer: ArrayBuffer[] = []): void {
    this.slots[index]?.worker.postMessage(message, transfer);
  }

  async close(): Promise<void> {
    await Promise.all(this.slots.map((slot) => slot?.worker.terminate()));
    this.slots.fill(undefined);
  }
}

let shared: ChunkWorkerPool | undefined;

/** The process's pool: one worker per core (at most 4), so that hashing and chunking use every core. */
export function sharedWorkerPool(): ChunkWorkerPool {
  shared ??= new ChunkWorkerPool(Math.max(1, Math.min(4, availableParallelism())));
  return shared;
}

/**
 * The SHA-256 (hex) of an open file's whole content, computed by a pool worker reading it through `fd` (which
 * must stay open until this settles): the event loop spends no pass over the bytes.
 */
export async function digestFile(fd: number): Promise<string> {
  const answer = await sharedWorkerPool().run<{ hex: string }>({ kind: 'digest', fd });
  return answer.hex;
}

let nextDigest = 0;

/**
 * A SHA-256 computed by a pool worker from shared memory as the bytes go by: {@link update} hands over a view of
 * a SharedArrayBuffer (no copy; its bytes must stay unchanged until {@link digest} settles), so the event loop
 * spends no pass over them and nothing has to be read back. All updates go to one worker, in order.
 */
export class SharedMemoryDigest {
  private readonly pool = sharedWorkerPool();
  private readonly worker = this.pool.leastBusy();
  /** Updates sent to a worker that was replaced since are lost: the digest then fails instead of being wrong. */
  private readonly thread = this.pool.thread(this.worker);
  private readonly key = `d${process.pid}-${nextDigest++}`;

  /** True when `view` can be handed over without a copy. */
  static accepts(view: Uint8Array): boolean {
    return view.buffer instanceof SharedArrayBuffer;
  }

  update(view: Uint8Array): void {
    this.pool.notify(this.worker, {
      kind: 'hash-update',
      key: this.key,
      buffer: view.buffer,
      offset: view.byteOffset,
      length: view.byteLength,
    });
  }

  /** The hex digest of every update (also of none). */
  async digest(): Promise<string> {
    // Starts the state if nothing was fed; the worker answers an error if it lost what was.
    this.update(new Uint8Array(new SharedArrayBuffer(0)));
    const answer = this.pool.run<{ hex: string }>({ kind: 'hash-final', key: this.key }, this.worker);
    if (this.pool.thread(this.worker) !== this.thread) {
      answer.catch(() => undefined);
      throw new WorkerFailure('backup worker was replaced during a digest');
    }
    return (await answer).hex;
  }

  /** Forgets the state (the upload failed). */
  drop(): void {
    this.pool.notify(this.worker, { kind: 'drop', key: this.key });
  }
}
