/**
 * The timeout rules as data ({@link timeoutRules}) and one pure function of a record and the clock that applies
 * them (the original's rules, inventory §2.6):
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

/**
 * One timeout rule: where it applies, from when it counts and how long it allows. Rules of a phase are checked in
 * order; the first that applies and fires decides. An `exclusive` rule ends the check when it applies, fired or
 * not (a headless workspace is timed by the headless rule alone, as in the original).
 */
export interface TimeoutRuleSpec {
  readonly rule: TimeoutRule;
  readonly applies: (record: WorkspaceRecord, settings: TimeoutSettings) => boolean;
  readonly since: (record: WorkspaceRecord) => number;
  readonly limit: (record: WorkspaceRecord, settings: TimeoutSettings) => number;
  readonly exclusive: boolean;
}

const always = (): boolean => true;
const created = (r: WorkspaceRecord): number => r.createdAt;
const lastActivity = (r: WorkspaceRecord): number => r.lastActivity ?? r.createdAt;
const stoppingSince = (r: WorkspaceRecord): number => r.phaseTimes.stopping ?? r.createdAt;

const startupRule: TimeoutRuleSpec = {
  rule: 'startup',
  applies: always,
  since: created,
  limit: (_, s) => s.startupMs,
  exclusive: true,
};

const runningRules: readonly TimeoutRuleSpec[] = [
  { rule: 'max-lifetime', applies: always, since: created, limit: (r, s) => maxLifetimeMs(r, s), exclusive: false },
  {
    rule: 'headless',
    applies: (r) => r.type !== 'regular',
    since: created,
    limit: (_, s) => s.headlessWorkspaceMs,
    exclusive: true,
  },
  {
    rule: 'no-activity',
    applies: (r) => r.lastActivity === undefined,
    since: created,
    limit: (_, s) => s.startupMs,
    exclusive: true,
  },
  {
    rule: 'closed',
    applies: (r, s) => r.progress.closed && closedTimeoutMs(r, s) > 0,
    since: lastActivity,
    limit: (r, s) => closedTimeoutMs(r, s),
    exclusive: true,
  },
  {
    rule: 'inactivity',
    applies: always,
    since: lastActivity,
    limit: (r, s) => inactivityTimeoutMs(r, s),
    exclusive: true,
  },
];

/** The timeout rules of the original (inventory §2.6), per phase, as data. */
export const timeoutRules: Readonly<Record<WorkspaceRecord['phase'], readonly TimeoutRuleSpec[]>> = {
  unknown: [],
  pending: [
    { rule: 'initialization', applies: always, since: created, limit: (_, s) => s.initializationMs, exclusive: true },
  ],
  creating: [startupRule],
  initializing: [startupRule],
  running: runningRules,
  // The runtime could not be asked: the workspace may still run, so the running rules keep applying.
  interrupted: runningRules,
  stopping: [
    {
      rule: 'content-finalization',
      applies: (r) => !r.conditions.finalBackupComplete,
      since: stoppingSince,
      limit: (_, s) => s.contentFinalizationMs,
      exclusive: true,
    },
    { rule: 'stopping', applies: always, since: stoppingSince, limit: (_, s) => s.stoppingMs, exclusive: true },
  ],
  stopped: [],
};

/** The rule that has fired for `record` at `now`, or undefined. A record that already timed out never fires again. */
export function evaluateTimeout(
  record: WorkspaceRecord,
  now: number,
  settings: TimeoutSettings,
): TimeoutVerdict | undefined {
  if (record.conditions.timeout !== '' && record.phase !== 'stopping') return undefined;
  // A stop that already timed out is being forced; do not report it twice.
  if (record.phase === 'stopping' && record.progress.stopForced) return undefined;
  for (const spec of timeoutRules[record.phase] ?? []) {
    if (!spec.applies(record, settings)) continue;
    const fired = verdict(spec.rule, spec.since(record), spec.limit(record, settings), now);
    if (fired || spec.exclusive) return fired;
  }
  return undefined;
}
