import { describe, expect, it } from 'vitest';
import type { SubscribableLike } from './streams.js';
import { StreamExpectationError, collectUntil, expectPhases } from './streams.js';

/** A minimal push source standing in for an RxJS Subject (no rxjs dependency in the kit). */
function pushSource<T>(): SubscribableLike<T> & {
  push(v: T): void;
  end(): void;
  fail(e: Error): void;
  observers: number;
} {
  const observers = new Set<{ next: (v: T) => void; error: (e: unknown) => void; complete: () => void }>();
  return {
    subscribe(observer) {
      observers.add(observer);
      return { unsubscribe: () => observers.delete(observer) };
    },
    push: (v) => observers.forEach((o) => o.next(v)),
    end: () => observers.forEach((o) => o.complete()),
    fail: (e) => observers.forEach((o) => o.error(e)),
    get observers() {
      return observers.size;
    },
  };
}

async function* fromArray<T>(items: T[], delayMs = 1): AsyncGenerator<T> {
  for (const item of items) {
    await new Promise((r) => setTimeout(r, delayMs));
    yield item;
  }
}

describe('collectUntil', () => {
  it('collects from an async iterable up to and including the match', async () => {
    const got = await collectUntil(fromArray([1, 2, 3, 4]), (n) => n === 3, 1_000);
    expect(got).toEqual([1, 2, 3]);
  });

  it('collects from an observable and unsubscribes', async () => {
    const source = pushSource<string>();
    const result = collectUntil(source, (s) => s === 'b', 1_000);
    source.push('a');
    source.push('b');
    source.push('c');
    expect(await result).toEqual(['a', 'b']);
    expect(source.observers).toBe(0);
  });

  it('rejects on timeout naming what arrived', async () => {
    const source = pushSource<number>();
    const result = collectUntil(source, () => false, 50);
    source.push(7);
    await expect(result).rejects.toThrow(/within 50 ms; got 1 item\(s\): \[7\]/);
    expect(source.observers).toBe(0);
  });

  it('rejects when the stream completes or fails first', async () => {
    await expect(collectUntil(fromArray([1]), () => false, 1_000)).rejects.toThrow(/completed before/);
    const source = pushSource<number>();
    const result = collectUntil(source, () => false, 1_000);
    source.fail(new Error('boom'));
    await expect(result).rejects.toThrow(/failed before a matching item \(boom\)/);
  });
});

describe('expectPhases', () => {
  it('accepts the exact phase sequence, counting repeats once', async () => {
    const items = [
      { status: { phase: 'PENDING' } },
      { status: { phase: 'PENDING' } },
      { status: { phase: 'CREATING' } },
      { status: { phase: 'RUNNING' } },
      { status: { phase: 'STOPPING' } },
    ];
    const got = await expectPhases(fromArray(items), ['PENDING', 'CREATING', 'RUNNING']);
    expect(got).toHaveLength(4);
  });

  it('rejects a wrong order with the phases it saw', async () => {
    const result = expectPhases(fromArray(['PENDING', 'RUNNING', 'STOPPED']), ['PENDING', 'CREATING', 'RUNNING']);
    await expect(result).rejects.toBeInstanceOf(StreamExpectationError);
    await expect(
      expectPhases(fromArray(['PENDING', 'RUNNING', 'STOPPED']), ['PENDING', 'CREATING', 'RUNNING']),
    ).rejects.toThrow('expected phases [PENDING → CREATING → RUNNING] but saw [PENDING → RUNNING]');
  });

  it('allows other phases in between in subsequence mode, and a custom phase reader', async () => {
    const items = [{ p: 1 }, { p: 2 }, { p: 3 }, { p: 4 }];
    const got = await expectPhases(fromArray(items), ['1', '4'], {
      match: 'subsequence',
      phaseOf: (i) => String(i.p),
    });
    expect(got).toHaveLength(4);
  });

  it('times out when the last phase never comes', async () => {
    const source = pushSource<string>();
    const result = expectPhases(source, ['PENDING', 'RUNNING'], { timeoutMs: 50 });
    source.push('PENDING');
    await expect(result).rejects.toThrow(/saw \[PENDING\].*within 50 ms/);
  });
});
