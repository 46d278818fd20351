import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { BlobTable } from './blob-table.js';
import type { PackRef } from './pack-writer.js';

const sha = (i: number): string => createHash('sha256').update(String(i)).digest('hex');

describe('BlobTable', () => {
  it('finds every blob by hash past several growths, and gives back what it was given', () => {
    const table = new BlobTable();
    const packs: PackRef[] = [{ id: 'a' }, { id: 'b' }, {}];
    const count = 5000;
    for (let i = 0; i < count; i++) {
      expect(table.find(sha(i))).toBe(-1);
      const ref = { hash: sha(i), pack: packs[i % 3] as PackRef, offset: i * 10, length: i };
      expect(table.push(ref)).toBe(i);
    }
    expect(table.length).toBe(count);
    for (const i of [0, 1, 1023, 1024, 4999]) {
      expect(table.find(sha(i))).toBe(i);
      // The same pack object (identity matters: pack refs are filled in when their pack is uploaded).
      expect(table.at(i)).toEqual({ hash: sha(i), pack: packs[i % 3], offset: i * 10, length: i });
      expect(table.at(i).pack).toBe(packs[i % 3]);
      expect(table.findKey(Buffer.from(sha(i), 'hex'), 0)).toBe(i);
    }
    expect(table.find(sha(count))).toBe(-1);
    const moved: PackRef = { id: 'c' };
    table.set(7, { hash: sha(7), pack: moved, offset: 3, length: 7 });
    expect(table.at(7)).toEqual({ hash: sha(7), pack: moved, offset: 3, length: 7 });
    expect([...table].length).toBe(count);
  });
});
