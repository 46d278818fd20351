import { randomBytes } from 'node:crypto';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { collect, tempDir } from '../test-support/tree.js';
import { FsRemoteStorage } from '../storage/fs-storage.js';
import type { BackupTarget } from './chunked.js';
import { maxHeldBuffers, packName, PackWriter } from './pack-writer.js';

/** A stand-in for a worker's shared buffer: counts holds and releases. */
function workerBuffer(size: number): { data: Buffer; hold: () => () => void; held: () => number; released: number } {
  const state = { held: 0, released: 0 };
  const data = Buffer.from(new SharedArrayBuffer(size));
  data.set(randomBytes(size));
  return {
    data,
    hold: () => {
      state.held++;
      return () => state.released++;
    },
    held: () => state.held,
    get released() {
      return state.released;
    },
  };
}

describe('PackWriter', () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let storage: FsRemoteStorage;
  let target: BackupTarget;

  beforeEach(async () => {
    dir = await tempDir();
    storage = new FsRemoteStorage({ root: dir.path });
    await storage.ensureBucket('bkt');
    target = { storage, bucket: 'bkt', prefix: 'ws/' };
  });
  afterEach(async () => {
    await storage.close();
    await dir.cleanup();
  });

  it('holds at most a few worker buffers per pack, copies the rest, and releases the held ones once uploaded', async () => {
    const writer = new PackWriter(target, 1024 * 1024, 'none', 2, undefined);
    const buffers = Array.from({ length: maxHeldBuffers + 4 }, () => workerBuffer(64 * 1024));
    const expected: Buffer[] = [];
    // Two blobs of every buffer, consecutive in it (one view when held).
    for (const buffer of buffers) {
      for (const [start, end] of [
        [0, 1000],
        [1000, 5000],
      ] as const) {
        await writer.add(`h${expected.length}`, buffer.data.subarray(start, end), buffer.hold);
        expected.push(Buffer.from(buffer.data.subarray(start, end)));
      }
      expect(writer.heldBuffers).toBeLessThanOrEqual(maxHeldBuffers);
    }
    const held = buffers.filter((b) => b.held() > 0);
    expect(held).toHaveLength(maxHeldBuffers);
    // The workers reuse the buffers that were not held at once: the copied blobs must not change with them.
    for (const buffer of buffers) if (buffer.held() === 0) buffer.data.fill(0);
    expect(held.every((b) => b.released === 0)).toBe(true);
    await writer.finish();
    expect(held.every((b) => b.released === b.held())).toBe(true);
    expect(writer.written).toHaveLength(1);
    const pack = writer.written[0];
    const stored = await collect(await storage.download('bkt', packName(target, pack?.id as string)));
    expect(stored.equals(Buffer.concat(expected))).toBe(true);
  });

  it('a failed upload keeps the buffers held (the storage may still read them) and fails the writer', async () => {
    const failing: BackupTarget = {
      ...target,
      storage: Object.assign(Object.create(storage) as FsRemoteStorage, {
        upload: () => Promise.reject(new Error('disk full')),
      }),
    };
    const writer = new PackWriter(failing, 4096, 'none', 1, undefined);
    const buffer = workerBuffer(8192);
    await writer.add('a', buffer.data.subarray(0, 4096), buffer.hold);
    await writer.add('b', buffer.data.subarray(4096), buffer.hold);
    await expect(writer.finish()).rejects.toThrow('disk full');
    expect(buffer.held()).toBe(2);
    expect(buffer.released).toBe(0);
  });
});
