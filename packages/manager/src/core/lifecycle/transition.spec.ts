/**
 * Table-driven tests of the lifecycle transition function: every phase × every event, and the rows of the rule
 * table. Whole lifecycles and every failure path: `transition.paths.spec.ts`.
 */
import { describe, expect, it } from 'vitest';
import { canTransition, emptyConditions } from '../../domain/status.js';
import type { WorkspacePhase, WorkspaceRecord } from '../../domain/types.js';
import { makeRecord } from '../../test-support/records.js';
import type { LifecycleEvent } from './events.js';
import { transition } from './transition.js';
import {
  cleanExit,
  crashed,
  ctx,
  alive,
  inPhase,
  phases,
  readyState,
  sampleEvents,
  types,
} from '../../test-support/lifecycle-fixtures.js';

describe('transition: every phase × every event', () => {
  for (const phase of phases) {
    for (const event of sampleEvents) {
      it(`${phase} + ${event.type}`, () => {
        const before = inPhase(phase);
        const { record, effects } = transition(before, event, ctx);
        expect(canTransition(before.phase, record.phase)).toBe(true);
        if (phase === 'stopped') {
          expect(record).toBe(before);
          expect(effects).toEqual([]);
        }
        // A failure never leaves a workspace outside the way to STOPPED.
        if (record.conditions.failed !== '') expect(['stopping', 'stopped']).toContain(record.phase);
        // Status is append-only where it must be.
        if (before.progress.everReady) expect(record.progress.everReady).toBe(true);
        expect(record.createdAt).toBe(before.createdAt);
      });
    }
  }
});

interface Row {
  readonly name: string;
  readonly from: WorkspaceRecord;
  readonly event: LifecycleEvent;
  readonly phase: WorkspacePhase;
  readonly effects: readonly string[];
  readonly failed?: RegExp;
  readonly check?: (record: WorkspaceRecord) => void;
}

