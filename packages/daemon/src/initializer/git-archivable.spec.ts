/**
 * A repository whose checkout no archive can hold (red team round 9, K2 and U1) fails the git initializer, saying
 * why, instead of giving a workspace whose work can never be backed up. Real git, crafted trees written with
 * `git mktree`; one that archives fine (non-ASCII UTF-8 names, 200 levels) still clones.
 */
import { execFileSync } from 'node:child_process';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isWorkbayError } from '@workbay/api';
import { Git } from '../git/git.js';
import { plainGitInitializer, scratch } from '../test-support/git-server.js';
import { initializerContext } from '../test-support/initializer-context.js';
import { runGitInitializer } from './git-initializer.js';

/** A bare repository whose one commit holds `leaf` (a file named with these bytes) below `depth` directories `d`. */
function craftedRepository(dir: string, leaf: Buffer, depth: number, directory = 'd'): void {
  execFileSync('git', ['init', '-q', '--bare', '-b', 'main', dir]);
  const run = (args: string[], input?: Buffer | string): string =>
    execFileSync('git', args, { cwd: dir, input, encoding: 'utf8' }).trim();
  const blob = run(['hash-object', '-w', '--stdin'], 'x\n');
  // -z: names are taken as bytes up to the NUL.
  let tree = run(['mktree', '-z'], Buffer.concat([Buffer.from(`100644 blob ${blob}\t`), leaf, Buffer.from([0])]));
  for (let level = 0; level < depth; level++) tree = run(['mktree', '-z'], `040000 tree ${tree}\t${directory}\0`);
  const env = { ...process.env, GIT_AUTHOR_NAME: 'a', GIT_AUTHOR_EMAIL: 'a@b', GIT_COMMITTER_NAME: 'a' };
  const commit = execFileSync('git', ['commit-tree', tree, '-m', 'crafted'], {
    cwd: dir,
    env: { ...env, GIT_COMMITTER_EMAIL: 'a@b' },
    encoding: 'utf8',
  }).trim();
  run(['update-ref', 'refs/heads/main', commit]);
}

describe('a checkout no archive can hold fails the git initializer', () => {
  let repos: Awaited<ReturnType<typeof scratch>>;
  beforeAll(async () => {
    repos = await scratch('workbay-git-archivable-');
  });
  afterAll(async () => {
    await repos?.cleanup();
  });

  const clone = async (
    name: string,
    leaf: Buffer,
    depth: number,
    directory?: string,
  ): Promise<{ root: string; outcome: unknown }> => {
    const bare = join(repos.path, `${name}.git`);
    craftedRepository(bare, leaf, depth, directory);
    const ctx = {
      ...(await initializerContext(repos.path)),
      git: new Git(join(repos.path, 'tmp'), { allowLocalRemotes: true }),
    };
    const outcome = await runGitInitializer(plainGitInitializer(`file://${bare}`), ctx, 'initializer.git').catch(
      (error: unknown) => error,
    );
    return { root: ctx.root, outcome };
  };

  it('a file name that is not UTF-8: FAILED_PRECONDITION naming it', async () => {
    const { outcome } = await clone('latin1', Buffer.from('caf\xe9.txt', 'latin1'), 1);
    expect(isWorkbayError(outcome, 'failed-precondition')).toBe(true);
    expect((outcome as Error).message).toMatch(
      /^the repository's checkout cannot be backed up: the content has a name that is not valid UTF-8 \('project\/d\/"caf/,
    );
  });

  it('directories nested deeper than archives take: FAILED_PRECONDITION', async () => {
    const { outcome } = await clone('deep', Buffer.from('leaf'), 1030);
    expect(isWorkbayError(outcome, 'failed-precondition')).toBe(true);
    expect((outcome as Error).message).toMatch(
      /cannot be backed up: the content nests directories more than 1024 deep/,
    );
  });

  it('a file whose path is longer than a restore can write on every node: FAILED_PRECONDITION', async () => {
    // Round 11 K1: git and this node could hold it (each directory below PATH_MAX), every restore failed.
    const { outcome } = await clone('long', Buffer.from('g'.repeat(220)), 14, 'e'.repeat(250));
    expect(isWorkbayError(outcome, 'failed-precondition')).toBe(true);
    expect((outcome as Error).message).toMatch(/cannot be backed up: the content has a path longer than 3584 bytes/);
  });

  it('non-ASCII UTF-8 names, 200 levels deep, clone as before', async () => {
    const { root, outcome } = await clone('fine', Buffer.from('café-日本.txt'), 200);
    expect(outcome).toEqual({ location: 'project' });
    expect(await readdir(join(root, 'project'))).toContain('d');
  });
});
