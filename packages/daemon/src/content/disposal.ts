/**
 * Disposal of a workspace's content: the final backup (unless refused), the git status, then deletion. The
 * outcome is persisted before any content is deleted (invariant 2), and a finished disposal leaves a tombstone
 * that answers a repeated dispose with the same outcome (invariant 5).
 */
import { CancelledError, NotFoundError, WorkspaceStateError, errorMessage } from '../errors.js';
import type { Git } from '../git/git.js';
import type { HostIdAllocator } from '../session/host-ids.js';
import type { BackupRecord, DisposalRecord } from '../session/session-store.js';
import type { WorkspaceBackups } from './backups.js';
import { gitStatusOfContent } from './content-checks.js';
import type { ContentPartDeps, Workspace } from './registry.js';
import type { ContentServiceOptions, DisposeWorkspaceResult } from './types.js';
import { removeTree } from '../util/remove-tree.js';

export interface WorkspaceDisposalDeps extends ContentPartDeps {
  readonly options: Pick<ContentServiceOptions, 'metrics' | 'lifecycle' | 'quota'>;
  readonly backupRuns: WorkspaceBackups;
  readonly git: Git;
  readonly hostIds: HostIdAllocator | undefined;
}

export class WorkspaceDisposal {
  constructor(private readonly deps: WorkspaceDisposalDeps) {}

  /**
   * Final backup (unless `backup` is false), git status, then deletion. The outcome is persisted before any
   * content is deleted, and a repeated call returns the same outcome.
   */
  dispose(instanceId: string, options: { backup: boolean; backupLogs?: boolean }): Promise<DisposeWorkspaceResult> {
    const { registry } = this.deps;
    return registry.track(
      registry.lock.run(instanceId, async () => {
        const ws = registry.get(instanceId);
        if (!ws) {
          const tombstone = await registry.store.loadTombstone(instanceId);
          if (tombstone) return resultOf(tombstone.disposal);
          throw new NotFoundError(`workspace '${instanceId}' does not exist on this node`);
        }
        if (ws.state.phase === 'initializing' && ws.initAbort && ws.init) {
          // A stop does not wait for content nobody will use: a remote trickling just above git's low-speed limit
          // held a stop for the whole clone (red team round 12, G2). The aborted initialization ends `init-failed`,
          // which is never backed up: whatever this workspace had before (its backup) stays as it was.
          ws.initAbort.abort(new CancelledError(`workspace '${instanceId}' was disposed while initializing`));
          await ws.init;
        }
        if (ws.state.phase === 'initializing')
          throw new WorkspaceStateError(instanceId, 'still initializing', 'dispose it');
        if (ws.state.keptSince && ws.state.phase === 'ready' && !options.backup) {
          // Kept content exists because no backup has it: deleting it unbacked would lose that work. A start that
          // resumed it and failed (the disk could not back its quota again) is disposed without a backup by its
          // manager; the content must outlive that. Its workspace has stopped: dormant again, whatever resumed it (red
          // team round 18, L5b: kept content resumed as an image build, whose stop disposes without a backup, stayed
          // writable with its whole promise).
          await this.makeDormant(ws).catch((dormantError: unknown) =>
            // Deliberate: the refusal is what to report; content not made dormant keeps its promise.
            this.deps.logger.warn(
              { instanceId, err: errorMessage(dormantError) },
              'cannot record kept content dormant',
            ),
          );
          throw new WorkspaceStateError(
            instanceId,
            `kept since ${ws.state.keptSince} because its final backup failed`,
            'delete it without a backup: dispose it with a backup',
          );
        }
        const started = performance.now();
        let disposal = ws.state.disposal;
        if (!disposal) {
          this.deps.backupRuns.stopPeriodic(ws);
          disposal =
            ws.state.phase === 'init-failed'
              ? // Nothing trustworthy to back up; the last good backup (if any) stays as it is.
                { backupRequested: options.backup, recordedAt: new Date().toISOString() }
              : await this.finalize(ws, options, started);
          // Recorded before anything is deleted (invariant 2).
          await registry.persist(ws, { phase: 'backed-up', disposal });
        }
        await this.deleteContent(ws);
        this.deps.options.metrics.finalizeSeconds.observe(
          { backup: String(options.backup), outcome: 'success' },
          (performance.now() - started) / 1000,
        );
        return resultOf(disposal);
      }),
    );
  }

