/**
 * Reading a tree's xattrs (real getfattr): as the daemon, and as the content's owner with directories hidden, the way
 * backups and snapshots of a workspace read them (red team round 8 raced a root getfattr into another owner's
 * xattrs). Bounded output (a dump of shared xattr blocks took the daemon to 1 GiB).
 */
import { execFileSync } from 'node:child_process';
import { chown, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { isWorkbayError } from '../errors.js';
import { readTreeXattrs, xattrSupport } from './xattr.js';

const isRoot = process.getuid?.() === 0;
const owner = 340_001;

const setXattr = (path: string, name: string, value: string): void => {
  execFileSync('setfattr', ['-h', '-n', name, '-v', value, path]);
};

describe.runIf(isRoot)('readTreeXattrs', () => {
  let work: string;
  let root: string;
  beforeEach(async () => {
    expect((await xattrSupport()).available).toBe(true);
    work = await mkdtemp(join(tmpdir(), 'workbay-xattr-read-'));
    root = join(work, 'content');
    await mkdir(join(root, 'dir with space'), { recursive: true });
    await writeFile(join(root, 'dir with space', 'own.txt'), 'own');
    await writeFile(join(root, 'root-only.txt'), 'root', { mode: 0o600 });
    execFileSync('chown', ['-R', `${owner}:${owner}`, root]);
    await chown(join(root, 'root-only.txt'), 0, 0);
    setXattr(join(root, 'dir with space', 'own.txt'), 'user.own', 'mine');
    setXattr(join(root, 'root-only.txt'), 'user.secret', 'not-for-the-owner');
  });
  afterEach(async () => {
    await rm(work, { recursive: true, force: true });
  });

  it('as the daemon reads every entry; as the owner only what the owner may read, under the same relative paths', async () => {
    const asDaemon = await readTreeXattrs(root);
    expect(asDaemon.get('dir with space/own.txt')?.['user.own']?.toString()).toBe('mine');
    expect(asDaemon.get('root-only.txt')?.['user.secret']?.toString()).toBe('not-for-the-owner');

    const hidden = join(work, 'neighbour');
    await mkdir(hidden);
    const asOwner = await readTreeXattrs(root, { uid: owner, gid: owner, hide: [hidden] });
    expect([...asOwner.keys()]).toEqual(['dir with space/own.txt']);
    expect(asOwner.get('dir with space/own.txt')?.['user.own']?.toString()).toBe('mine');
  });

  it('fails, rather than archive without xattrs, when the namespace to read them in cannot be set up', async () => {
    const error = await readTreeXattrs(join(work, 'no-such-content'), { uid: owner, gid: owner, hide: [] }).catch(
      (e: unknown) => e,
    );
    expect(isWorkbayError(error, 'internal'), String(error)).toBe(true);
    expect((error as Error).message).toMatch(/cannot read the xattrs as the content's owner: mount: /);
  });

  it('fails with FAILED_PRECONDITION, not a huge string, past its output bound', async () => {
    for (let i = 0; i < 40; i++) {
      const file = join(root, `f${i}`);
      await writeFile(file, '');
      setXattr(file, 'user.big', 'x'.repeat(3_000));
    }
    const error = await readTreeXattrs(root, { uid: owner, gid: owner, hide: [] }, 64 * 1024).catch((e: unknown) => e);
    expect(isWorkbayError(error, 'failed-precondition'), String(error)).toBe(true);
    expect((error as Error).message).toMatch(/more than 65536 bytes/);
  });
});
