import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { collect, tempDir } from '../test-support/tree.js';
import { DirectWrites } from './direct-writes.js';
import { FsRemoteStorage } from './fs-storage.js';

/** Bytes of `path` in the page cache, by util-linux's `fincore` (mincore(2) on a mapping of the file). */
function cachedBytes(path: string): number {
  return Number(execFileSync('fincore', ['--bytes', '--noheadings', '--raw', '--output', 'RES', path]).toString());
}

/** The data file of object `name` (its only data file: `<base>%z<id>`). */
async function dataFile(root: string, bucket: string, name: string): Promise<string> {
  const dir = join(root, bucket, ...name.split('/').slice(0, -1));
  const base = name.split('/').at(-1) as string;
  const files = (await readdir(dir)).filter((f) => f.startsWith(`${base}%z`));
  expect(files).toHaveLength(1);
  return join(dir, files[0] as string);
}

describe('direct writes of large objects', () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;

  beforeEach(async () => {
    dir = await tempDir();
  });
  afterEach(async () => {
    await dir.cleanup();
  });

  it('write files of every length exactly: below, at and across block and staging-buffer bounds', async () => {
    const writes = new DirectWrites();
    const data = randomBytes(5 * 1024 * 1024 + 123);
    for (const length of [0, 1, 4095, 4096, 4097, 2 * 1024 * 1024, 2 * 1024 * 1024 + 1, data.length]) {
      const path = join(dir.path, `f${length}`);
      await writeFile(path, '');
      const writer = await writes.open(path);
      expect(writer).toBeDefined();
      // Pieces of odd sizes, some from shared memory (how a backup's packs arrive).
      for (let at = 0; at < length;) {
        const piece = data.subarray(at, Math.min(length, at + 1 + ((at * 7919) % 700_000)));
        const shared = Buffer.from(new SharedArrayBuffer(piece.length + 8), 8, piece.length);
        piece.copy(shared);
        await writer?.write(at % 2 ? piece : shared);
        at += piece.length;
      }
      expect(await writer?.finish()).toBe(length);
      await writer?.close();
      expect((await stat(path)).size).toBe(length);
      expect((await readFile(path)).equals(data.subarray(0, length))).toBe(true);
    }
  });

  it('a backup pack (caller-verified, size known) bypasses the page cache; small or read-back objects do not', async () => {
    const storage = new FsRemoteStorage({ root: dir.path });
    try {
      await storage.ensureBucket('bkt');
      const parts = [randomBytes(3 * 1024 * 1024 + 17), randomBytes(1024 * 1024 - 5), randomBytes(4 * 1024 * 1024)];
      const whole = Buffer.concat(parts);
      const info = await storage.upload('bkt', 'chunks/pack', Readable.from(parts), {
        size: whole.length,
        verifiedByCaller: true,
      });
      expect(info.size).toBe(whole.length);
      const packFile = await dataFile(dir.path, 'bkt', 'chunks/pack');
      expect(cachedBytes(packFile)).toBe(0);
      expect((await collect(await storage.download('bkt', 'chunks/pack'))).equals(whole)).toBe(true);

      // Small: through the page cache. Large, digest read back from the file: through the page cache too.
      await storage.upload('bkt', 'small', Readable.from([randomBytes(64 * 1024)]), {
        size: 64 * 1024,
        verifiedByCaller: true,
      });
      expect(cachedBytes(await dataFile(dir.path, 'bkt', 'small'))).toBeGreaterThan(0);
      const readBack = await storage.upload('bkt', 'read-back', Readable.from(parts), { size: whole.length });
      expect(readBack.digest).toMatch(/^sha256:/);
      expect(cachedBytes(await dataFile(dir.path, 'bkt', 'read-back'))).toBeGreaterThan(0);
    } finally {
      await storage.close();
    }
  });

  it('a failed body leaves no object and gives the staging buffers back', async () => {
    const storage = new FsRemoteStorage({ root: dir.path });
    try {
      await storage.ensureBucket('bkt');
      const failing = async function* (): AsyncGenerator<Buffer> {
        yield randomBytes(3 * 1024 * 1024);
        throw new Error('the body broke');
      };
      // More failures than the process has staging buffers: each must return its two.
      for (let i = 0; i < 6; i++) {
        await expect(
          storage.upload('bkt', 'p', Readable.from(failing()), { size: 8 * 1024 * 1024, verifiedByCaller: true }),
        ).rejects.toThrow('the body broke');
      }
      expect(await storage.stat('bkt', 'p')).toBeUndefined();
      const data = randomBytes(2 * 1024 * 1024 + 3);
      await storage.upload('bkt', 'p', Readable.from([data]), { size: data.length, verifiedByCaller: true });
      expect(cachedBytes(await dataFile(dir.path, 'bkt', 'p'))).toBe(0);
      expect((await collect(await storage.download('bkt', 'p'))).equals(data)).toBe(true);
    } finally {
      await storage.close();
    }
  });
});
