import { describe, expect, it } from 'vitest';
import type { ChunkerOptions } from './chunker.js';
import { defaultChunkerOptions, findCut, gearRoller, gearTable } from './chunker.js';

/**
 * The chunker as plain JavaScript, the oracle for the WebAssembly one: cut points are part of the storage format
 * (a backup made by another version must deduplicate against this one's), so they must not move by a byte.
 */
const gear = gearTable();
function referenceCut(data: Uint8Array, options: ChunkerOptions, final: boolean): number | undefined {
  const { minSize, avgSize, maxSize } = options;
  if (data.length <= minSize) return final ? data.length : undefined;
  const bits = Math.log2(avgSize) | 0;
  const strict = ((1 << (bits + 1)) - 1) | 0;
  const loose = ((1 << (bits - 1)) - 1) | 0;
  const end = Math.min(data.length, maxSize);
  const middle = Math.min(end, avgSize);
  let hash = 0;
  let i = Math.max(0, minSize - 32);
  for (; i < minSize; i++) hash = ((hash << 1) + (gear[data[i] as number] as number)) | 0;
  for (; i < middle; i++) {
    hash = ((hash << 1) + (gear[data[i] as number] as number)) | 0;
    if ((hash & strict) === 0) return i + 1;
  }
  for (; i < end; i++) {
    hash = ((hash << 1) + (gear[data[i] as number] as number)) | 0;
    if ((hash & loose) === 0) return i + 1;
  }
  if (end === maxSize) return maxSize;
  return final ? data.length : undefined;
}

/** Deterministic pseudo-random bytes (xorshift32 from a seed), so that a failure can be reproduced. */
function bytes(length: number, seed: number): Buffer {
  const words = new Uint32Array(Math.ceil(length / 4));
  let state = seed | 0 || 1;
  for (let i = 0; i < words.length; i++) {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    words[i] = state >>> 0;
  }
  return Buffer.from(words.buffer, 0, length);
}

function allCuts(cut: typeof findCut, data: Uint8Array, options: ChunkerOptions): number[] {
  const cuts: number[] = [];
  for (let start = 0; start < data.length;) {
    start += cut(data.subarray(start), options, true) as number;
    cuts.push(start);
  }
  return cuts;
}

describe('findCut (the gear hash in WebAssembly)', () => {
  it('cuts random data exactly where the JavaScript reference cuts it', () => {
    const data = bytes(16 * 1024 * 1024, 1);
    const cuts = allCuts(findCut, data, defaultChunkerOptions);
    expect(cuts).toEqual(allCuts(referenceCut, data, defaultChunkerOptions));
    expect(cuts.length).toBeGreaterThan(5);
  });

  it('agrees on small chunk sizes, where cuts fall in every part of the window', () => {
    const options = { minSize: 64, avgSize: 256, maxSize: 1024 };
    const data = bytes(1024 * 1024, 2);
    expect(allCuts(findCut, data, options)).toEqual(allCuts(referenceCut, data, options));
  });

  it('agrees on data with no cut (zeros hash to a constant) and at every boundary case', () => {
    const options = { minSize: 4096, avgSize: 16384, maxSize: 65536 };
    const zeros = Buffer.alloc(300_000);
    expect(allCuts(findCut, zeros, options)).toEqual(allCuts(referenceCut, zeros, options));
    const data = bytes(200_000, 3);
    for (const length of [0, 1, 4095, 4096, 4097, 16383, 16384, 16385, 65535, 65536, 65537, 200_000]) {
      for (const final of [true, false]) {
        const view = data.subarray(0, length);
        expect(findCut(view, options, final), `${length} ${final}`).toBe(referenceCut(view, options, final));
      }
    }
  });

  it('rolls alike in WebAssembly and in the JavaScript fallback (node --jitless has no WebAssembly)', () => {
    const wasm = gearRoller(gear, true);
    const plain = gearRoller(gear, false);
    const data = bytes(600_000, 5);
    for (const mask of [0xff, 0xfff, 0xffff, 0x3ffff, -1]) {
      for (const [from, to] of [
        [0, 600_000],
        [1000, 140_000],
        [131_000, 132_000],
        [5, 5],
      ] as const) {
        const start = plain.warm(data, Math.max(0, from - 32), from);
        expect(wasm.warm(data, Math.max(0, from - 32), from)).toBe(start);
        expect(wasm.roll(data, from, to, mask, start), `${mask} ${from}`).toBe(plain.roll(data, from, to, mask, start));
        expect(wasm.hash).toBe(plain.hash);
      }
    }
  });

  it('cuts at the same places as before, so existing backups deduplicate (pinned cut points)', () => {
    const data = bytes(12 * 1024 * 1024, 4);
    expect(allCuts(findCut, data, defaultChunkerOptions)).toEqual(allCuts(referenceCut, data, defaultChunkerOptions));
    // Pinned: these were the cuts before the WebAssembly roller, computed by the reference above.
    expect(allCuts(findCut, data, defaultChunkerOptions).slice(0, 4)).toEqual(PINNED);
  });
});

const PINNED = [1005926, 1922229, 3655151, 3942400];
