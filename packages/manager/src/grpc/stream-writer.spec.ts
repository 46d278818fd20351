/**
 * The Subscribe writer against a stand-in stream whose `write()` answers what the test says (the real gRPC
 * stream is covered by subscribe.spec.ts): order, waiting for `drain`, the stall clock and the memory guard.
 */
import { EventEmitter } from 'node:events';
import { Subject } from 'rxjs';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { CutOff, writeWithBackpressure } from './stream-writer.js';

class FakeStream extends EventEmitter {
  readonly written: string[] = [];
  accepting = true;
  write(chunk: Buffer): boolean {
    this.written.push(chunk.toString());
    return this.accepting;
  }
  /** The reader took what was buffered; `all`: and everything after, else the next write fills it again. */
  drain(all = true): void {
    this.accepting = all;
    this.emit('drain');
  }
}

const limits = { bufferSize: 3, stallTimeoutMs: 1_000, maxBacklog: 10 };
const b = (s: string): Buffer => Buffer.from(s);

describe('writeWithBackpressure', () => {
  beforeEach(() => vi.useFakeTimers());
  afterEach(() => vi.useRealTimers());

  it('writes in order, holds updates while the stream is full, and completes once all are handed over', () => {
    const stream = new FakeStream();
    const source = new Subject<Buffer>();
    const events: string[] = [];
    writeWithBackpressure(stream, source, limits, () => Date.now()).subscribe({
      complete: () => events.push('complete'),
      error: () => events.push('error'),
    });
    source.next(b('1'));
    stream.accepting = false;
    source.next(b('2'));
    source.next(b('3'));
    source.next(b('4'));
    expect(stream.written).toEqual(['1', '2']);
    source.complete();
    expect(events).toEqual([]);
    stream.drain();
    expect(stream.written).toEqual(['1', '2', '3', '4']);
    expect(events).toEqual(['complete']);
  });

  it('cuts off a client over bufferSize that takes nothing for stallTimeoutMs, not one that keeps draining', () => {
    const stream = new FakeStream();
    const source = new Subject<Buffer>();
    let error: unknown;
    writeWithBackpressure(stream, source, limits, () => Date.now()).subscribe({ error: (e: unknown) => (error = e) });
    stream.accepting = false;
    for (let i = 0; i < 6; i++) source.next(b(String(i)));
    // Slow but reading: a drain every 600 ms restarts the clock, though the backlog stays over the limit.
    for (let round = 0; round < 5; round++) {
      vi.advanceTimersByTime(600);
      stream.drain(false);
      source.next(b(`r${round}`));
    }
    expect(stream.written).toEqual(['0', '1', '2', '3', '4', '5']);
    expect(error).toBeUndefined();
    vi.advanceTimersByTime(999);
    expect(error).toBeUndefined();
    vi.advanceTimersByTime(2);
    expect(error).toBeInstanceOf(CutOff);
    expect((error as Error).message).toBe('more than 3 status updates unread for 1 s');
    expect(source.observed).toBe(false);
  });

  it('a backlog back under bufferSize stops the clock', () => {
    const stream = new FakeStream();
    const source = new Subject<Buffer>();
    let error: unknown;
    writeWithBackpressure(stream, source, limits, () => Date.now()).subscribe({ error: (e: unknown) => (error = e) });
    stream.accepting = false;
    for (let i = 0; i < 5; i++) source.next(b(String(i)));
    vi.advanceTimersByTime(500);
    stream.drain(false);
    stream.drain(false);
    expect(stream.written).toEqual(['0', '1', '2']);
    vi.advanceTimersByTime(5_000);
    expect(error).toBeUndefined();
  });

  it('cuts off at once past maxBacklog, and unsubscribing stops the source and the timer', () => {
    const stream = new FakeStream();
    const source = new Subject<Buffer>();
    let error: unknown;
    stream.accepting = false;
    writeWithBackpressure(stream, source, limits, () => Date.now()).subscribe({ error: (e: unknown) => (error = e) });
    for (let i = 0; i < 12; i++) source.next(b(String(i)));
    expect((error as Error).message).toBe('more than 10 status updates unread');
    expect(source.observed).toBe(false);
    expect(vi.getTimerCount()).toBe(0);

    const other = new Subject<Buffer>();
    const subscription = writeWithBackpressure(new FakeStream(), other, limits).subscribe();
    subscription.unsubscribe();
    expect(other.observed).toBe(false);
  });
});
