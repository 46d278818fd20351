/**
 * Opening listed content files beneath their root (red team round 10, F3): a directory a workspace swapped for a
 * link to a host directory must fail the open, not open the host file of that name (as root: a FIFO blocked the
 * daemon, a device node would have been opened). Real files, FIFOs and links.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import { mkdir, mkdtemp, rename, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { beneathOpener, isGoneOrMoved, openFileBeneath } from './pinned-path.js';

describe('opening beneath a root', () => {
  let dir: string;
  let root: string;
  let host: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'workbay-beneath-'));
    root = join(dir, 'content');
    host = join(dir, 'host');
    await mkdir(join(root, 'a', 'b'), { recursive: true });
    await mkdir(host);
    await writeFile(join(root, 'a', 'b', 'file'), 'content');
    await writeFile(join(root, 'a', 'sibling'), 'sibling');
    await writeFile(join(root, 'top'), 'top');
    await writeFile(join(host, 'file'), 'host secret');
    execFileSync('mkfifo', [join(host, 'fifo')]);
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  const read = (fd: number): string => {
    try {
      return fs.readFileSync(fd, 'utf8');
    } finally {
      fs.closeSync(fd);
    }
  };
  const failure = (fn: () => unknown): NodeJS.ErrnoException => {
    try {
      fn();
    } catch (error) {
      return error as NodeJS.ErrnoException;
    }
    throw new Error('expected the open to fail');
  };

  it('opens files in walk order through one chain of directories', () => {
    const beneath = beneathOpener(fs, root);
    try {
      expect(read(beneath.open('a/b/file', fs.constants.O_RDONLY))).toBe('content');
      expect(read(beneath.open('a/sibling', fs.constants.O_RDONLY))).toBe('sibling');
      expect(read(beneath.open('top', fs.constants.O_RDONLY))).toBe('top');
    } finally {
      beneath.close();
    }
  });

  it('fails where a directory on the way became a link to a host directory, opening nothing there', async () => {
    const beneath = beneathOpener(fs, root);
    try {
      await rename(join(root, 'a', 'b'), join(root, 'a', 'b-moved'));
      await symlink(host, join(root, 'a', 'b'));
      // By path, root would open the host's file, and block on its FIFO.
      for (const name of ['file', 'fifo']) {
        const error = failure(() => beneath.open(`a/b/${name}`, fs.constants.O_RDONLY));
        expect(isGoneOrMoved(error)).toBe(true);
        // O_DIRECTORY | O_NOFOLLOW on the link: ENOTDIR.
        expect(error.code).toBe('ENOTDIR');
      }
      // A directory swapped for a file: ENOTDIR, also gone or moved.
      await rm(join(root, 'a', 'b'));
      await writeFile(join(root, 'a', 'b'), 'not a directory');
      expect(failure(() => beneath.open('a/b/file', fs.constants.O_RDONLY)).code).toBe('ENOTDIR');
    } finally {
      beneath.close();
      await rm(join(root, 'a', 'b'), { force: true });
      await rename(join(root, 'a', 'b-moved'), join(root, 'a', 'b'));
    }
  });

  it('opens a FIFO in the content without blocking, and openFileBeneath refuses it', async () => {
    execFileSync('mkfifo', [join(root, 'a', 'pipe')]);
    const beneath = beneathOpener(fs, root);
    try {
      const fd = beneath.open('a/pipe', fs.constants.O_RDONLY);
      expect(fs.fstatSync(fd).isFIFO()).toBe(true);
      fs.closeSync(fd);
    } finally {
      beneath.close();
    }
    expect(await openFileBeneath(root, 'a/pipe')).toBeUndefined();
    const handle = await openFileBeneath(root, 'a/b/file');
    expect(await handle?.readFile('utf8')).toBe('content');
    await handle?.close();
  });
});
