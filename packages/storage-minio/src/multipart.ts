import type { Readable } from 'node:stream';
import { copyBytes } from '@workbay/api';

function toBuffer(chunk: unknown): Buffer {
  if (Buffer.isBuffer(chunk)) return chunk;
  if (chunk instanceof Uint8Array) return Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
  return Buffer.from(String(chunk));
}

/**
 * Cuts a byte stream into parts of exactly `partSize` bytes (the last may be shorter; an empty stream gives
 * one empty part), copying into buffers from `acquire` so that part buffers can be reused. The source is
 * read only as fast as parts are taken.
 */
export async function* splitParts(
  source: AsyncIterable<unknown>,
  partSize: number,
  acquire: () => Buffer | Promise<Buffer> = () => Buffer.allocUnsafe(partSize),
): AsyncGenerator<Buffer> {
  let target: Buffer | undefined;
  let filled = 0;
  let yielded = false;
  for await (const chunk of source) {
    let buf = toBuffer(chunk);
    while (buf.length > 0) {
      target ??= await acquire();
      // A backup's pack arrives as views of shared memory: copyBytes is a plain memcpy there, Buffer#copy is not.
      const copied = copyBytes(buf.subarray(0, Math.min(buf.length, partSize - filled)), target, filled);
      filled += copied;
      buf = buf.subarray(copied);
      if (filled === partSize) {
        const part = target;
        target = undefined;
        filled = 0;
        yielded = true;
        yield part;
      }
    }
  }
  if (filled > 0 || !yielded) {
    target ??= await acquire();
    yield target.subarray(0, filled);
  }
}

/**
 * Part buffers kept between the uploads of one storage. A chunked backup uploads one pack (one part) after
 * another: a fresh 16 MiB buffer for each kept V8 running full garbage collections, since fresh external memory
 * is what starts them (a fifth of the client's CPU in a 1 GiB backup). At most `keep` buffers of `partSize` are
 * kept, and all are let go once no upload has used them for `idleMs`, so an idle daemon holds none.
 */
export class PartBufferCache {
  private readonly free: Buffer[] = [];
  private idle: NodeJS.Timeout | undefined;

  constructor(
    readonly partSize: number,
    private readonly keep: number,
    private readonly idleMs = 30_000,
  ) {}

  take(): Buffer | undefined {
    this.touch();
    return this.free.pop();
  }

  give(buffer: Buffer): void {
    if (buffer.length === this.partSize && this.free.length < this.keep) this.free.push(buffer);
    this.touch();
  }

  private touch(): void {
    clearTimeout(this.idle);
    this.idle = setTimeout(() => (this.free.length = 0), this.idleMs);
    this.idle.unref();
  }
}

/**
 * Part buffers for one upload, at most `max` at once, recycled while it runs and handed to `cache` (when it holds
 * buffers of this size) once it is over: big short-lived buffers are what makes uploads spend their time in the
 * garbage collector.
 */
export class PartBufferPool {
  private readonly free: Buffer[] = [];
  private readonly waiting: ((buffer: Buffer) => void)[] = [];
  private allocated = 0;

  constructor(
    private readonly partSize: number,
    private readonly max: number,
    private readonly cache?: PartBufferCache,
  ) {}

  acquire(): Buffer | Promise<Buffer> {
    const free = this.free.pop();
    if (free) return free;
    if (this.allocated < this.max) {
      this.allocated++;
      return (
        (this.cache?.partSize === this.partSize ? this.cache.take() : undefined) ?? Buffer.allocUnsafe(this.partSize)
      );
    }
    return new Promise((resolve) => this.waiting.push(resolve));
  }

  /** Returns a buffer (or a view of one) taken from {@link acquire}. */
  release(part: Buffer): void {
    const whole = part.length === this.partSize ? part : Buffer.from(part.buffer, part.byteOffset, this.partSize);
    const waiter = this.waiting.shift();
    if (waiter) waiter(whole);
    else this.free.push(whole);
  }

  /** The upload is over: its released buffers go to the cache (buffers never released are left to the collector). */
  close(): void {
    for (const buffer of this.free.splice(0)) this.cache?.give(buffer);
  }
}

/** Runs at most `limit` tasks at once; `add` waits for a free slot, so a producer is held back. */
export class BoundedRunner {
  private readonly running = new Set<Promise<void>>();
  private failure: { error: unknown } | undefined;

  constructor(private readonly limit: number) {}

  /** The first error any task threw, if one did. */
  get failed(): { error: unknown } | undefined {
    return this.failure;
  }

  async add(task: () => Promise<void>): Promise<void> {
    while (this.running.size >= this.limit) await Promise.race(this.running);
    if (this.failure) return;
    const promise: Promise<void> = task()
      .catch((error: unknown) => {
        this.failure ??= { error };
      })
      .finally(() => {
        this.running.delete(promise);
      });
    this.running.add(promise);
  }

  /** Waits for every started task to settle. */
  async settle(): Promise<void> {
    while (this.running.size > 0) await Promise.all(this.running);
  }
}

/** Ends the stream with an AbortError when the signal fires, so a reader blocked on it wakes up. */
export function destroyOnAbort(stream: Readable, signal: AbortSignal | undefined): () => void {
  if (!signal) return () => undefined;
  const onAbort = (): void => {
    const reason: unknown = signal.reason;
    const error = reason instanceof Error ? reason : new DOMException('The upload was aborted', 'AbortError');
    stream.destroy(error);
  };
  if (signal.aborted) onAbort();
  else signal.addEventListener('abort', onAbort, { once: true });
  return () => signal.removeEventListener('abort', onAbort);
}
