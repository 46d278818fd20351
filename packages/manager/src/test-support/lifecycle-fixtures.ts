/** TEST ONLY: fixtures of the transition tests (a context, runtime states, one sample of every event, records). */
import { emptyConditions } from '../domain/status.js';
import type { WorkspacePhase, WorkspaceRecord } from '../domain/types.js';
import { makeRecord } from './records.js';
import type { LifecycleEffect, LifecycleEvent, RuntimeState, TransitionContext } from '../core/lifecycle/events.js';

export const ctx: TransitionContext = { now: 5_000_000, graceMs: { normally: 30_000, immediately: 1_000, abort: 999 } };

export const alive: RuntimeState = { status: 'running', ready: false, host: '10.0.0.2', nodeName: 'node-a' };
export const readyState: RuntimeState = { ...alive, ready: true };
export const crashed: RuntimeState = { ...alive, status: 'exited', exitCode: 3 };
export const cleanExit: RuntimeState = { ...alive, status: 'exited', exitCode: 0 };

/** One sample of every event type. */
export const sampleEvents: readonly LifecycleEvent[] = [
  { type: 'resume' },
  { type: 'slot-acquired' },
  { type: 'port-allocated', port: 30_001 },
  { type: 'port-failed', reason: 'no free port' },
  { type: 'content-ready', contentDir: '/w/ws-1' },
  { type: 'content-failed', reason: 'clone failed' },
  { type: 'content-progress', message: 'git clone failed, retrying (attempt 2 of at most 7): HTTP 503' },
  { type: 'ssh-keys-written' },
  { type: 'ssh-keys-failed', reason: '.ssh is a symlink' },
  { type: 'process-started', state: readyState },
  { type: 'process-failed', reason: 'image not found' },
  { type: 'runtime-ready', state: readyState },
  { type: 'runtime-exited', state: crashed },
  { type: 'runtime-found', state: readyState },
  { type: 'runtime-gone', reason: 'no such process' },
  { type: 'runtime-unknown', reason: 'list failed' },
  { type: 'stop-requested', policy: 'normally', byRequest: true, reason: 'regular-stop' },
  { type: 'timed-out', rule: 'inactivity', message: 'workspace timed out (inactivity)' },
  { type: 'process-stopped' },
  { type: 'kill-failed', reason: 'EPERM' },
  { type: 'snapshot-taken', url: 'snapshot-1.tar@bucket' },
  { type: 'snapshot-failed', reason: 'upload failed' },
  { type: 'content-disposed', finalBackupComplete: true },
  { type: 'dispose-failed', backup: true, notFound: false, reason: 'daemon gone' },
  { type: 'internal-error', reason: 'bug' },
];

export const phases: readonly WorkspacePhase[] = [
  'pending',
  'creating',
  'initializing',
  'running',
  'interrupted',
  'stopping',
  'stopped',
];

/** A plausible record in `phase` (content ready from running on, deployed, with an IDE port). */
export function inPhase(phase: WorkspacePhase, overrides: Partial<WorkspaceRecord> = {}): WorkspaceRecord {
  const base = makeRecord(overrides);
  const started = phase !== 'pending' && phase !== 'creating';
  const live = phase === 'running' || phase === 'interrupted' || phase === 'stopping';
  return {
    ...base,
    phase,
    phaseTimes: { pending: 1, [phase]: 2 },
    conditions: { ...emptyConditions, deployed: live, ...overrides.conditions },
    progress: {
      ...base.progress,
      idePort: phase === 'pending' ? 0 : 30_000,
      initRequested: started,
      contentReady: live,
      everReady: phase === 'running' || phase === 'interrupted' || phase === 'stopping',
      stopPolicy: phase === 'stopping' ? 'normally' : undefined,
      ...overrides.progress,
    },
  };
}

export const types = (effects: readonly LifecycleEffect[]): string[] => effects.map((e) => e.type);
