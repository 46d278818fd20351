/**
 * Starting a git process, as the daemon or (daemon root) as a workspace's host user in a mount namespace of its
 * own. Used by git.ts, which decides the environment and config.
 */
import { readFile } from 'node:fs/promises';
import { syscallFilterArgument, syscallFilterLoader, syscallFilterSupported } from '@workbay/nsinsider';
import { confinedArgs } from '../util/confined-command.js';
import { runProcess } from '../util/process.js';
import type { RunResult } from '../util/process.js';
import { GitCommandError } from './git-errors.js';

/** The filter for git as a workspace's user; none on an architecture without one. */
const gitSyscallFilter = syscallFilterSupported()
  ? { argument: syscallFilterArgument(), loader: syscallFilterLoader }
  : undefined;

/** A host identity to run git as. */
export interface GitUser {
  readonly uid: number;
  readonly gid: number;
}

export interface SpawnPlan {
  /** Where git runs (without a mount). */
  readonly cwd: string;
  readonly scratch: string;
  readonly env: NodeJS.ProcessEnv;
  readonly user: GitUser | undefined;
  readonly mount?: { readonly source: string; readonly target: string };
  /** A passwd file with an entry for `user`, bound over /etc/passwd for the command. */
  readonly passwd?: string;
  readonly timeoutMs?: number;
  readonly maxOutputBytes?: number;
  /** As another user: RLIMIT_DATA of git and every process it starts (`GitPolicy.maxMemoryBytes`). */
  readonly maxDataBytes?: number;
  /**
   * As another user: directories git must not see, covered after the working copy is bound (the working area, which
   * holds every workspace's content). A working copy's refs, objects or alternates can be symlinks or paths into a
   * neighbour's repository, which the user may be able to read (content is the workspaces' own to chmod, and with
   * `workspaceIds.shared` every workspace is the same uid): red team round 7 had a workspace's status show another
   * owner's commits and file names, and a prebuild check out another owner's files.
   */
  readonly hide?: readonly string[];
}

/**
 * Starts git. As another user, git must reach its working copy although the daemon's directories above it need
 * not be traversable by that user (`~/.workbay` of root, a 0700 temp dir): the working copy is bind-mounted at
 * `mountpoint` in a private mount namespace of this one command (gone when it exits), and git, dropped to the
 * user with no supplementary groups and no_new_privs, works there.
 */
export async function spawnGit(
  args: readonly string[],
  options: { readonly signal?: AbortSignal },
  run: SpawnPlan,
): Promise<RunResult> {
  const timeout = run.timeoutMs !== undefined ? AbortSignal.timeout(run.timeoutMs) : undefined;
  const signals = [options.signal, timeout].filter((s): s is AbortSignal => s !== undefined);
  const signal = signals.length > 1 ? AbortSignal.any(signals) : signals[0];
  const common = {
    env: run.env,
    ...(signal ? { signal } : {}),
    ...(run.maxOutputBytes !== undefined ? { maxOutputBytes: run.maxOutputBytes } : {}),
  };
  try {
    if (run.user) {
      const { uid, gid } = run.user;
      return await runProcess(
        'unshare',
        confinedArgs(
          {
            uid,
            gid,
            ...(run.mount ? { mount: run.mount } : {}),
            ...(run.passwd ? { passwd: run.passwd } : {}),
            ...(run.hide ? { hide: run.hide } : {}),
            ...(gitSyscallFilter ? { syscallFilter: gitSyscallFilter } : {}),
          },
          [...(run.maxDataBytes !== undefined ? ['prlimit', `--data=${run.maxDataBytes}`, '--'] : []), 'git', ...args],
        ),
        { ...common, cwd: run.mount ? run.scratch : run.cwd },
      );
    }
    return await runProcess('git', args, { ...common, cwd: run.cwd });
  } catch (error) {
    if (timeout?.aborted) throw new GitCommandError(args, null, `timed out after ${run.timeoutMs} ms`);
    throw error;
  }
}

export /** The host's passwd plus an entry for a workspace user that has none (workspace uids are allocated, not users). */
async function passwdWith(user: GitUser, home: string): Promise<string> {
  const host = await readFile('/etc/passwd', 'utf8').catch((error: NodeJS.ErrnoException) => {
    if (error.code === 'ENOENT') return ''; // a minimal image without passwd: the one entry is enough
    throw error;
  });
  const known = host.split('\n').some((line) => line.split(':')[2] === String(user.uid));
  const base = host.endsWith('\n') || host === '' ? host : `${host}\n`;
  return known ? base : `${base}workspace:x:${user.uid}:${user.gid}:workspace:${home}:/bin/sh\n`;
}