  /** The git status, the logs and the final backup of `ready` content: what its disposal records. */
  private async finalize(
    ws: Workspace,
    options: { backup: boolean; backupLogs?: boolean },
    started: number,
  ): Promise<DisposalRecord> {
    const { registry, backups } = this.deps;
    const { instanceId } = ws.state;
    await registry.persist(ws, { phase: 'disposing' });
    await Promise.allSettled([...ws.pending]);
    const status = await gitStatusOfContent(this.deps.git, ws.state, this.deps.logger);
    if (options.backupLogs && backups && !ws.state.remoteStorageDisabled) {
      await backups.uploadLogs(
        ws.state.contentLocation,
        { owner: ws.state.owner, workspaceId: ws.state.workspaceId },
        instanceId,
      );
    }
    let backup: BackupRecord | undefined;
    if (options.backup && !ws.state.remoteStorageDisabled) {
      // The workspace has stopped: the final backup is the daemon's read, not the workspace's, and is not throttled.
      const quota = ws.state.quota;
      if (quota) await this.deps.options.quota.liftIo?.(instanceId, ws.state.contentLocation, quota);
      try {
        backup = await this.deps.backupRuns.run(ws, 'final');
      } catch (error) {
        // Content stays; a retried dispose backs up again.
        if (quota) await this.deps.options.quota.limitIo?.(instanceId, ws.state.contentLocation, quota);
        await registry.persist(ws, { phase: 'ready', keptSince: ws.state.keptSince ?? new Date().toISOString() });
        await this.makeDormant(ws).catch((dormantError: unknown) =>
          // Deliberate: the backup's failure is the one to report; content not recorded dormant keeps its promise.
          this.deps.logger.warn({ instanceId, err: errorMessage(dormantError) }, 'cannot record kept content dormant'),
        );
        this.deps.backupRuns.schedulePeriodic(ws);
        this.deps.options.metrics.finalizeSeconds.observe(
          { backup: 'true', outcome: 'failure' },
          (performance.now() - started) / 1000,
        );
        throw error;
      }
    }
    return {
      backupRequested: options.backup,
      ...(backup ? { backup } : {}),
      ...(status ? { gitStatus: status } : {}),
      recordedAt: new Date().toISOString(),
    };
  }

  /**
   * Kept content nothing writes to until its owner resumes it holds no disk promise beyond what it uses: five kept 10 GB
   * promises refused every owner's starts (red team round 17, L5). Best effort: content that cannot be made dormant
   * keeps its promise, which only costs room.
   */
  private async makeDormant(ws: Workspace): Promise<void> {
    const { quota } = ws.state;
    if (!quota || ws.state.dormant || !this.deps.options.quota.makeDormant) return;
    if (await this.deps.options.quota.makeDormant(ws.state.instanceId, ws.state.contentLocation, quota))
      await this.deps.registry.persist(ws, { dormant: true });
  }

  /** Removes content, quota and state, leaving a tombstone. Caller holds the workspace lock. */
  async deleteContent(ws: Workspace): Promise<void> {
    const { registry, options } = this.deps;
    const { state } = ws;
    await Promise.allSettled([...ws.pending]);
    if (state.phase !== 'deleting') await registry.persist(ws, { phase: 'deleting' });
    await options.lifecycle?.deleting(state.instanceId);
    if (state.quota && state.quota.mode !== 'none') {
      await options.quota.release(state.instanceId, state.contentLocation, state.quota);
    }
    await removeTree(state.contentLocation);
    await registry.store.saveTombstone({
      version: 1,
      instanceId: state.instanceId,
      workspaceId: state.workspaceId,
      disposedAt: new Date().toISOString(),
      disposal: ws.state.disposal ?? { backupRequested: false, recordedAt: new Date().toISOString() },
    });
    await registry.store.remove(state.instanceId);
    registry.delete(state.instanceId);
    // Freed only now: the content it owned is gone.
    if (state.hostUser) await this.deps.hostIds?.release(state.hostUser.uid);
    registry.publish();
    this.deps.emit({ type: 'disposed', instanceId: state.instanceId });
    this.deps.logger.info({ instanceId: state.instanceId }, 'workspace disposed');
  }
}

function resultOf(disposal: DisposalRecord): DisposeWorkspaceResult {
  return {
    ...(disposal.gitStatus ? { gitStatus: disposal.gitStatus } : {}),
    ...(disposal.backup ? { backup: disposal.backup } : {}),
  };
}
