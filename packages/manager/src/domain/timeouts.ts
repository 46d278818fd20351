/**
 * The timeout rules, as a pure function of a record and the clock (the original's rules, §2.6):
 *
 * | phase | deadline |
 * |---|---|
 * | pending | created + `initialization` |
 * | creating, initializing | created + `startup` |
 * | running | in order: created + max lifetime; headless: created + `headlessWorkspace`; no activity yet: created + `startup`; IDE closed: last activity + closed timeout (0 disables this rule); else last activity + inactivity timeout |
 * | stopping | entered stopping + `contentFinalization` until the final backup is complete, then + `stopping` |
 * | stopped | never |
 *
 * @module
 */
import { formatGoDuration } from '@workbay/api';
import type { TimeoutSettings } from '../config.js';
import type { WorkspaceRecord } from './types.js';

export type TimeoutRule =
  | 'initialization'
  | 'startup'
  | 'max-lifetime'
  | 'headless'
  | 'no-activity'
  | 'closed'
  | 'inactivity'
  | 'content-finalization'
  | 'stopping';

export interface TimeoutVerdict {
  readonly rule: TimeoutRule;
  /** For `conditions.timeout`: which rule fired, how long it took, what the limit was. */
  readonly message: string;
}

const activityNames: Readonly<Record<TimeoutRule, string>> = {
  initialization: 'waiting in pending',
  startup: 'starting up',
  'max-lifetime': 'the maximum lifetime',
  headless: 'running the headless workspace',
  'no-activity': 'waiting for the first user activity',
  closed: 'inactivity after the IDE was closed',
  inactivity: 'inactivity',
  'content-finalization': 'the final backup',
  stopping: 'stopping',
};

/** Go duration rounded to a tenth of a second (1.6s, 1h0m1s). */
function rounded(ms: number): string {
  return formatGoDuration(Math.max(0, Math.round(ms / 100)) * 100);
}

/** The effective inactivity timeout of a workspace: its own (capped by config) or the default. */
export function inactivityTimeoutMs(record: WorkspaceRecord, settings: TimeoutSettings): number {
  const own = record.spec.timeoutMs;
  return own !== undefined && own > 0 ? Math.min(own, settings.maxWorkspaceTimeoutMs) : settings.regularWorkspaceMs;
}

/** The effective closed timeout; 0 disables the closed rule. */
export function closedTimeoutMs(record: WorkspaceRecord, settings: TimeoutSettings): number {
  const own = record.spec.closedTimeoutMs;
  return own !== undefined ? Math.min(own, settings.maxWorkspaceTimeoutMs) : settings.afterCloseMs;
}

export function maxLifetimeMs(record: WorkspaceRecord, settings: TimeoutSettings): number {
  const own = record.spec.maximumLifetimeMs;
  return own !== undefined && own > 0 ? Math.min(own, settings.maxLifetimeMs) : settings.maxLifetimeMs;
}

function verdict(rule: TimeoutRule, since: number, limit: number, now: number): TimeoutVerdict | undefined {
  const elapsed = now - since;
  if (elapsed <= limit) return undefined;
  return {
    rule,
    message: `workspace timed out (${rule}): ${activityNames[rule]} took ${rounded(elapsed)}, longer than the ${formatGoDuration(limit)} allowed`,
  };
}

/** The rule that has fired for `record` at `now`, or undefined. A record that already timed out never fires again. */
export function evaluateTimeout(
  record: WorkspaceRecord,
  now: number,
  settings: TimeoutSettings,
): TimeoutVerdict | undefined {
  if (record.conditions.timeout !== '' && record.phase !== 'stopping') return undefined;
  const created = record.createdAt;
  switch (record.phase) {
    case 'pending':
      return verdict('initialization', created, settings.initializationMs, now);
    case 'creating':
    case 'initializing':
      return verdict('startup', created, settings.startupMs, now);
    case 'running':
    case 'interrupted': {
      const lifetime = verdict('max-lifetime', created, maxLifetimeMs(record, settings), now);
      if (lifetime) return lifetime;
      if (record.type !== 'regular') return verdict('headless', created, settings.headlessWorkspaceMs, now);
      if (record.lastActivity === undefined) return verdict('no-activity', created, settings.startupMs, now);
      if (record.progress.closed) {
        const closed = closedTimeoutMs(record, settings);
        if (closed > 0) return verdict('closed', record.lastActivity, closed, now);
      }
      return verdict('inactivity', record.lastActivity, inactivityTimeoutMs(record, settings), now);
    }
    case 'stopping': {
      // A stop that already timed out is being forced; do not report it twice.
      if (record.progress.stopForced) return undefined;
      const since = record.phaseTimes.stopping ?? created;
      return record.conditions.finalBackupComplete
        ? verdict('stopping', since, settings.stoppingMs, now)
        : verdict('content-finalization', since, settings.contentFinalizationMs, now);
    }
    default:
      return undefined;
  }
}
