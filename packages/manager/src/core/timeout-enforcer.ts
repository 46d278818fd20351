/**
 * The timeout enforcer: every check interval, applies the timeout rules (`../domain/timeouts.ts`) to every
 * workspace and reports each rule that fired as a `timed-out` event; forgets stopped workspaces after the
 * retention period, except those whose content the node kept. Paused while the manager is in maintenance (as the original).
 *
 * @module
 */
import type { TimeoutSettings } from '../config.js';
import { evaluateTimeout } from '../domain/timeouts.js';
import type { WorkspaceRecord } from '../domain/types.js';
import type { Logger } from '../logger.js';
import type { LifecycleEvent } from './lifecycle/events.js';

export interface TimeoutEnforcerOptions {
  readonly settings: TimeoutSettings;
  readonly stoppedRetentionMs: number;
  readonly now: () => number;
  readonly paused: () => boolean;
  readonly list: () => Iterable<WorkspaceRecord>;
  /** True while effects of the workspace still run (a stopped workspace is forgotten only once they ended). */
  readonly busy: (id: string) => boolean;
  readonly dispatch: (id: string, event: LifecycleEvent) => void;
  readonly forget: (id: string) => void;
  readonly logger: Logger;
}

export class TimeoutEnforcer {
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly options: TimeoutEnforcerOptions) {}

  start(): void {
    this.timer ??= setInterval(() => this.check(), Math.max(10, this.options.settings.checkIntervalMs));
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  /** Applies the rules once. */
  check(): void {
    const o = this.options;
    if (o.paused()) return;
    const now = o.now();
    const events: Array<[string, LifecycleEvent]> = [];
    const stale: string[] = [];
    for (const record of o.list()) {
      if (record.phase === 'stopped') {
        // Its content is still on the node (a final backup or the disposal failed, so the daemon kept it): the record
        // is how its owner finds that content and resumes it, so it stays listed until a stop disposes it (red team
        // round 17, L5: kept content whose record was purged was left where nobody could see it).
        if (mayHoldContent(record)) continue;
        const stoppedAt = record.phaseTimes.stopped ?? record.createdAt;
        if (now - stoppedAt > o.stoppedRetentionMs && !o.busy(record.id)) stale.push(record.id);
        continue;
      }
      const verdict = evaluateTimeout(record, now, o.settings);
      if (!verdict) continue;
      o.logger.info({ workspace: record.id, rule: verdict.rule }, verdict.message);
      events.push([record.id, { type: 'timed-out', rule: verdict.rule, message: verdict.message }]);
    }
    // Dispatched after the walk: a dispatch changes the records being iterated.
    for (const [id, event] of events) o.dispatch(id, event);
    for (const id of stale) o.forget(id);
  }
}

/** Whether the node may still hold a stopped workspace's content: InitWorkspace was sent, and no disposal confirmed. */
export function mayHoldContent(record: WorkspaceRecord): boolean {
  return !record.progress.disposed && (record.progress.contentReady || record.progress.initRequested);
}
