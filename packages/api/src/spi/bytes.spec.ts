import { describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { copyBytes } from './bytes.js';

describe('copyBytes', () => {
  it('copies out of shared and ordinary memory, exactly the source and nothing past it', () => {
    const data = randomBytes(100_000);
    const shared = Buffer.from(new SharedArrayBuffer(data.length + 32), 16, data.length);
    data.copy(shared);
    for (const source of [data, shared, shared.subarray(7, 8), new Uint8Array(data.buffer, data.byteOffset + 3, 5)]) {
      const target = Buffer.alloc(source.length + 20, 0xee);
      expect(copyBytes(source, target, 10)).toBe(source.length);
      expect(target.subarray(10, 10 + source.length).equals(source)).toBe(true);
      expect(target.subarray(0, 10).every((b) => b === 0xee)).toBe(true);
      expect(target.subarray(10 + source.length).every((b) => b === 0xee)).toBe(true);
    }
  });

  it('copies nothing from an empty source and refuses a target without room', () => {
    const target = Buffer.alloc(4, 1);
    expect(copyBytes(Buffer.alloc(0), target, 4)).toBe(0);
    expect(target.equals(Buffer.alloc(4, 1))).toBe(true);
    expect(() => copyBytes(Buffer.alloc(3), target, 2)).toThrow(RangeError);
  });
});
