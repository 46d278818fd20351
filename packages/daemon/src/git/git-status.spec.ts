import { writeFile, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { gitStatusLimits } from '@workbay/api';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { git as testGit, scratch } from '../test-support/git-server.js';
import { Git } from './git.js';
import { gitStatus } from './git-status.js';

// The status taken at disposal is content's words (branch, paths, subjects) kept in the workspace's status for
// every client: a hostile repository must not make it large.
describe('gitStatus of hostile content (real git)', () => {
  let root: Awaited<ReturnType<typeof scratch>>;
  let git: Git;

  beforeAll(async () => {
    root = await scratch('workbay-git-status-');
    git = new Git(join(root.path, 'tmp'), {
      allowLocalRemotes: true,
      localCommandTimeoutMs: 20_000,
      addresses: { allowedNetworks: [] },
    });
  });
  afterAll(async () => {
    await root.cleanup();
  });

  it('clips long branch names, paths and subjects and bounds the lists, keeping the real totals', async () => {
    const dir = join(root.path, 'bloat');
    await mkdir(dir);
    testGit(dir, 'init', '-q', '-b', 'main');
    testGit(
      dir,
      '-c',
      'user.email=a@b',
      '-c',
      'user.name=a',
      'commit',
      '-q',
      '--allow-empty',
      '-m',
      's'.repeat(20_000),
    );
    // A 3,800-character branch name (git allows it) and 150 untracked files with ~3,700-character paths.
    testGit(dir, 'checkout', '-q', '-b', Array.from({ length: 19 }, () => 'b'.repeat(200)).join('/'));
    const deep = join(dir, ...Array.from({ length: 14 }, () => 'd'.repeat(250)));
    await mkdir(deep, { recursive: true });
    for (let i = 0; i < 150; i++) await writeFile(join(deep, `f${String(i).padStart(3, '0')}`.repeat(60)), '');

    const status = await gitStatus(git, dir);
    expect(status).toBeDefined();
    expect(status!.branch.length).toBeLessThanOrEqual(gitStatusLimits.stringChars);
    expect(status!.branch.endsWith('…')).toBe(true);
    expect(status!.totalUntrackedFiles).toBe(150);
    expect(status!.untrackedFiles.length).toBeGreaterThan(0);
    expect(status!.untrackedFiles.length).toBeLessThan(150);
    expect(status!.totalUnpushedCommits).toBe(1);
    const chars = [...status!.untrackedFiles, ...status!.uncommittedFiles, ...status!.unpushedCommits].reduce(
      (sum, s) => sum + s.length,
      0,
    );
    expect(chars).toBeLessThanOrEqual(gitStatusLimits.listChars);
    expect(JSON.stringify(status).length).toBeLessThan(gitStatusLimits.listChars + 4 * gitStatusLimits.stringChars);
  });
});
