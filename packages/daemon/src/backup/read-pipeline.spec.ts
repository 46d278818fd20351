import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import {
  appendFile,
  mkdir,
  mkdtemp,
  readdir,
  rename,
  rm,
  symlink,
  truncate,
  unlink,
  writeFile,
} from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { WalkedEntry } from '../archive/tree.js';
import { walkTree } from '../archive/tree.js';
import { SparseProber } from '../archive/sparse-prober.js';
import { makeSparseFile, MiB, proberProcesses } from '../test-support/sparse.js';
import { defaultChunkerOptions, StreamChunker } from './chunker.js';
import type { FilePiece } from './read-pipeline.js';
import { FileQueue, readFiles } from './read-pipeline.js';
import { ChunkWorkerPool } from './worker-pool.js';

const sha256 = (data: Uint8Array): string => createHash('sha256').update(data).digest('hex');

async function walk(root: string): Promise<Array<{ index: number; item: WalkedEntry }>> {
  const files: Array<{ index: number; item: WalkedEntry }> = [];
  for await (const item of walkTree(root)) if (item.entry.type === 'file') files.push({ index: files.length, item });
  return files;
}

async function collect(
  pieces: AsyncIterable<FilePiece>,
): Promise<Map<string, { hashes: string[]; bytes: number; vanished: boolean }>> {
  const out = new Map<string, { hashes: string[]; bytes: number; vanished: boolean }>();
  for await (const piece of pieces) {
    const file = out.get(piece.item.entry.path) ?? { hashes: [], bytes: 0, vanished: false };
    for (const chunk of piece.chunks) {
      // The hash the worker computed is the hash of the bytes it handed over.
      expect(sha256(chunk.data)).toBe(chunk.hash);
      file.hashes.push(chunk.hash);
    }
    file.bytes += piece.bytes;
    file.vanished ||= piece.vanished === true;
    out.set(piece.item.entry.path, file);
  }
  return out;
}

const openDescriptors = async (): Promise<number> => (await readdir('/proc/self/fd')).length;

