/**
 * Logs and metrics of every visible change of a workspace (phase changes, failures, phase durations, stops).
 *
 * @module
 */
import type { WorkspaceRecord } from '../domain/types.js';
import type { Logger } from '../logger.js';
import type { ManagerMetrics } from '../metrics.js';
import { labelsOf } from './lifecycle/effects.js';

export function observeChange(
  previous: WorkspaceRecord,
  next: WorkspaceRecord,
  logger: Logger,
  metrics: ManagerMetrics | undefined,
  now: number,
): void {
  const log = logger.child({ workspace: next.id });
  if (previous.phase !== next.phase) {
    log.info({ from: previous.phase, to: next.phase, statusVersion: next.statusVersion }, 'phase changed');
  }
  if (previous.conditions.failed === '' && next.conditions.failed !== '') {
    log.warn({ failed: next.conditions.failed }, 'workspace failed');
    metrics?.failuresTotal.inc(labelsOf(next));
  }
  if (!metrics || previous.phase === next.phase) return;
  const labels = labelsOf(next);
  const times = next.phaseTimes;
  if (next.phase !== 'pending' && previous.phase === 'pending' && times.pending !== undefined) {
    metrics.pendingSeconds.observe(labels, (now - times.pending) / 1000);
  }
  if (previous.phase === 'creating' && times.creating !== undefined) {
    metrics.creatingSeconds.observe(labels, (now - times.creating) / 1000);
  }
  if (next.phase === 'running') metrics.startupSeconds.observe(labels, (now - next.createdAt) / 1000);
  if (next.phase === 'stopped') {
    metrics.stopsTotal.inc({ reason: next.progress.stopReason ?? 'regular-stop', ...labels });
    const c = next.conditions;
    if (!next.progress.everReady && !c.aborted && !c.stoppedByRequest) metrics.startFailuresTotal.inc(labels);
  }
}
