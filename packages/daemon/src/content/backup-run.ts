/**
 * One backup or snapshot upload of a workspace's content, under the node-wide concurrency limit (fair between
 * owners: `OwnerSlots` of @workbay/api), with retries
 * (backups) and metrics. The caller holds the workspace's lock and records the outcome.
 */
import { createHash } from 'node:crypto';
import type { PluginLogger } from '@workbay/api';
import { BackupSupersededError } from '../backup/backup-store.js';
import type { BackupResult, BackupStore, SnapshotResult } from '../backup/backup-store.js';
import {
  FailedPreconditionError,
  ResourceExhaustedError,
  UnavailableError,
  errorMessage,
  isWorkbayError,
} from '../errors.js';
import type { DaemonMetrics } from '../health/metrics.js';
import type { SessionState } from '../session/session-store.js';
import type { OwnerSlots } from '@workbay/api';
import { retryWithBackoff } from '../util/retry.js';
import type { BackupReason } from './types.js';

export interface UploadDeps {
  /** The node's backup slots, shared fairly between owners. */
  readonly slots: OwnerSlots;
  readonly metrics: DaemonMetrics;
  readonly logger: PluginLogger;
  readonly attempts: number;
  readonly initialBackoffMs: number;
}

// Failures that another attempt cannot fix.
const retryStopCodes = new Set([
  'invalid-argument',
  'failed-precondition',
  'permission-denied',
  'unauthenticated',
  'not-found',
]);

/**
 * A Workbay error as it is; a full disk or quota (ENOSPC, EDQUOT: another attempt would fill it again) as
 * RESOURCE_EXHAUSTED; a leased file as FAILED_PRECONDITION; anything else as UNAVAILABLE saying what failed.
 */
function typed(error: unknown, what: string): Error {
  if (isWorkbayError(error)) return error;
  if (isOutOfSpace(error)) {
    return new ResourceExhaustedError(`${what} failed: the storage is full (${errorMessage(error)})`, { cause: error });
  }
  if (isLeased(error)) {
    // Red team round 11 L1: it was UNAVAILABLE, retried, and the CLI said it could not reach the manager.
    return new FailedPreconditionError(
      `${what} failed: a process of the workspace holds a lease on a file, which cannot be read meanwhile (${errorMessage(error)})`,
      { cause: error },
    );
  }
  return new UnavailableError(`${what} failed: ${errorMessage(error)}`, { cause: error });
}

function codeOf(error: unknown): string | undefined {
  return (error as NodeJS.ErrnoException | undefined)?.code;
}

function isOutOfSpace(error: unknown): boolean {
  const code = codeOf(error);
  return code === 'ENOSPC' || code === 'EDQUOT';
}

/** A non-blocking open refused (EAGAIN): a file lease held by the workspace; retrying while it holds it cannot help. */
function isLeased(error: unknown): boolean {
  const code = codeOf(error);
  return code === 'EAGAIN' || code === 'EWOULDBLOCK';
}

/**
 * Where the backups of an instance go once another instance of its workspace committed a newer backup: the workspace
 * id with `.kept-<instanceId>`, which its owner starts with `--backup` to get the work back. One name per pair: a
 * workspace id that holds `.kept-` itself (or a name too long) gets `kept--<hash of both>` instead, so that `p` with
 * instance `x.kept-y` and `p.kept-x` with instance `y` do not share one (red team round 12, K2b).
 */
export function keptBackupWorkspaceId(workspaceId: string, instanceId: string): string {
  const plain = `${workspaceId}.kept-${instanceId}`;
  if (!workspaceId.includes('.kept-') && /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/.test(plain)) return plain;
  return `kept--${createHash('sha256').update(`${workspaceId}\n${instanceId}`).digest('hex').slice(0, 40)}`;
}

/** A committed backup, and the workspace id it was stored under (see {@link keptBackupWorkspaceId}). */
export interface UploadedBackup extends BackupResult {
  readonly workspaceId: string;
}