describe('backup read pipeline (worker threads)', () => {
  let dir: string;
  const pool = new ChunkWorkerPool(2);

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'workbay-read-pipeline-'));
  });
  afterAll(async () => {
    await pool.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('cuts and hashes small and large files in order, as the streaming chunker does', async () => {
    const root = join(dir, 'order');
    const contents = new Map<string, Buffer>();
    await mkdir(root);
    for (let i = 0; i < 300; i++) {
      const size = i % 50 === 0 ? 9 * 1024 * 1024 + i : i * 97;
      const data = randomBytes(size);
      contents.set(`f${String(i).padStart(3, '0')}`, data);
      await writeFile(join(root, `f${String(i).padStart(3, '0')}`), data);
    }
    const files = await walk(root);
    const seen: number[] = [];
    const pieces = readFiles(pool, files, defaultChunkerOptions);
    const result = await collect(
      (async function* () {
        for await (const piece of pieces) {
          if (piece.done) seen.push(piece.index);
          yield piece;
        }
      })(),
    );
    expect(seen).toEqual(files.map((f) => f.index));
    for (const [name, data] of contents) {
      const chunker = new StreamChunker(defaultChunkerOptions);
      const expected = [...chunker.push(data), ...chunker.flush()].map(sha256);
      expect(result.get(name)).toEqual({ hashes: expected, bytes: data.length, vanished: false });
    }
  });

  it('held chunks keep their bytes while the workers read on (the buffer goes back only on release)', async () => {
    const root = join(dir, 'hold');
    await mkdir(root);
    for (let i = 0; i < 400; i++) await writeFile(join(root, `s${String(i).padStart(3, '0')}`), randomBytes(20_000));
    for (let i = 0; i < 4; i++) await writeFile(join(root, `z${i}`), randomBytes(10 * 1024 * 1024));
    const files = await walk(root);
    const held: Array<{ hash: string; data: Buffer; release: () => void }> = [];
    for await (const piece of readFiles(pool, files, defaultChunkerOptions)) {
      for (const chunk of piece.chunks) held.push({ hash: chunk.hash, data: chunk.data, release: piece.hold() });
    }
    // Every view is intact after the whole tree went through the workers' recycled buffers.
    for (const chunk of held) expect(sha256(chunk.data)).toBe(chunk.hash);
    for (const chunk of held) {
      chunk.release();
      chunk.release(); // a second release is a no-op
    }
  });

  it('does not follow a file that was swapped for a symlink after the walk (attack)', async () => {
    const root = join(dir, 'swap');
    await mkdir(root);
    const secret = join(dir, 'secret');
    await writeFile(secret, 'host secret');
    await writeFile(join(root, 'small'), 'x'.repeat(100));
    await writeFile(join(root, 'large'), randomBytes(1024 * 1024));
    const files = await walk(root);
    // The workspace replaces both files by links to a host file between the walk and the read.
    for (const name of ['small', 'large']) {
      await unlink(join(root, name));
      await symlink(secret, join(root, name));
    }
    const result = await collect(readFiles(pool, files, defaultChunkerOptions));
    expect(result.get('small')).toEqual({ hashes: [], bytes: 0, vanished: true });
    expect(result.get('large')).toEqual({ hashes: [], bytes: 0, vanished: true });
  });

  it('does not read through a directory swapped for a link to a host directory after the walk (attack)', async () => {
    const root = join(dir, 'swap-dir');
    const host = join(dir, 'host-dir');
    await mkdir(join(root, 'sub'), { recursive: true });
    await mkdir(host);
    await writeFile(join(host, 'small'), 'host secret');
    await writeFile(join(root, 'sub', 'small'), 'workspace');
    const files = await walk(root);
    // The workspace replaces its directory by a link to a host directory holding a file of the same name.
    await rm(join(root, 'sub'), { recursive: true });
    await symlink(host, join(root, 'sub'));
    const result = await collect(readFiles(pool, files, defaultChunkerOptions));
    expect(result.get('sub/small')).toEqual({ hashes: [], bytes: 0, vanished: true });
  });

  it('does not block on a FIFO swapped in for a listed file after the walk, small or large (attack)', async () => {
    const root = join(dir, 'fifo');
    await mkdir(root);
    await writeFile(join(root, 'small'), 'x'.repeat(100));
    await writeFile(join(root, 'large'), randomBytes(1024 * 1024));
    await writeFile(join(root, 'zz-after'), 'still read');
    await mkdir(join(root, 'sub'));
    await writeFile(join(root, 'sub', 'small'), 'x'.repeat(100));
    await writeFile(join(root, 'sub', 'large'), randomBytes(1024 * 1024));
    const host = join(dir, 'host-fifos');
    await mkdir(host);
    const files = await walk(root);
    // Red team round 10: an open of a FIFO without a writer never returned, and held a hash worker for good; root
    // also opened a host FIFO through a directory swapped for a link to it.
    for (const name of ['small', 'large']) {
      await unlink(join(root, name));
      execFileSync('mkfifo', [join(root, name)]);
      execFileSync('mkfifo', [join(host, name)]);
    }
    await rm(join(root, 'sub'), { recursive: true });
    await symlink(host, join(root, 'sub'));
    const result = await collect(readFiles(pool, files, defaultChunkerOptions));
    for (const name of ['small', 'large', 'sub/small', 'sub/large']) {
      expect(result.get(name), name).toEqual({ hashes: [], bytes: 0, vanished: true });
    }
    expect(result.get('zz-after')?.bytes).toBe(10);
  });

  it('reads a file replaced by another one at its path after the walk (an editor saving by rename)', async () => {
    const root = join(dir, 'replaced');
    await mkdir(root);
    await writeFile(join(root, 'file'), 'old');
    const files = await walk(root);
    await writeFile(join(root, 'file.tmp'), 'new content');
    await rename(join(root, 'file.tmp'), join(root, 'file'));
    const result = await collect(readFiles(pool, files, defaultChunkerOptions));
    expect(result.get('file')?.hashes).toEqual([sha256(Buffer.from('new content'))]);
  });

  it('reads a file that grew after the walk to its end', async () => {
    const root = join(dir, 'grow');
    await mkdir(root);
    await writeFile(join(root, 'grows'), 'a'.repeat(1000));
    const files = await walk(root);
    await appendFile(join(root, 'grows'), 'b'.repeat(5000));
    const result = await collect(readFiles(pool, files, defaultChunkerOptions));
    expect(result.get('grows')?.bytes).toBe(6000);
    expect(result.get('grows')?.hashes).toEqual([sha256(Buffer.from('a'.repeat(1000) + 'b'.repeat(5000)))]);
  });

  it('reads a small file that grew past the whole-file limit after the walk piece by piece, whole', async () => {
    const root = join(dir, 'grow-large');
    await mkdir(root);
    await writeFile(join(root, 'grows'), 'a'.repeat(1000));
    const files = await walk(root);
    const grown = Buffer.concat([Buffer.from('a'.repeat(1000)), randomBytes(3 * MiB)]);
    await writeFile(join(root, 'grows'), grown);
    const result = await collect(readFiles(pool, files, defaultChunkerOptions));
    expect(result.get('grows')?.bytes).toBe(grown.length);
    const chunker = new StreamChunker(defaultChunkerOptions);
    const expected = [...chunker.push(grown), ...chunker.flush()].map((c) => sha256(c));
    expect(result.get('grows')?.hashes).toEqual(expected);
  });

  it('reads small files grown to 15 TiB (sparse) after the walk by their data, not into memory (attack)', async () => {
    const root = join(dir, 'grow-sparse');
    await mkdir(root);
    for (let i = 0; i < 20; i++) await writeFile(join(root, `z${i}`), 'x');
    const files = await walk(root);
    // Red team round 10: read to their current end, these took the daemon's memory from 0.66 to 9 GB.
    for (let i = 0; i < 20; i++) await truncate(join(root, `z${i}`), 15 * 1024 ** 4);
    const before = process.memoryUsage();
    const result = await collect(readFiles(pool, files, defaultChunkerOptions));
    const after = process.memoryUsage();
    // Each is read as the sparse file it now is: its one block of data.
    for (let i = 0; i < 20; i++) expect(result.get(`z${i}`)?.bytes).toBeLessThanOrEqual(4096);
    expect(after.rss - before.rss).toBeLessThan(512 * MiB);
    expect(after.arrayBuffers - before.arrayBuffers).toBeLessThan(256 * MiB);
  });

  it('closes every descriptor when the consumer stops early', async () => {
    const root = join(dir, 'early');
    await mkdir(root);
    for (let i = 0; i < 6; i++) await writeFile(join(root, `big${i}`), randomBytes(9 * 1024 * 1024));
    const files = await walk(root);
    const before = await openDescriptors();
    for await (const piece of readFiles(pool, files, defaultChunkerOptions)) {
      expect(piece.chunks.length).toBeGreaterThan(0);
      break;
    }
    expect(await openDescriptors()).toBe(before);
  });

  it('probes the sparse files of a read through one Perl, and leaves no Perl, also when stopped early', async () => {
    const root = join(dir, 'sparse');
    await mkdir(root);
    for (let i = 0; i < 60; i++) makeSparseFile(join(root, `s${String(i).padStart(2, '0')}`), 8 * MiB, [[MiB, 4096]]);
    const files = await walk(root);
    const started = SparseProber.started;
    const result = await collect(readFiles(pool, files, defaultChunkerOptions));
    expect([...result.values()].every((file) => file.bytes === 4096)).toBe(true);
    expect(result.size).toBe(60);
    expect(SparseProber.started - started).toBe(1);
    expect(proberProcesses()).toEqual([]);

    const before = await openDescriptors();
    for await (const piece of readFiles(pool, files, defaultChunkerOptions)) {
      expect(piece.sparse?.extents).toEqual([MiB, 4096]);
      break;
    }
    expect(proberProcesses()).toEqual([]);
    expect(await openDescriptors()).toBe(before);
  });

  it('reads while files are still being listed, and fails with the error the listing ended with', async () => {
    const root = join(dir, 'queue');
    await mkdir(root);
    for (let i = 0; i < 3; i++) await writeFile(join(root, `big${i}`), randomBytes(9 * 1024 * 1024));
    const files = await walk(root);
    const before = await openDescriptors();
    const queue = new FileQueue();
    queue.push(files[0]!);
    const seen: string[] = [];
    const consumer = (async () => {
      for await (const piece of readFiles(pool, queue, defaultChunkerOptions)) {
        seen.push(piece.item.entry.path);
        // The first file is delivered before the listing goes on.
        if (seen.length === 1) {
          queue.push(files[1]!);
          queue.push(files[2]!);
          queue.end(new Error('listing failed'));
        }
      }
    })();
    await expect(consumer).rejects.toThrow('listing failed');
    expect(seen[0]).toBe(files[0]!.item.entry.path);
    expect(await openDescriptors()).toBe(before);
  });
});