const rows: readonly Row[] = [
  {
    name: 'a new record waits for a slot',
    from: inPhase('pending'),
    event: { type: 'resume' },
    phase: 'pending',
    effects: ['acquire-slot'],
  },
  {
    name: 'a slot: CREATING, allocate a port',
    from: inPhase('pending'),
    event: { type: 'slot-acquired' },
    phase: 'creating',
    effects: ['allocate-port'],
  },
  {
    name: 'a port: INITIALIZING, init the content',
    from: inPhase('creating', { progress: { ...makeRecord().progress, idePort: 0 } }),
    event: { type: 'port-allocated', port: 30_001 },
    phase: 'initializing',
    effects: ['init-content'],
    check: (r) => expect([r.progress.idePort, r.progress.initRequested]).toEqual([30_001, true]),
  },
  {
    name: 'content ready: start the process',
    from: inPhase('initializing'),
    event: { type: 'content-ready', contentDir: '/c' },
    phase: 'initializing',
    effects: ['start-process'],
  },
  {
    name: 'init progress while initializing: the status message says so, nothing else changes',
    from: inPhase('initializing'),
    event: { type: 'content-progress', message: 'git clone failed, retrying (attempt 2 of at most 7)' },
    phase: 'initializing',
    effects: [],
    check: (r) =>
      expect([r.message, r.progress.contentReady]).toEqual([
        'git clone failed, retrying (attempt 2 of at most 7)',
        false,
      ]),
  },
  {
    name: 'a late init progress after the content is ready changes nothing',
    from: inPhase('initializing', { progress: { ...inPhase('initializing').progress, contentReady: true } }),
    event: { type: 'content-progress', message: 'git clone failed, retrying (attempt 2 of at most 7)' },
    phase: 'initializing',
    effects: [],
    check: (r) => expect(r.message).toBe(''),
  },
  {
    name: 'content ready clears the init progress message',
    from: inPhase('initializing', { message: 'git clone failed, retrying (attempt 2 of at most 7)' }),
    event: { type: 'content-ready', contentDir: '/c' },
    phase: 'initializing',
    effects: ['start-process'],
    check: (r) => expect(r.message).toBe(''),
  },
  {
    name: 'content ready with SSH keys: write them first',
    from: inPhase('initializing', { spec: { ...makeRecord().spec, sshPublicKeys: ['ssh-ed25519 AAAA'] } }),
    event: { type: 'content-ready', contentDir: '/c' },
    phase: 'initializing',
    effects: ['write-ssh-keys'],
  },
  {
    name: 'keys written: start the process',
    from: inPhase('initializing', { progress: { ...inPhase('initializing').progress, contentReady: true } }),
    event: { type: 'ssh-keys-written' },
    phase: 'initializing',
    effects: ['start-process'],
  },
  {
    name: 'a ready process: RUNNING, slot released',
    from: inPhase('initializing', { progress: { ...inPhase('initializing').progress, contentReady: true } }),
    event: { type: 'process-started', state: readyState },
    phase: 'running',
    effects: ['release-slot'],
    check: (r) =>
      expect([r.conditions.deployed, r.progress.everReady, r.progress.runtimeHost]).toEqual([true, true, '10.0.0.2']),
  },
  {
    name: 'resume of a stop: stop the process again',
    from: inPhase('stopping'),
    event: { type: 'resume' },
    phase: 'stopping',
    effects: ['stop-process'],
  },
  {
    name: 'a regular process that exits: failed',
    from: inPhase('running'),
    event: { type: 'runtime-exited', state: crashed },
    phase: 'stopping',
    effects: ['release-slot', 'stop-process'],
    failed: /exited unexpectedly: exit code 3/,
  },
  {
    name: 'a regular process that exits 0: failed too',
    from: inPhase('running'),
    event: { type: 'runtime-exited', state: cleanExit },
    phase: 'stopping',
    effects: ['release-slot', 'stop-process'],
    failed: /not supposed to end by itself/,
  },
  {
    name: 'a headless task that succeeds: completed, not failed',
    from: inPhase('running', { type: 'prebuild' }),
    event: { type: 'runtime-exited', state: cleanExit },
    phase: 'stopping',
    effects: ['release-slot', 'stop-process'],
    check: (r) => expect([r.conditions.failed, r.progress.stopReason]).toEqual(['', 'completed']),
  },
  {
    name: 'a headless task that fails: headless_task_failed, not failed',
    from: inPhase('running', { type: 'prebuild' }),
    event: { type: 'runtime-exited', state: crashed },
    phase: 'stopping',
    effects: ['release-slot', 'stop-process'],
    check: (r) =>
      expect([r.conditions.failed, r.conditions.headlessTaskFailed]).toEqual(['', 'headless task failed: exit code 3']),
  },
  {
    name: 'StopWorkspace(NORMALLY) with its grace period',
    from: inPhase('running'),
    event: { type: 'stop-requested', policy: 'normally', byRequest: true, reason: 'regular-stop' },
    phase: 'stopping',
    effects: ['release-slot', 'stop-process'],
    check: (r) => expect([r.conditions.stoppedByRequest, r.conditions.aborted]).toEqual([true, false]),
  },
  {
    name: 'ABORT while stopping NORMALLY escalates: aborted, shorter grace to the runtime',
    from: inPhase('stopping'),
    event: { type: 'stop-requested', policy: 'abort', byRequest: true, reason: 'aborted' },
    phase: 'stopping',
    effects: ['escalate-stop'],
    check: (r) => expect([r.conditions.aborted, r.progress.stopPolicy]).toEqual([true, 'abort']),
  },
  {
    name: 'a timeout while running stops NORMALLY',
    from: inPhase('running'),
    event: { type: 'timed-out', rule: 'inactivity', message: 'timed out' },
    phase: 'stopping',
    effects: ['release-slot', 'stop-process'],
    check: (r) =>
      expect([r.conditions.timeout, r.conditions.failed, r.progress.stopReason]).toEqual(['timed out', '', 'timeout']),
  },
  {
    name: 'the closed rule: reason tab-closed',
    from: inPhase('running'),
    event: { type: 'timed-out', rule: 'closed', message: 'closed' },
    phase: 'stopping',
    effects: ['release-slot', 'stop-process'],
    check: (r) => expect(r.progress.stopReason).toBe('tab-closed'),
  },
  {
    name: 'a stop that timed out is forced to STOPPED',
    from: inPhase('stopping'),
    event: { type: 'timed-out', rule: 'stopping', message: 'too slow' },
    phase: 'stopped',
    effects: ['force-kill', 'release-port'],
    failed: /did not finish stopping in time: too slow/,
  },
  {
    name: 'process stopped, content ready: dispose with backup',
    from: inPhase('stopping'),
    event: { type: 'process-stopped' },
    phase: 'stopping',
    effects: ['dispose-content'],
  },
  {
    name: 'process stopped, nothing initialised: STOPPED',
    from: inPhase('stopping', {
      progress: { ...inPhase('stopping').progress, initRequested: false, contentReady: false },
    }),
    event: { type: 'process-stopped' },
    phase: 'stopped',
    effects: ['release-port'],
  },
  {
    name: 'a prebuild: snapshot first',
    from: inPhase('stopping', { type: 'prebuild' }),
    event: { type: 'process-stopped' },
    phase: 'stopping',
    effects: ['take-snapshot'],
  },
  {
    name: 'disposed: STOPPED with the final backup complete',
    from: inPhase('stopping'),
    event: { type: 'content-disposed', finalBackupComplete: true },
    phase: 'stopped',
    effects: ['release-port'],
    check: (r) =>
      expect([r.conditions.finalBackupComplete, r.conditions.deployed, r.progress.disposed]).toEqual([
        true,
        false,
        true,
      ]),
  },
  {
    name: 'a kill that fails: STOPPED, content kept, nothing disposed',
    from: inPhase('stopping'),
    event: { type: 'kill-failed', reason: 'EPERM' },
    phase: 'stopped',
    effects: [],
    failed: /cannot stop the workspace process: EPERM; its content was kept/,
    check: (r) => expect(r.progress.disposed).toBe(false),
  },
  {
    name: 'runtime unknown after a restart: INTERRUPTED, not failed',
    from: inPhase('running'),
    event: { type: 'runtime-unknown', reason: 'list failed' },
    phase: 'interrupted',
    effects: [],
    check: (r) => expect(r.conditions.failed).toBe(''),
  },
  {
    name: 'an interrupted workspace found ready: RUNNING again',
    from: inPhase('interrupted', { message: 'x' }),
    event: { type: 'runtime-found', state: readyState },
    phase: 'running',
    effects: ['release-slot'],
    check: (r) => expect(r.message).toBe(''),
  },
  {
    name: 'an interrupted workspace whose process is gone: failed',
    from: inPhase('interrupted'),
    event: { type: 'runtime-gone', reason: 'no pid' },
    phase: 'stopping',
    effects: ['release-slot', 'stop-process'],
    failed: /workspace process is gone: no pid/,
  },
  {
    name: 'a port allocated after a stop began is released',
    from: inPhase('stopping'),
    event: { type: 'port-allocated', port: 30_009 },
    phase: 'stopping',
    effects: ['release-port'],
  },
  {
    name: 'a process started after a stop began is recorded (the stop stops it)',
    from: inPhase('stopping', { conditions: { ...emptyConditions, deployed: false } }),
    event: { type: 'process-started', state: alive },
    phase: 'stopping',
    effects: ['release-slot'],
    check: (r) => expect(r.conditions.deployed).toBe(true),
  },
  {
    name: 'an init progress that arrives when RUNNING does not overwrite its status message',
    from: inPhase('running', { message: 'isolation: none' }),
    event: { type: 'content-progress', message: 'git clone failed, retrying (attempt 2 of at most 7)' },
    phase: 'running',
    effects: [],
    check: (r) => expect(r.message).toBe('isolation: none'),
  },
  {
    name: "an init the daemon refused as another workspace's content: stopping, and its stop disposes nothing",
    from: inPhase('initializing', { progress: { ...inPhase('initializing').progress, initRequested: true } }),
    event: { type: 'content-failed', reason: "holds another workspace's content", foreign: true },
    phase: 'stopping',
    effects: ['release-slot', 'stop-process'],
    failed: /Content initialization failed: holds another workspace's content/,
    check: (r) => {
      expect(r.progress.initRequested).toBe(false);
      expect(types(transition(r, { type: 'process-stopped' }, ctx).effects)).not.toContain('dispose-content');
    },
  },
  {
    name: 'a cancelled init after a stop began is not a failure',
    from: inPhase('stopping'),
    event: { type: 'content-failed', reason: 'cancelled' },
    phase: 'stopping',
    effects: [],
    check: (r) => expect(r.conditions.failed).toBe(''),
  },
];

describe('transition: the rule table', () => {
  for (const row of rows) {
    it(row.name, () => {
      const { record, effects } = transition(row.from, row.event, ctx);
      expect(record.phase).toBe(row.phase);
      expect(types(effects)).toEqual(row.effects);
      if (row.failed) expect(record.conditions.failed).toMatch(row.failed);
      row.check?.(record);
    });
  }

  it('the stop effect carries the grace period of the policy', () => {
    for (const policy of ['normally', 'immediately', 'abort'] as const) {
      const { effects } = transition(
        inPhase('running'),
        { type: 'stop-requested', policy, byRequest: true, reason: 'regular-stop' },
        ctx,
      );
      expect(effects).toContainEqual({ type: 'stop-process', graceMs: ctx.graceMs[policy] });
    }
  });

  it('the first failure wins', () => {
    const first = transition(inPhase('running'), { type: 'runtime-exited', state: crashed }, ctx).record;
    const second = transition(
      first,
      { type: 'dispose-failed', backup: true, notFound: false, reason: 'later' },
      ctx,
    ).record;
    expect(second.conditions.failed).toMatch(/exited unexpectedly/);
    expect(second.phase).toBe('stopped');
  });
});
