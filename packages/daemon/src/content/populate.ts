/**
 * Fills a workspace's (empty, owned) content directory: its backup if it has one (invariant 1: a workspace with
 * a backup gets it back, whatever its initializer says), else its initializer. Everything is written as the
 * workspace's host identity when there is one.
 */
import type { PluginLogger } from '@workbay/api';
import type { BackupStore } from '../backup/backup-store.js';
import { NotFoundError, UnavailableError, errorMessage, isWorkbayError } from '../errors.js';
import type { Git } from '../git/git.js';
import type { DaemonMetrics } from '../health/metrics.js';
import type { DownloadPolicy } from '../initializer/address-policy.js';
import type { InitializerContext } from '../initializer/context.js';
import { findGitLocations, runInitializer } from '../initializer/run.js';
import type { InitProgressSink } from '../initializer/progress.js';
import type { ContentSource, InitializerMetric, InitializerSpec } from '../initializer/types.js';
import type { SessionState } from '../session/session-store.js';

export interface PopulateDeps {
  /** Undefined when the workspace has remote storage disabled. */
  readonly backups: BackupStore | undefined;
  readonly git: Git;
  readonly metrics: DaemonMetrics;
  readonly settings: {
    readonly gitRetryInitialMs: number;
    readonly gitRetryMaxMs: number;
    readonly downloadTimeoutMs: number;
    readonly download?: DownloadPolicy;
  };
  readonly logger: PluginLogger;
  /** Where steps that retry report their attempts (see `initializer/progress.ts`). */
  readonly progress?: InitProgressSink;
  /** Ends the initializer's work (a disposal, the initialization's deadline). */
  readonly signal?: AbortSignal;
}

export interface Populated {
  readonly source: ContentSource;
  readonly metrics: InitializerMetric[];
  /** Checkout locations of git working copies (relative), for git status on disposal. */
  readonly gitLocations: string[];
  /** Everything written is owned by the workspace's host identity already (see InitializerOutcome). */
  readonly contentOwned?: boolean;
  /** The id of the workspace's backup when it was looked up (`null`: none); absent without remote storage. */
  readonly backupBase?: string | null;
}

export async function populateContent(
  deps: PopulateDeps,
  state: SessionState,
  spec: InitializerSpec,
): Promise<Populated> {
  const root = state.contentLocation;
  const owner = state.hostUser;
  const ref = { owner: state.owner, workspaceId: state.workspaceId };
  const { backups, metrics, logger } = deps;
  const found = backups ? await backups.find(ref) : undefined;
  if (backups && found) {
    const started = performance.now();
    try {
      const restored = await backups.restore(root, ref, {
        ...(owner ? { owner } : {}),
        // A disposal ends the restore too (red team round 13, G2 re-test: a stop waited for a whole restore).
        ...(deps.signal ? { signal: deps.signal } : {}),
      });
      if (!restored)
        throw new NotFoundError(`the backup of workspace '${ref.workspaceId}' disappeared while restoring`);
      metrics.restores.inc({ kind: 'backup', outcome: 'success' });
      logger.info({ url: restored.url, bytes: restored.contentBytes }, 'restored workspace from its backup');
      return {
        source: 'from-backup',
        metrics: [
          { type: 'backup', durationMs: Math.round(performance.now() - started), bytes: restored.transferredBytes },
        ],
        // Where the spec says, and wherever the restored content holds a working copy.
        gitLocations: [...new Set([...state.gitLocations, ...(await findGitLocations(root))])],
        // With an owner, the restore's writer gives every entry it writes (and every parent it creates) that owner:
        // no ownership walk over the restored tree is needed.
        ...(owner ? { contentOwned: true } : {}),
        // The backup looked up: a commit between the lookup and the restore makes this content's next backup fail
        // its check, rather than have it replace a backup it does not hold.
        backupBase: found.id,
      };
    } catch (error) {
      metrics.restores.inc({ kind: 'backup', outcome: 'failure' });
      throw isWorkbayError(error)
        ? error
        : new UnavailableError(
            `restoring the backup of workspace '${ref.workspaceId}' failed: ${errorMessage(error)}`,
            {
              cause: error,
            },
          );
    }
  }
  const context: InitializerContext = {
    root,
    git: deps.git,
    ...(backups ? { backups } : {}),
    owner: state.owner,
    workspaceId: state.workspaceId,
    logger,
    gitRetry: { initialDelayMs: deps.settings.gitRetryInitialMs, maxElapsedMs: deps.settings.gitRetryMaxMs },
    downloadTimeoutMs: deps.settings.downloadTimeoutMs,
    ...(deps.settings.download ? { download: deps.settings.download } : {}),
    ...(deps.progress ? { progress: deps.progress } : {}),
    ...(owner ? { workspaceUser: owner } : {}),
    ...(deps.signal ? { signal: deps.signal } : {}),
  };
  const outcome = await runInitializer(spec, context);
  if (spec.kind === 'snapshot' || spec.kind === 'prebuild' || spec.kind === 'backup') {
    metrics.restores.inc({ kind: spec.kind, outcome: 'success' });
  }
  return {
    source: outcome.source,
    metrics: [...outcome.metrics],
    gitLocations: [...new Set([...outcome.gitLocations, ...state.gitLocations])],
    ...(outcome.contentOwned ? { contentOwned: true } : {}),
    ...(backups ? { backupBase: null } : {}),
  };
}
