import { execFileSync } from 'node:child_process';
import { chmod, chown, lchown, link, lstat, mkdir, readFile, symlink, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { BackupStore } from '../backup/backup-store.js';
import { isWorkbayError } from '../errors.js';
import { FsRemoteStorage } from '../storage/fs-storage.js';
import { tarOf } from '../test-support/tar-entries.js';
import { describeTree, tempDir } from '../test-support/tree.js';
import { SafeTreeWriter } from './safe-writer.js';
import { extractTree } from './extract.js';
import type { TreeEntry } from './tree.js';
import { xattrSupport } from './xattr.js';

const isRoot = process.getuid?.() === 0;

/** Many small files across nested directories, with every kind of metadata a parallel restore must keep. */
async function buildWideTree(root: string): Promise<void> {
  const modes = [0o644, 0o600, 0o755, 0o4755, 0o2750, 0o444];
  for (let i = 0; i < 240; i++) {
    const dir = join(root, `p${i % 6}`, `q${i % 5}`);
    await mkdir(dir, { recursive: true });
    const file = join(dir, `f${i}.txt`);
    await writeFile(file, `file ${i}\n`.repeat(1 + (i % 40)));
    await chmod(file, modes[i % modes.length] as number);
    await utimes(file, 1_500_000_000 + i * 3600, 1_500_000_000 + i * 3600);
    if (isRoot && i % 7 === 0) await chown(file, 1000 + i, 2000 + i);
    if (i % 10 === 0) await link(file, join(dir, `hard${i}.txt`));
    if (i % 9 === 0) await symlink(`f${i}.txt`, join(dir, `sym${i}`));
  }
  await writeFile(join(root, 'empty'), '');
  await symlink('/nowhere', join(root, 'dangling'));
  if (isRoot) await lchown(join(root, 'dangling'), 77, 78);
  await mkdir(join(root, 'p0/q0/deep/er/still'), { recursive: true });
  await chmod(join(root, 'p0/q0/deep'), 0o711);
  if ((await xattrSupport()).available) {
    execFileSync('setfattr', ['-n', 'user.note', '-v', 'hello', join(root, 'p1/q1/f1.txt')]);
    execFileSync('setfattr', ['-n', 'user.bin', '-v', '0x00ff10', join(root, 'empty')]);
    execFileSync('setfattr', ['-n', 'user.dir', '-v', 'd', join(root, 'p2')]);
  }
}

const fileEntry = (path: string, mode = 0o644): TreeEntry => ({
  path,
  type: 'file',
  mode,
  uid: 0,
  gid: 0,
  size: 0,
  mtimeMs: 1_600_000_000_000,
});

describe('parallel restore (queued small-file writes)', () => {
  let work: Awaited<ReturnType<typeof tempDir>>;
  beforeEach(async () => {
    work = await tempDir();
  });
  afterEach(async () => {
    await work.cleanup();
  });

  for (const format of ['chunked', 'tar'] as const) {
    it(`keeps every mode, owner, mtime, symlink, hardlink and xattr of a wide tree (${format})`, async () => {
      const source = join(work.path, 'source');
      const target = join(work.path, 'target');
      await mkdir(source);
      await mkdir(target);
      await buildWideTree(source);
      const storage = new FsRemoteStorage({ root: join(work.path, 'storage') });
      try {
        // The operator's setting that keeps FIFOs and set-id bits: this test is about fidelity.
        const store = new BackupStore(
          storage,
          { mode: 'per-owner' },
          { format, packSize: 256 * 1024, allowSpecialFiles: true },
        );
        const ref = { owner: 'o', workspaceId: `wide-${format}` };
        await store.backup(source, ref);
        await store.restore(target, ref);
      } finally {
        await storage.close();
      }
      expect(await describeTree(target)).toEqual(await describeTree(source));
      for (const i of [0, 10, 120, 230]) {
        const dir = `p${i % 6}/q${i % 5}`;
        expect((await lstat(join(target, dir, `hard${i}.txt`))).ino).toBe(
          (await lstat(join(target, dir, `f${i}.txt`))).ino,
        );
      }
    });
  }

  it('applies entries of the same path in archive order', async () => {
    const target = join(work.path, 'target');
    await mkdir(target);
    const archive = await tarOf([
      // the same file twice: the later one wins
      { header: { name: 'twice', size: 5, mode: 0o600 }, body: 'first' },
      { header: { name: 'twice', size: 6, mode: 0o640 }, body: 'second' },
      // a file, then a directory at its path
      { header: { name: 'becomes-dir', size: 4 }, body: 'file' },
      { header: { name: 'becomes-dir', type: 'directory', mode: 0o750 } },
      { header: { name: 'becomes-dir/inner', size: 5 }, body: 'inner' },
      // a file, then a symlink at its path
      { header: { name: 'becomes-link', size: 4 }, body: 'file' },
      { header: { name: 'becomes-link', type: 'symlink', linkname: 'twice' } },
      // a hardlink to a file written just before it
      { header: { name: 'target.txt', size: 6, mode: 0o4755 }, body: 'linked' },
      { header: { name: 'alias.txt', type: 'link', linkname: 'target.txt' } },
    ]);
    // Many more of them, so that a write still running when its successor arrives is all but certain.
    const many = await tarOf(
      Array.from({ length: 150 }, (_, i) => [
        { header: { name: `many/f${i}`, size: 4 }, body: 'file' },
        { header: { name: `many/f${i}`, type: 'directory', mode: 0o750 } },
        { header: { name: `many/l${i}`, size: 4 }, body: 'file' },
        { header: { name: `many/l${i}`, type: 'symlink', linkname: `f${i}` } },
      ]).flat(),
    );
    await extractTree(Readable.from([many]), target, { writeConcurrency: 16 });
    for (let i = 0; i < 150; i++) {
      expect((await lstat(join(target, `many/f${i}`))).isDirectory()).toBe(true);
      expect((await lstat(join(target, `many/l${i}`))).isSymbolicLink()).toBe(true);
    }
    await extractTree(Readable.from([archive]), target, { writeConcurrency: 16, allowSpecialFiles: true });
    expect(await readFile(join(target, 'twice'), 'utf8')).toBe('second');
    expect((await lstat(join(target, 'twice'))).mode & 0o7777).toBe(0o640);
    expect((await lstat(join(target, 'becomes-dir'))).isDirectory()).toBe(true);
    expect((await lstat(join(target, 'becomes-dir'))).mode & 0o7777).toBe(0o750);
    expect(await readFile(join(target, 'becomes-dir/inner'), 'utf8')).toBe('inner');
    expect((await lstat(join(target, 'becomes-link'))).isSymbolicLink()).toBe(true);
    expect(await readFile(join(target, 'alias.txt'), 'utf8')).toBe('linked');
    expect((await lstat(join(target, 'alias.txt'))).ino).toBe((await lstat(join(target, 'target.txt'))).ino);
    expect((await lstat(join(target, 'alias.txt'))).mode & 0o7777).toBe(0o4755);
  });

  it('refuses an entry below a file that is still being written', async () => {
    const target = join(work.path, 'target');
    await mkdir(target);
    const archive = await tarOf([
      { header: { name: 'plain', size: 4 }, body: 'file' },
      { header: { name: 'plain/child', size: 5 }, body: 'child' },
    ]);
    const error = await extractTree(Readable.from([archive]), target).catch((e: unknown) => e);
    expect(isWorkbayError(error, 'invalid-argument'), String(error)).toBe(true);
    expect(String((error as Error).message)).toMatch(/not a directory/);
    expect(await readFile(join(target, 'plain'), 'utf8')).toBe('file');
  });

  it('surfaces a failed queued write from drain, finish and the next call', async () => {
    const target = join(work.path, 'target');
    await mkdir(join(target, 'occupied'), { recursive: true });
    const writer = new SafeTreeWriter(target, { writeConcurrency: 4 });
    // The directory is only found by the write itself (O_EXCL), after queueSmallFile returned.
    await writer.queueSmallFile(fileEntry('occupied'), Buffer.from('x'));
    const drained = await writer.drain().catch((e: unknown) => e);
    expect(isWorkbayError(drained, 'invalid-argument'), String(drained)).toBe(true);
    expect(String((drained as Error).message)).toMatch(/would replace a directory/);
    await expect(writer.queueSmallFile(fileEntry('other'), Buffer.from('y'))).rejects.toThrow(/replace a directory/);
    await expect(writer.finish()).rejects.toThrow(/replace a directory/);
    expect((await lstat(join(target, 'occupied'))).isDirectory()).toBe(true);
  });

  it('creates sibling directories with a missing parent concurrently', async () => {
    const target = join(work.path, 'target');
    await mkdir(target);
    const writer = new SafeTreeWriter(target);
    const dir = (path: string): TreeEntry => ({ ...fileEntry(path, 0o755), type: 'directory' });
    await Promise.all(['a/b', 'a/c', 'a/d', 'a/e/f'].map((path) => writer.directory(dir(path))));
    await Promise.all(
      ['a/b/1', 'a/c/2', 'a/e/f/3'].map((path) => writer.queueSmallFile(fileEntry(path), Buffer.from(path))),
    );
    await writer.finish();
    expect(await readFile(join(target, 'a/e/f/3'), 'utf8')).toBe('a/e/f/3');
    for (const path of ['a', 'a/b', 'a/c', 'a/d', 'a/e', 'a/e/f'])
      expect((await lstat(join(target, path))).isDirectory()).toBe(true);
  });
});
