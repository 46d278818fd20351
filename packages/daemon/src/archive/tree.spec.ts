import { describe, expect, it } from 'vitest';
import { sortByBytes } from './tree.js';

const byBytes = (names: string[]): string[] =>
  [...names].sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));

describe('sortByBytes (the walk order of archives)', () => {
  it('orders names by their UTF-8 bytes, with and without characters outside the BMP', () => {
    const alphabet = ['a', 'B', '-', '.', '_', '0', 'é', 'ß', '\u00ff', '\u0100', '\ue000', '\uffee', '日', '😀', '𝄞'];
    let seed = 7;
    const random = (n: number): number => {
      seed = (seed * 1103515245 + 12345) % 2147483648;
      return seed % n;
    };
    for (const pool of [alphabet.slice(0, 12), alphabet]) {
      const names = Array.from({ length: 300 }, () =>
        Array.from({ length: 1 + random(4) }, () => pool[random(pool.length)] as string).join(''),
      );
      const sorted = [...names];
      sortByBytes(sorted);
      expect(sorted).toEqual(byBytes(names));
    }
    // The case the default string order gets wrong: a surrogate pair sorts after U+E000..U+FFFF in UTF-8.
    const tricky = ['\uffee', '😀', '\ue000'];
    sortByBytes(tricky);
    expect(tricky).toEqual(['\ue000', '\uffee', '😀']);
  });
});
