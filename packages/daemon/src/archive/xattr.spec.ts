/**
 * Reading a tree's xattrs (real getfattr): as the daemon, and as the content's owner chrooted into a root holding only
 * the content and the system directories, the way backups and snapshots of a workspace read them (red team round 8
 * raced a root getfattr into another owner's xattrs). Bounded output (a dump of shared xattr blocks took the daemon to
 * 1 GiB).
 */
import { execFileSync } from 'node:child_process';
import { chmod, chown, mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { isWorkbayError } from '../errors.js';
import { confinedArgs, minimalRootContent } from '../util/confined-command.js';
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

  it('reads every entry of the content as the owner too, those the owner made unreadable included, under the same relative paths', async () => {
    const asDaemon = await readTreeXattrs(root);
    expect(asDaemon.get('dir with space/own.txt')?.['user.own']?.toString()).toBe('mine');
    expect(asDaemon.get('root-only.txt')?.['user.secret']?.toString()).toBe('not-for-the-owner');

    // A mode-000 file and a mode-000 directory: their user xattrs need read permission, which the owner gave up. Read
    // as the owner without CAP_DAC_READ_SEARCH, a backup lost them.
    await writeFile(join(root, 'locked.txt'), 'x');
    await mkdir(join(root, 'locked-dir'));
    await writeFile(join(root, 'locked-dir', 'inner.txt'), 'y');
    setXattr(join(root, 'locked.txt'), 'user.kept', 'a');
    setXattr(join(root, 'locked-dir', 'inner.txt'), 'user.kept', 'b');
    execFileSync('chown', ['-R', `${owner}:${owner}`, join(root, 'locked.txt'), join(root, 'locked-dir')]);
    await chmod(join(root, 'locked.txt'), 0);
    await chmod(join(root, 'locked-dir'), 0);

    const asOwner = await readTreeXattrs(root, { uid: owner, gid: owner });
    expect([...asOwner.keys()].sort()).toEqual([
      'dir with space/own.txt',
      'locked-dir/inner.txt',
      'locked.txt',
      'root-only.txt',
    ]);
    expect(asOwner.get('locked.txt')?.['user.kept']?.toString()).toBe('a');
    expect(asOwner.get('locked-dir/inner.txt')?.['user.kept']?.toString()).toBe('b');
    expect(asOwner.get('root-only.txt')?.['user.secret']?.toString()).toBe('not-for-the-owner');
  });

  it('reads in a root where a link leads nowhere but into the content and the read-only system directories', async () => {
    // What a link swapped in mid-walk could reach: getfattr never follows a link it sees (-P), so the root it runs in is
    // checked directly, with the same confinement, by a shell in getfattr's place.
    const outside = join(work, 'host-file');
    await writeFile(outside, 'host');
    await symlink(outside, join(root, 'link-out'));
    const minimalRoot = await mkdtemp(join(tmpdir(), 'workbay-xattr-root-'));
    try {
      const seen = execFileSync(
        'unshare',
        confinedArgs(
          {
            uid: owner,
            gid: owner,
            mount: { source: root, target: minimalRoot },
            minimalRoot,
            capabilities: ['dac_read_search'],
          },
          [
            'sh',
            '-c',
            'pwd; ls /; cat link-out 2>&1 || true; test -e /etc/passwd && echo etc; test -e /proc/1 && echo proc; ' +
              'touch /usr/probe 2>&1 || true; touch /probe 2>&1 || true; cat root-only.txt',
          ],
        ),
        { encoding: 'utf8' },
      );
      const lines = seen.trim().split('\n');
      expect(lines[0]).toBe(minimalRootContent);
      expect(lines).toContain('content');
      expect(lines).toContain('usr');
      expect(lines).not.toContain('tmp');
      expect(seen).toMatch(/link-out: No such file or directory/);
      expect(lines).not.toContain('etc');
      expect(lines).not.toContain('proc');
      expect(seen).toMatch(/\/usr\/probe.*Read-only file system/);
      expect(seen).toMatch(/\/probe.*Read-only file system/);
      // CAP_DAC_READ_SEARCH: the content's root-only file is read (it is the workspace's content, archived anyway).
      expect(lines.at(-1)).toBe('root');
    } finally {
      await rm(minimalRoot, { recursive: true, force: true });
    }
  });

  it('fails, rather than archive without xattrs, when the namespace to read them in cannot be set up', async () => {
    const error = await readTreeXattrs(join(work, 'no-such-content'), { uid: owner, gid: owner }).catch(
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
    const error = await readTreeXattrs(root, { uid: owner, gid: owner }, 64 * 1024).catch((e: unknown) => e);
    expect(isWorkbayError(error, 'failed-precondition'), String(error)).toBe(true);
    expect((error as Error).message).toMatch(/more than 65536 bytes/);
  });
});
