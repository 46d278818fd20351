/**
 * What a crafted repository may cost the node through the daemon's git (red team, round 5), as root with git running
 * as the workspace's user: its data memory is capped (`git.maxMemory`) and running out is not retried; an oversized
 * `.git/config` is refused before git reads it. Real git.
 */
import { execFileSync } from 'node:child_process';
import { chown, mkdir, truncate } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isWorkbayError } from '@workbay/api';
import { Git } from '../git/git.js';
import { git, plainGitInitializer, scratch } from '../test-support/git-server.js';
import { initializerContext } from '../test-support/initializer-context.js';
import { errorOf } from '../test-support/outcomes.js';
import { runGitInitializer } from './git-initializer.js';

const isRoot = process.getuid?.() === 0;
const user = { uid: 201_877, gid: 201_877 };

/**
 * A bare repository of a few KiB whose one commit names `fanout ** depth` paths: each tree level has `fanout` entries
 * that are all the same subtree (the red team's was 16 ** 6, whose checkout took git to 2.2 GiB).
 */
function treeBomb(dir: string, fanout: number, depth: number): void {
  const run = (args: string[], input?: string): string =>
    execFileSync('git', args, { cwd: dir, input, encoding: 'utf8' }).trim();
  execFileSync('git', ['init', '-q', '--bare', '-b', 'main', dir]);
  let entry = { mode: '100644', type: 'blob', hash: run(['hash-object', '-w', '--stdin'], 'x\n') };
  for (let level = 0; level < depth; level++) {
    const lines = Array.from(
      { length: fanout },
      (_, i) => `${entry.mode} ${entry.type} ${entry.hash}\t${level ? 'd' : 'f'}${i}`,
    );
    entry = { mode: '040000', type: 'tree', hash: run(['mktree'], `${lines.join('\n')}\n`) };
  }
  const env = {
    ...process.env,
    GIT_AUTHOR_NAME: 'a',
    GIT_AUTHOR_EMAIL: 'a@b',
    GIT_COMMITTER_NAME: 'a',
    GIT_COMMITTER_EMAIL: 'a@b',
  };
  const commit = execFileSync('git', ['commit-tree', entry.hash, '-m', 'bomb'], {
    cwd: dir,
    env,
    encoding: 'utf8',
  }).trim();
  run(['update-ref', 'refs/heads/main', commit]);
}

describe.runIf(isRoot)("a crafted repository against the daemon's git (as root)", () => {
  let repos: Awaited<ReturnType<typeof scratch>>;
  beforeAll(async () => {
    repos = await scratch('workbay-git-bounds-');
  });
  afterAll(async () => {
    await repos?.cleanup();
  });

  it('a tree of a million paths in a few KiB runs out of git.maxMemory and fails RESOURCE_EXHAUSTED, not retried', async () => {
    const bare = join(repos.path, 'bomb.git');
    treeBomb(bare, 16, 5);
    const ctx = {
      ...(await initializerContext(repos.path, { maxElapsedMs: 600_000 })),
      git: new Git(join(repos.path, 'tmp'), { allowLocalRemotes: true, maxMemoryBytes: 64 * 1024 ** 2 }),
      workspaceUser: user,
    };
    await chown(ctx.root, user.uid, user.gid);
    // Retried, it would fail again and again for ten minutes (maxElapsedMs), and this would time out.
    const error = await errorOf(runGitInitializer(plainGitInitializer(`file://${bare}`), ctx, 'initializer.git'));
    expect(isWorkbayError(error, 'resource-exhausted')).toBe(true);
    expect(String((error as Error).message)).toMatch(/git\.maxMemory/);
  });

  it('refuses a sparse .git/config of 3 GiB before git reads it', async () => {
    const work = join(repos.path, 'sparse-config');
    await mkdir(work);
    git(work, 'init', '-q');
    await truncate(join(work, '.git', 'config'), 3 * 1024 ** 3);
    await chown(work, user.uid, user.gid);
    const error = await errorOf(
      new Git(join(repos.path, 'tmp2')).run(['status'], { cwd: work, contentRoot: repos.path, user }),
    );
    expect(isWorkbayError(error, 'failed-precondition')).toBe(true);
    expect(String((error as Error).message)).toMatch(/\.git\/config is larger than 1048576 bytes/);
  });
});
