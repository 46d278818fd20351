// Restores whose small files are created in batches by the backup workers (the default) against the same
// archives written through the thread pool (`batchedWrites: false`): archive order must hold either way.
import { lstat, mkdir, readFile, readdir, stat, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { tarOf as tarOfEntries } from '../test-support/tar-entries.js';
import type { TarEntry } from '../test-support/tar-entries.js';
import { tempDir } from '../test-support/tree.js';
import { extractTree, extractTreeWith } from './extract.js';
import type { ExtractOptions } from './extract.js';

type Entry = TarEntry;

const tarOf = (entries: TarEntry[]): Promise<Buffer> => tarOfEntries(entries, { mode: 0o644 });

const modes: Array<[string, ExtractOptions]> = [
  ['batched on the workers', {}],
  ['through the thread pool', { batchedWrites: false }],
];

describe.each(modes)('tar restore, small files %s', (_name, mode) => {
  let work: Awaited<ReturnType<typeof tempDir>>;
  let target: string;
  beforeEach(async () => {
    work = await tempDir();
    target = join(work.path, 'target');
    await mkdir(target);
  });
  afterEach(() => work.cleanup());

  const extract = async (entries: Entry[]) =>
    extractTree(Readable.from([await tarOf(entries)]), target, { xattrs: false, ...mode });

  it('restores thousands of files across many batches byte for byte', async () => {
    const entries: Entry[] = Array.from({ length: 1500 }, (_, i) => ({
      header: { name: `d${i % 7}/f${i}.txt`, mtime: new Date(1_600_000_000_000 + i * 1000) },
      body: `file ${i} `.repeat(1 + (i % 50)),
    }));
    const stats = await extract(entries);
    expect(stats.files).toBe(1500);
    for (const i of [0, 511, 512, 1023, 1499]) {
      const path = join(target, `d${i % 7}/f${i}.txt`);
      expect(await readFile(path, 'utf8')).toBe(`file ${i} `.repeat(1 + (i % 50)));
      expect((await stat(path)).mtimeMs).toBe(1_600_000_000_000 + i * 1000);
    }
    let count = 0;
    for (const dir of await readdir(target)) count += (await readdir(join(target, dir))).length;
    expect(count).toBe(1500);
  });

  it('applies a path given twice in archive order: the later file wins', async () => {
    await extract([
      { header: { name: 'twice.txt' }, body: 'first' },
      { header: { name: 'other.txt' }, body: 'between' },
      { header: { name: 'twice.txt', mode: 0o600 }, body: 'second' },
    ]);
    expect(await readFile(join(target, 'twice.txt'), 'utf8')).toBe('second');
    expect((await stat(join(target, 'twice.txt'))).mode & 0o777).toBe(0o600);
  });

  it('links a hard link to a file of the same batch', async () => {
    await extract([
      { header: { name: 'a.txt' }, body: 'shared' },
      { header: { name: 'b.txt', type: 'link', linkname: 'a.txt' } },
    ]);
    const [a, b] = await Promise.all([stat(join(target, 'a.txt')), stat(join(target, 'b.txt'))]);
    expect(b.ino).toBe(a.ino);
    expect(await readFile(join(target, 'b.txt'), 'utf8')).toBe('shared');
  });

  it('refuses an entry below a file of the same batch, as in order', async () => {
    const error = await extract([
      { header: { name: 'x' }, body: 'a file' },
      { header: { name: 'x/y' }, body: 'below a file' },
    ]).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(Error);
    expect(await readFile(join(target, 'x'), 'utf8')).toBe('a file');
  });

  it('replaces what is in the way, and never follows a planted symlink', async () => {
    const outside = join(work.path, 'outside.txt');
    await writeFile(outside, 'untouched');
    await writeFile(join(target, 'old.txt'), 'old');
    await symlink(outside, join(target, 'link.txt'));
    await extract([
      { header: { name: 'old.txt' }, body: 'new' },
      { header: { name: 'link.txt' }, body: 'through?' },
    ]);
    expect(await readFile(join(target, 'old.txt'), 'utf8')).toBe('new');
    expect((await lstat(join(target, 'link.txt'))).isFile()).toBe(true);
    expect(await readFile(join(target, 'link.txt'), 'utf8')).toBe('through?');
    expect(await readFile(outside, 'utf8')).toBe('untouched');
  });
});

describe('tar restore batches', () => {
  it('fails the restore with a batch that fails, and leaves no batch running', async () => {
    const work = await tempDir();
    try {
      let running = 0;
      const stats = extractTreeWith(
        Readable.from([await tarOf([{ header: { name: 'f.txt' }, body: 'x' }])]),
        join(work.path),
        { xattrs: false },
        async (_buffer, blobs) => {
          running++;
          await new Promise((r) => setTimeout(r, 50));
          running--;
          return { failures: [{ blob: 0, target: 0, code: 'EIO', message: `${blobs.length} failed` }] };
        },
      );
      await expect(stats).rejects.toThrow(/1 failed/);
      expect(running).toBe(0);
    } finally {
      await work.cleanup();
    }
  });
});
