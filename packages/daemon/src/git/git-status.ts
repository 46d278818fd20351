import { gitStatusLimits, limitGitStatus } from '@workbay/api';
import type { GitStatusSummary } from '@workbay/api';
import type { Git } from './git.js';
import { inspectWorkingCopy } from './working-copy.js';

/** The state of a working copy, as reported on disposal (the shared domain type of `@workbay/api`). */
export type { GitStatusSummary } from '@workbay/api';

/** Lists are cut to this many entries; the totals carry the real counts. */
export const gitStatusListLimit = gitStatusLimits.listEntries;

/** Parses `git status --porcelain=v2 --branch -z`. */
export function parsePorcelainV2(output: string): {
  branch: string;
  head: string;
  upstream?: string;
  uncommitted: string[];
  untracked: string[];
} {
  let branch = '';
  let head = '';
  let upstream: string | undefined;
  const uncommitted: string[] = [];
  const untracked: string[] = [];
  const records = output.split('\0');
  for (let i = 0; i < records.length; i++) {
    const record = records[i] as string;
    if (record === '') continue;
    if (record.startsWith('# branch.oid ')) head = record.slice('# branch.oid '.length);
    else if (record.startsWith('# branch.head ')) branch = record.slice('# branch.head '.length);
    else if (record.startsWith('# branch.upstream ')) upstream = record.slice('# branch.upstream '.length);
    else if (record.startsWith('1 ')) uncommitted.push(record.split(' ').slice(8).join(' '));
    else if (record.startsWith('2 ')) {
      uncommitted.push(record.split(' ').slice(9).join(' '));
      i++; // the original path follows as its own record
    } else if (record.startsWith('u ')) uncommitted.push(record.split(' ').slice(10).join(' '));
    else if (record.startsWith('? ')) untracked.push(record.slice(2));
  }
  if (head === '(initial)') head = '';
  if (branch === '(detached)') branch = '';
  return { branch, head, ...(upstream !== undefined ? { upstream } : {}), uncommitted, untracked };
}

/**
 * Computes the status of the working copy at `cwd` with real git; undefined when `cwd` has no `.git`. The
 * content is hostile: git runs with the safe configuration of {@link Git} (as the owner of `contentRoot` when the
 * daemon is root) and throws UnsafeRepositoryError for a working copy it must not touch.
 */
export async function gitStatus(git: Git, cwd: string, contentRoot?: string): Promise<GitStatusSummary | undefined> {
  if (!(await inspectWorkingCopy(cwd, contentRoot))) return undefined;
  // Bounded: a FIFO or a huge tree planted in the content must not hold a disposal forever.
  const options = {
    cwd,
    timeoutMs: git.policy.localCommandTimeoutMs,
    ...(contentRoot !== undefined ? { contentRoot } : {}),
  };
  // Submodules are not entered: their repositories' config is not ours to vouch for.
  const porcelain = await git.run(
    ['status', '--porcelain=v2', '--branch', '-z', '--untracked-files=all', '--ignore-submodules=all'],
    options,
  );
  const parsed = parsePorcelainV2(porcelain);
  // Unpushed: commits on the upstream's left side, or, without an upstream, on no remote at all.
  const range = parsed.upstream ? ['@{upstream}..HEAD'] : ['HEAD', '--not', '--remotes'];
  const log = parsed.head
    ? await git.tryRun(['log', '--no-show-signature', '--format=%H %s', ...range], options)
    : undefined;
  const unpushed = log && log.code === 0 ? log.stdout.split('\n').filter((line) => line.length > 0) : [];
  // Branch names, paths and commit subjects are the content's: bounded before they reach any status.
  return limitGitStatus({
    branch: parsed.branch,
    latestCommit: parsed.head,
    uncommittedFiles: parsed.uncommitted.slice(0, gitStatusListLimit),
    untrackedFiles: parsed.untracked.slice(0, gitStatusListLimit),
    unpushedCommits: unpushed.slice(0, gitStatusListLimit),
    totalUncommittedFiles: parsed.uncommitted.length,
    totalUntrackedFiles: parsed.untracked.length,
    totalUnpushedCommits: unpushed.length,
  });
}
