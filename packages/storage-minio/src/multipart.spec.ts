import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { BoundedRunner, PartBufferCache, PartBufferPool, destroyOnAbort, splitParts } from './multipart.js';

async function parts(chunks: Buffer[], size: number): Promise<number[]> {
  const out: number[] = [];
  for await (const part of splitParts(Readable.from(chunks), size)) out.push(part.length);
  return out;
}

describe('splitParts', () => {
  it('cuts any chunking into exact parts, the last one short', async () => {
    expect(await parts([Buffer.alloc(10), Buffer.alloc(3), Buffer.alloc(20)], 8)).toEqual([8, 8, 8, 8, 1]);
    expect(await parts([Buffer.alloc(16)], 8)).toEqual([8, 8]);
    expect(await parts([Buffer.alloc(5)], 8)).toEqual([5]);
  });

  it('gives one empty part for an empty stream', async () => {
    expect(await parts([], 8)).toEqual([0]);
  });

  it('keeps the bytes in order', async () => {
    const data = Buffer.from(Array.from({ length: 100 }, (_, i) => i));
    const out: Buffer[] = [];
    for await (const part of splitParts(Readable.from([data.subarray(0, 33), data.subarray(33)]), 7)) out.push(part);
    expect(Buffer.concat(out).equals(data)).toBe(true);
  });
});

describe('PartBufferPool', () => {
  it('allocates up to its maximum, then hands out released buffers', async () => {
    const pool = new PartBufferPool(16, 2);
    const a = await pool.acquire();
    const b = await pool.acquire();
    expect(a).not.toBe(b);
    let third: Buffer | undefined;
    const waiting = Promise.resolve(pool.acquire()).then((buf) => {
      third = buf;
    });
    await Promise.resolve();
    expect(third).toBeUndefined();
    pool.release(a.subarray(0, 5));
    await waiting;
    expect(third!.buffer).toBe(a.buffer);
    expect(third!.length).toBe(16);
  });

  it('feeds splitParts so parts reuse the same memory', async () => {
    const pool = new PartBufferPool(4, 3);
    const seen = new Set<ArrayBufferLike>();
    for await (const part of splitParts(Readable.from([Buffer.alloc(40)]), 4, () => pool.acquire())) {
      seen.add(part.buffer);
      pool.release(part);
    }
    expect(seen.size).toBe(1);
  });
});

describe('PartBufferCache', () => {
  it("hands one upload's released buffers to the next upload, and only buffers of its size", async () => {
    const size = 64 * 1024; // above Buffer's 4 KiB pooling, so that every part has memory of its own
    const cache = new PartBufferCache(size, 2);
    const first = new PartBufferPool(size, 3, cache);
    const a = (await first.acquire()) as Buffer;
    const b = (await first.acquire()) as Buffer;
    first.release(a.subarray(0, 10));
    first.release(b);
    first.close();
    const second = new PartBufferPool(size, 3, cache);
    const reused = [(await second.acquire()) as Buffer, (await second.acquire()) as Buffer];
    const owner = (x: Buffer): string => (x.buffer === a.buffer ? 'a' : x.buffer === b.buffer ? 'b' : 'fresh');
    expect(reused.map(owner).sort()).toEqual(['a', 'b']);
    expect(reused.every((x) => x.length === size)).toBe(true);
    const fresh = (await second.acquire()) as Buffer;
    expect(owner(fresh)).toBe('fresh');
    // Another part size (a huge object's) neither takes from nor gives to the cache.
    const other = new PartBufferPool(2 * size, 1, cache);
    other.release((await other.acquire()) as Buffer);
    other.close();
    expect(cache.take()).toBeUndefined();
  });

  it('keeps at most its bound, and nothing once idle', async () => {
    const cache = new PartBufferCache(16, 1, 20);
    cache.give(Buffer.alloc(16));
    cache.give(Buffer.alloc(16));
    expect(cache.take()).toBeDefined();
    expect(cache.take()).toBeUndefined();
    cache.give(Buffer.alloc(16));
    await new Promise((resolve) => setTimeout(resolve, 60));
    expect(cache.take()).toBeUndefined();
  });
});

describe('BoundedRunner', () => {
  it('never runs more than its limit at once', async () => {
    const runner = new BoundedRunner(3);
    let running = 0;
    let peak = 0;
    for (let i = 0; i < 10; i++) {
      await runner.add(async () => {
        running++;
        peak = Math.max(peak, running);
        await new Promise((r) => setTimeout(r, 5));
        running--;
      });
    }
    await runner.settle();
    expect(peak).toBe(3);
    expect(runner.failed).toBeUndefined();
  });

  it('records the first failure and starts nothing after it', async () => {
    const runner = new BoundedRunner(1);
    let started = 0;
    await runner.add(async () => {
      started++;
      throw new Error('first');
    });
    await runner.add(async () => {
      started++;
    });
    await runner.settle();
    expect(started).toBe(1);
    expect((runner.failed?.error as Error).message).toBe('first');
  });
});

describe('destroyOnAbort', () => {
  it('ends a stream with an AbortError when the signal fires', async () => {
    const stream = new Readable({ read() {} });
    const controller = new AbortController();
    destroyOnAbort(stream, controller.signal);
    const ended = new Promise<Error>((resolve) => stream.on('error', resolve));
    controller.abort();
    expect((await ended).name).toBe('AbortError');
  });
});
