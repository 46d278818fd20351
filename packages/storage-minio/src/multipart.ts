import type { Readable } from 'node:stream';

/**
 * Cuts a byte stream into parts of exactly `partSize` bytes (the last may be shorter; an empty stream gives
 * one empty part). Holds one part at a time; the consumer's pace is the source's pace.
 */
export async function* splitParts(source: AsyncIterable<unknown>, partSize: number): AsyncGenerator<Buffer> {
  let pending: Buffer[] = [];
  let pendingSize = 0;
  let yielded = false;
  for await (const chunk of source) {
    let buf = Buffer.isBuffer(chunk)
      ? chunk
      : chunk instanceof Uint8Array
        ? Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength)
        : Buffer.from(String(chunk));
    while (buf.length > 0) {
      const take = Math.min(buf.length, partSize - pendingSize);
      pending.push(buf.subarray(0, take));
      pendingSize += take;
      buf = buf.subarray(take);
      if (pendingSize === partSize) {
        const part = pending.length === 1 ? pending[0]! : Buffer.concat(pending, pendingSize);
        pending = [];
        pendingSize = 0;
        yielded = true;
        yield part;
      }
    }
  }
  if (pendingSize > 0 || !yielded) yield Buffer.concat(pending, pendingSize);
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
