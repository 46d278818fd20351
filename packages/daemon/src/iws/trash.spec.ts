import { chmod, lstat, mkdir, mkdtemp, readdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Trash } from './trash.js';

// The trash of the in-workspace host on a real filesystem: what it removes, and what it never follows.

describe('Trash', () => {
  let scratch: string;
  let trash: Trash;
  let victim: string;

  beforeEach(async () => {
    scratch = await mkdtemp(join(tmpdir(), 'iws-trash-'));
    trash = new Trash(join(scratch, '.trash'));
    await trash.ensure();
    victim = join(scratch, 'victim');
    await mkdir(join(victim, 'sub'), { recursive: true });
    await writeFile(join(victim, 'file'), 'keep');
    await writeFile(join(victim, 'sub', 'file'), 'keep');
  });

  afterEach(async () => {
    if (scratch) await rm(scratch, { recursive: true, force: true });
  });

  const victimIntact = async (): Promise<void> => {
    expect((await readdir(victim)).sort()).toEqual(['file', 'sub']);
    expect(await readFile(join(victim, 'file'), 'utf8')).toBe('keep');
    expect(await readFile(join(victim, 'sub', 'file'), 'utf8')).toBe('keep');
  };

  it('is a 0700 directory of the daemon', async () => {
    const info = await lstat(trash.dir);
    expect([info.isDirectory(), info.mode & 0o7777, info.uid]).toEqual([true, 0o700, process.getuid!()]);
    await trash.ensure();
  });

  it('removeName unlinks a socket, file or link (never its target) and moves a directory whole into the trash', async () => {
    const dir = join(scratch, 'ws');
    await mkdir(join(dir, 'daemon.sock', 'deeper'), { recursive: true });
    await symlink(victim, join(dir, 'daemon.sock', 'deeper', 'link'));
    await trash.removeName(join(dir, 'daemon.sock'));
    expect(await readdir(dir)).toEqual([]);
    expect(await readdir(trash.dir)).toHaveLength(1);

    await symlink(victim, join(dir, 'daemon.sock'));
    await trash.removeName(join(dir, 'daemon.sock'));
    await writeFile(join(dir, 'daemon.sock'), '');
    await trash.removeName(join(dir, 'daemon.sock'));
    await trash.removeName(join(dir, 'daemon.sock'));
    expect(await readdir(dir)).toEqual([]);
    expect(await readdir(trash.dir)).toHaveLength(1);
    await victimIntact();
  });

  it('empties trees of any depth without following the links in them', async () => {
    const tree = join(scratch, 'tree');
    let deepest = tree;
    for (let i = 0; i < 300; i++) deepest = join(deepest, 'd');
    await mkdir(deepest, { recursive: true });
    await symlink(victim, join(deepest, 'link'));
    await symlink(join(victim, 'file'), join(tree, 'file-link'));
    await mkdir(join(tree, 'closed'));
    await writeFile(join(tree, 'closed', 'inside'), 'x');
    await chmod(join(tree, 'closed'), 0o000);
    expect(await trash.moveIn(tree)).toBe(true);
    expect(await trash.moveIn(tree)).toBe(false);
    // Modes do not stop the daemon when it is root; a non-root daemon cannot open a 000 directory of its own.
    if (process.getuid?.() !== 0) await chmod(join(trash.dir, (await readdir(trash.dir))[0]!, 'closed'), 0o700);
    expect(await trash.empty()).toBe(true);
    expect(await readdir(trash.dir)).toEqual([]);
    await victimIntact();
  });

  it('does bounded work per call and finishes on the next', async () => {
    const tree = join(scratch, 'wide');
    await mkdir(tree);
    for (let i = 0; i < 50; i++) await writeFile(join(tree, `f${i}`), '');
    await trash.moveIn(tree);
    expect(await trash.empty(10)).toBe(false);
    expect(await trash.empty()).toBe(true);
    expect(await readdir(trash.dir)).toEqual([]);
  });
});