export async function uploadBackup(
  deps: UploadDeps,
  backups: BackupStore,
  state: SessionState,
  reason: BackupReason,
): Promise<UploadedBackup> {
  const { metrics } = deps;
  const waitStarted = performance.now();
  const release = await deps.slots.acquire(state.owner);
  metrics.backupWaitingSeconds.observe((performance.now() - waitStarted) / 1000);
  const started = performance.now();
  try {
    // Read as the workspace's owner where it has one: its content may change under the read (readTreeXattrs).
    const readAs = state.hostUser ? { owner: state.hostUser } : {};
    const attempt = (workspaceId: string, expectedBase: string | null | undefined): Promise<BackupResult> =>
      backups.backup(
        state.contentLocation,
        { owner: state.owner, workspaceId },
        {
          ...readAs,
          ...(expectedBase !== undefined ? { expectedBase } : {}),
        },
      );
    const redirected = state.backupWorkspaceId;
    const backupOnce = async (): Promise<UploadedBackup> => {
      // Under its own name too, a backup replaces only this instance's last one there: the owner may have started
      // that name, and committed newer work to it (red team round 12, K2b). Superseded there, it fails.
      if (redirected) return { ...(await attempt(redirected, state.backupBase ?? null)), workspaceId: redirected };
      try {
        return { ...(await attempt(state.workspaceId, state.backupBase)), workspaceId: state.workspaceId };
      } catch (error) {
        if (!(error instanceof BackupSupersededError)) throw error;
        // Another instance of the workspace committed since this content started (a kept instance resumed later):
        // this work is stored beside it, not over it, and nothing of either is lost.
        const kept = keptBackupWorkspaceId(state.workspaceId, state.instanceId);
        deps.logger.warn(
          { instanceId: state.instanceId, workspaceId: state.workspaceId, storedAs: kept },
          "another instance of the workspace backed it up since this content started; this content's backups go to a workspace id of their own",
        );
        return { ...(await attempt(kept, null)), workspaceId: kept };
      }
    };
    const result = await retryWithBackoff(backupOnce, {
      attempts: deps.attempts,
      initialDelayMs: deps.initialBackoffMs,
      retryable: (error) =>
        !isOutOfSpace(error) && !isLeased(error) && !(isWorkbayError(error) && retryStopCodes.has(error.code)),
      onRetry: (error, attempt) => {
        metrics.backupRetries.inc({ reason });
        deps.logger.warn(
          { instanceId: state.instanceId, attempt, err: errorMessage(error) },
          'backup attempt failed; retrying',
        );
      },
    });
    metrics.backups.inc({ reason, format: result.format });
    metrics.backupUploadedBytes.inc({ reason, format: result.format }, result.uploadedBytes);
    metrics.backupContentBytes.inc({ reason, format: result.format }, result.contentBytes);
    metrics.backupSeconds.observe({ reason, format: result.format }, (performance.now() - started) / 1000);
    deps.logger.info(
      { instanceId: state.instanceId, reason, url: result.url, uploadedBytes: result.uploadedBytes },
      'workspace backed up',
    );
    return result;
  } catch (error) {
    metrics.backupFailures.inc({ reason });
    deps.logger.error({ instanceId: state.instanceId, reason, err: errorMessage(error) }, 'workspace backup failed');
    throw typed(error, `backup of workspace '${state.instanceId}'`);
  } finally {
    release();
  }
}

/** Uploads a snapshot under a name chosen beforehand (so that it can be answered before the upload ends). */
export function uploadSnapshot(
  deps: UploadDeps,
  backups: BackupStore,
  state: SessionState,
  target: { readonly bucket: string; readonly name: string; readonly url: string },
  /** Past this many bytes the upload fails (what the snapshot was admitted for: snapshot-budget.ts). */
  maxBytes?: number,
): Promise<SnapshotResult> {
  const instanceId = state.instanceId;
  return deps.slots
    .run(state.owner, () =>
      backups.snapshotTo(state.contentLocation, target.bucket, target.name, {
        ...(state.hostUser ? { owner: state.hostUser } : {}),
        ...(maxBytes !== undefined ? { maxBytes } : {}),
      }),
    )
    .then(
      (result) => {
        deps.metrics.snapshots.inc({ outcome: 'success' });
        deps.logger.info({ instanceId, url: result.url, size: result.size }, 'snapshot taken');
        return result;
      },
      (error: unknown) => {
        deps.metrics.snapshots.inc({ outcome: 'failure' });
        deps.logger.error({ instanceId, url: target.url, err: errorMessage(error) }, 'snapshot failed');
        throw typed(error, `snapshot of workspace '${instanceId}'`);
      },
    );
}
