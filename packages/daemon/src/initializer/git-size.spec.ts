/**
 * The git initializer's cheap paths (issue 12): the checkout's bytes from git's index instead of a walk, and content
 * that is the workspace user's as it is written, so the daemon's ownership walk can be skipped. Real git, real
 * ownership (as root).
 */
import { chown, lstat, mkdir, readFile, readdir, rm, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Git } from '../git/git.js';
import { createLogger } from '../health/logger.js';
import { createRepo, git, scratch } from '../test-support/git-server.js';
import type { TestRepo } from '../test-support/git-server.js';
import { treeBytes } from '../util/du.js';
import type { InitializerContext } from './context.js';
import { checkoutBytes, indexedBytes } from './git-size.js';
import { runInitializer } from './run.js';
import type { GitInitializerSpec } from './types.js';

const isRoot = process.getuid?.() === 0;
const user = { uid: 201_777, gid: 201_778 };

/** Sum of the apparent sizes of the tracked files (symlinks: the link itself). */
async function trackedBytes(location: string): Promise<number> {
  let total = 0;
  for (const path of git(location, 'ls-files', '-z').split('\0').filter(Boolean)) {
    total += (await lstat(join(location, path))).size;
  }
  return total;
}

/** Entries below `root` (the root included) not owned by `user`. */
async function foreignOwned(root: string): Promise<string[]> {
  const out: string[] = [];
  const visit = async (path: string, name: string): Promise<void> => {
    const info = await lstat(path);
    if (info.uid !== user.uid || info.gid !== user.gid) out.push(`${name} (${info.uid}:${info.gid})`);
    if (info.isDirectory()) for (const child of await readdir(path)) await visit(join(path, child), `${name}/${child}`);
  };
  await visit(root, '.');
  return out;
}

describe('git checkout bytes and ownership', () => {
  let repos: Awaited<ReturnType<typeof scratch>>;
  let repo: TestRepo;
  let n = 0;

  beforeAll(async () => {
    repos = await scratch();
    repo = await createRepo(repos.path, 'repo', {
      'empty.txt': '',
      'deep/er/still/deeper/file.bin': 'x'.repeat(70_000),
      [`${'long-name-'.repeat(20)}.txt`]: 'long\n',
    });
    // A symlink in the repository: its index size is the link's, as lstat says.
    const work = join(repos.path, 'repo-work');
    await symlink('README.md', join(work, 'link'));
    git(work, 'add', 'link');
    git(work, 'commit', '-q', '-m', 'link');
    git(work, 'push', '-q', repo.bare, 'main:main');
  });
  afterAll(async () => {
    await repos?.cleanup();
  });

  async function clone(): Promise<string> {
    const dir = join(repos.path, `clone-${++n}`);
    git(repos.path, 'clone', '-q', repo.url, dir);
    return dir;
  }

  it('reads the sizes of a checkout from its index, as a walk would', async () => {
    const dir = await clone();
    const files = await trackedBytes(dir);
    expect(await indexedBytes(join(dir, '.git', 'index'))).toBe(files);
    expect(await checkoutBytes(dir)).toBe(files + (await treeBytes(join(dir, '.git'), { apparent: true })));
    // Only directories differ from a full walk.
    expect(await treeBytes(dir, { apparent: true })).toBeGreaterThan(files);
  });

  it('walks instead when the index cannot say it exactly', async () => {
    const walked = async (dir: string): Promise<void> => {
      expect(await indexedBytes(join(dir, '.git', 'index'))).toBeUndefined();
      expect(await checkoutBytes(dir)).toBe(await treeBytes(dir, { apparent: true }));
    };
    // Version 4 (compressed paths).
    const v4 = await clone();
    git(v4, 'update-index', '--index-version', '4');
    await walked(v4);
    // A file git did not write (skip-worktree), removed from the work tree.
    const sparse = await clone();
    git(sparse, 'update-index', '--skip-worktree', 'empty.txt');
    await rm(join(sparse, 'empty.txt'));
    await walked(sparse);
    // A damaged index: its checksum does not match.
    const damaged = await clone();
    const index = await readFile(join(damaged, '.git', 'index'));
    index[20] = index[20]! ^ 0xff;
    await writeFile(join(damaged, '.git', 'index'), index);
    await walked(damaged);
    // An index that is a link (to a valid index elsewhere) is not followed.
    const linked = await clone();
    const other = await clone();
    await rm(join(linked, '.git', 'index'));
    await symlink(join(other, '.git', 'index'), join(linked, '.git', 'index'));
    await walked(linked);
    // Submodules: their files are in their own indexes.
    const withModules = await clone();
    await writeFile(join(withModules, '.gitmodules'), '');
    expect(await checkoutBytes(withModules)).toBe(await treeBytes(withModules, { apparent: true }));
  });

  it.skipIf(!isRoot)("leaves everything it writes the workspace user's: no ownership walk is needed", async () => {
    const root = join(repos.path, `content-${++n}`);
    await mkdir(root);
    // As the content service leaves it: the content directory is the user's.
    await chown(root, user.uid, user.gid);
    const base: GitInitializerSpec = {
      remoteUri: repo.url,
      targetMode: 'remote-head',
      cloneTarget: '',
      checkoutLocation: '',
      customConfig: {},
      auth: { method: 'none' },
      fullClone: false,
    };
    const ctx: InitializerContext = {
      root,
      git: new Git(join(repos.path, 'git-tmp'), { allowLocalRemotes: true }),
      owner: 'tester',
      workspaceId: 'size-owned',
      logger: createLogger({ level: 'silent' }),
      gitRetry: { initialDelayMs: 10, maxElapsedMs: 100 },
      downloadTimeoutMs: 10_000,
      workspaceUser: user,
    };
    const outcome = await runInitializer(
      {
        kind: 'composite',
        children: [
          // The root: the daemon appends to .git/config and .git/info/exclude, git adds a remote as the user.
          { kind: 'git', git: { ...base, upstreamRemoteUri: repo.url } },
          // A nested location (the daemon creates the directories on the way), another branch fetched as the user.
          {
            kind: 'git',
            git: { ...base, checkoutLocation: 'nested/deeper', targetMode: 'remote-branch', cloneTarget: 'feature' },
          },
        ],
      },
      ctx,
    );
    expect(outcome.contentOwned).toBe(true);
    expect(await foreignOwned(root)).toEqual([]);
    expect(await readFile(join(root, '.git', 'info', 'exclude'), 'utf8')).toContain('/.workbay/');
    expect(git(join(root, 'nested', 'deeper'), 'rev-parse', 'HEAD')).toBe(repo.commits['feature']);
    // The metrics count the checkouts from their indexes.
    const rootBytes = outcome.metrics[0]!.bytes;
    expect(rootBytes).toBe(await checkoutBytes(root));
    expect(outcome.metrics[1]!.bytes).toBe(await checkoutBytes(join(root, 'nested', 'deeper')));
  });
});
