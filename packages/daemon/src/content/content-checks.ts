/**
 * Checks that guard backups (invariant 2: never back up content that is not there or not trustworthy), and
 * where a workspace's git working copies are (for the git status a disposal returns).
 */
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { PluginLogger } from '@workbay/api';
import type { BackupStore } from '../backup/backup-store.js';
import { readyMarkerPath } from '../backup/backup-store.js';
import { FailedPreconditionError, WorkspaceStateError, errorMessage } from '../errors.js';
import type { Git } from '../git/git.js';
import type { GitStatusSummary } from '../git/git-status.js';
import { gitStatus } from '../git/git-status.js';
import type { HostOps } from '../host-ops/host-ops.js';
import type { InitializerSpec } from '../initializer/types.js';
import type { ContentPhase, SessionState } from '../session/session-store.js';

const why: Record<ContentPhase, string> = {
  initializing: 'still initializing',
  ready: 'ready',
  'init-failed': 'not initialized (initialization failed)',
  disposing: 'being disposed',
  'backed-up': 'already disposed',
  deleting: 'being deleted (its content is incomplete)',
};

/** The backup store, if a workspace in `state` may be backed up now; throws why not otherwise. */
export function assertBackupable(
  state: SessionState,
  backups: BackupStore | undefined,
  operation: string,
  allowDisposing = false,
): BackupStore {
  const phase = state.phase;
  if (!(phase === 'ready' || (allowDisposing && phase === 'disposing')))
    throw new WorkspaceStateError(state.instanceId, why[phase], operation);
  if (state.remoteStorageDisabled || !backups) {
    throw new FailedPreconditionError(
      `workspace '${state.instanceId}' has remote storage disabled; cannot ${operation}`,
    );
  }
  return backups;
}

/**
 * Refuses to archive content that is not there: an unmounted quota image, or a directory emptied behind
 * our back. Either would upload an empty tree over the last good backup.
 */
export async function assertContentPresent(
  state: SessionState,
  hostOps: HostOps,
  logger: PluginLogger,
  operation: string,
): Promise<void> {
  const dir = state.contentLocation;
  const id = state.instanceId;
  if (state.quota?.mode === 'loop' && !(await hostOps.isMountPoint(dir))) {
    throw new FailedPreconditionError(
      `the content image of workspace '${id}' is not mounted; refusing to ${operation}`,
    );
  }
  const marker = await stat(join(dir, readyMarkerPath)).then(
    () => true,
    () => false,
  );
  if (marker) return;
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (cause) {
    throw new FailedPreconditionError(`the content of workspace '${id}' is missing; refusing to ${operation}`, {
      cause,
    });
  }
  if (names.length === 0) {
    throw new FailedPreconditionError(
      `the content directory of workspace '${id}' is empty and its ready marker is gone; refusing to ${operation} (it would replace the last good backup)`,
    );
  }
  logger.warn({ instanceId: id }, 'ready marker missing; backing up the content that is there');
}

/**
 * The git checkout locations a spec produces. A backup initializer names the checkout location of the
 * workspace it restores: that is where the repository is after the restore (the disposal's git status looks
 * there).
 */
export function specGitLocations(spec: InitializerSpec): string[] {
  switch (spec.kind) {
    case 'git':
      return [spec.git.checkoutLocation];
    case 'prebuild':
      return spec.git.map((g) => g.checkoutLocation);
    case 'composite':
      return spec.children.flatMap(specGitLocations);
    case 'backup':
      return [spec.checkoutLocation];
    default:
      return [];
  }
}

/**
 * The git status a disposal returns: the first working copy found at the workspace's checkout locations (those
 * its initializer named, those a restore found), then at the content root. Git runs as the content's owner with
 * the safe configuration (git/git.ts); a failure is logged and the next location tried.
 */
export async function gitStatusOfContent(
  git: Git,
  state: SessionState,
  logger: PluginLogger,
): Promise<GitStatusSummary | undefined> {
  const locations = [...new Set([...state.gitLocations, ''])];
  for (const location of locations) {
    const dir = location ? join(state.contentLocation, location) : state.contentLocation;
    try {
      const status = await gitStatus(git, dir, state.contentLocation);
      if (status) return status;
    } catch (error) {
      logger.warn({ instanceId: state.instanceId, location, err: errorMessage(error) }, 'git status failed');
    }
  }
  return undefined;
}
