/**
 * Pure transitions of a {@link WorkspaceRecord}: the lifecycle state machine, fail-once and the sticky
 * "ever ready". Every function returns a new record and never mutates its input.
 *
 * @module
 */
import { InternalError } from '@workbay/api';
import type {
  MetadataFilter,
  WorkspaceConditions,
  WorkspacePhase,
  WorkspaceProgress,
  WorkspaceRecord,
} from './types.js';

/** Lifecycle order; a phase may only move forward (stopping is reachable from every non-terminal phase). */
const order: Readonly<Record<WorkspacePhase, number>> = {
  unknown: 0,
  pending: 1,
  creating: 2,
  initializing: 3,
  running: 4,
  interrupted: 4,
  stopping: 5,
  stopped: 6,
};

/** True if a workspace may move from `from` to `to`. */
export function canTransition(from: WorkspacePhase, to: WorkspacePhase): boolean {
  if (from === to) return true;
  if (from === 'stopped') return false;
  // A running workspace whose runtime cannot be asked (after a restart) is INTERRUPTED, and comes back to
  // RUNNING once the runtime answers that it still runs.
  if ((from === 'running' && to === 'interrupted') || (from === 'interrupted' && to === 'running')) return true;
  if (to === 'stopping' || to === 'stopped') return order[to] > order[from] || from === 'stopping';
  // Forward only, one or more steps (a resumed start may skip a phase it already completed).
  return order[to] > order[from];
}

export function isTerminal(phase: WorkspacePhase): boolean {
  return phase === 'stopped';
}

/** Phases in which the start sequence is still under way. */
export function isStarting(phase: WorkspacePhase): boolean {
  return phase === 'pending' || phase === 'creating' || phase === 'initializing';
}

/** Moves to `phase`, stamping when it was entered. Throws InternalError for an illegal transition. */
export function withPhase(record: WorkspaceRecord, phase: WorkspacePhase, now: number): WorkspaceRecord {
  if (record.phase === phase) return record;
  if (!canTransition(record.phase, phase)) {
    throw new InternalError(`workspace ${record.id}: illegal phase transition ${record.phase} -> ${phase}`);
  }
  // "Ever ready" is sticky: once running, the phase never goes back to a start phase (checked above), and
  // progress.everReady stays true whatever happens later.
  const progress = phase === 'running' ? { ...record.progress, everReady: true } : record.progress;
  return { ...record, phase, progress, phaseTimes: { ...record.phaseTimes, [phase]: now } };
}

/** Records a failure; the first one wins and later ones are ignored. */
export function withFailure(record: WorkspaceRecord, reason: string): WorkspaceRecord {
  if (record.conditions.failed !== '') return record;
  return withConditions(record, { failed: reason || 'unknown failure' });
}

export function withConditions(record: WorkspaceRecord, patch: Partial<WorkspaceConditions>): WorkspaceRecord {
  return { ...record, conditions: { ...record.conditions, ...patch } };
}

export function withProgress(record: WorkspaceRecord, patch: Partial<WorkspaceProgress>): WorkspaceRecord {
  const progress = { ...record.progress, ...patch };
  // Sticky: nothing may reset everReady.
  if (record.progress.everReady) progress.everReady = true;
  return { ...record, progress };
}

/**
 * True if `a` and `b` differ in anything a subscriber sees. Activity times and internal progress are not
 * part of it (the original ignores lastActivity-only changes too).
 */
export function differsVisibly(a: WorkspaceRecord, b: WorkspaceRecord): boolean {
  if (a === b) return false;
  return (
    a.phase !== b.phase ||
    a.message !== b.message ||
    a.url !== b.url ||
    a.ownerToken !== b.ownerToken ||
    a.spec !== b.spec ||
    a.repo !== b.repo ||
    a.initializerMetrics !== b.initializerMetrics ||
    a.progress.nodeName !== b.progress.nodeName ||
    a.progress.runtimeHost !== b.progress.runtimeHost ||
    !shallowEqual(a.conditions, b.conditions)
  );
}

function shallowEqual(a: object, b: object): boolean {
  if (a === b) return true;
  const ka = Object.keys(a);
  const kb = Object.keys(b);
  if (ka.length !== kb.length) return false;
  return ka.every((k) => (a as Record<string, unknown>)[k] === (b as Record<string, unknown>)[k]);
}

/** Every field of `filter` that is set must match; an empty filter matches everything. */
export function matchesFilter(record: WorkspaceRecord, filter: MetadataFilter | undefined): boolean {
  if (!filter) return true;
  if (filter.owner && record.owner !== filter.owner) return false;
  if (filter.metaId && record.metaId !== filter.metaId) return false;
  if (filter.annotations) {
    for (const [key, value] of Object.entries(filter.annotations)) {
      if (record.annotations[key] !== value) return false;
    }
  }
  return true;
}

export const emptyConditions: WorkspaceConditions = Object.freeze({
  failed: '',
  timeout: '',
  snapshot: '',
  headlessTaskFailed: '',
  finalBackupComplete: false,
  deployed: false,
  stoppedByRequest: false,
  aborted: false,
});
