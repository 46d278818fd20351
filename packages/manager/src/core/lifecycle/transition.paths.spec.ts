/**
 * The transition function driven through whole lifecycles, with every effect succeeding except the one a test
 * makes fail: every failure path ends in STOPPED with the reason in conditions.failed (invariant 4).
 */
import { describe, expect, it } from 'vitest';
import type { WorkspaceRecord } from '../../domain/types.js';
import { makeRecord } from '../../test-support/records.js';
import type { LifecycleEffect, LifecycleEvent } from './events.js';
import { transition } from './transition.js';
import { crashed, ctx, readyState } from '../../test-support/lifecycle-fixtures.js';

/** The outcome a successful effect reports (what the effect runner would feed back). */
function success(effect: LifecycleEffect, record: WorkspaceRecord): LifecycleEvent | undefined {
  switch (effect.type) {
    case 'acquire-slot':
      return { type: 'slot-acquired' };
    case 'allocate-port':
      return { type: 'port-allocated', port: 30_100 };
    case 'init-content':
      return { type: 'content-ready', contentDir: `/w/${record.id}` };
    case 'write-ssh-keys':
      return { type: 'ssh-keys-written' };
    case 'start-process':
      return { type: 'process-started', state: readyState };
    case 'stop-process':
      return { type: 'process-stopped' };
    case 'take-snapshot':
      return { type: 'snapshot-taken', url: 'snap@bucket' };
    case 'dispose-content':
      return { type: 'content-disposed', finalBackupComplete: effect.finalBackup };
    default:
      return undefined;
  }
}

/**
 * Drives a record from `resume` with successful effects, except that the effect named `failAt` reports `failure`
 * instead; `after` is injected once the workspace is RUNNING.
 */
function drive(
  record: WorkspaceRecord,
  failAt?: { effect: LifecycleEffect['type']; failure: LifecycleEvent },
  after?: LifecycleEvent,
): { record: WorkspaceRecord; effects: string[] } {
  const queue: LifecycleEvent[] = [{ type: 'resume' }];
  const seen: string[] = [];
  let injected = false;
  for (let steps = 0; queue.length > 0 && steps < 50; steps += 1) {
    const result = transition(record, queue.shift()!, ctx);
    record = result.record;
    for (const effect of result.effects) {
      seen.push(effect.type);
      const outcome = failAt?.effect === effect.type ? failAt.failure : success(effect, record);
      if (outcome) queue.push(outcome);
    }
    if (record.phase === 'running' && after && !injected) {
      injected = true;
      queue.push(after);
    }
  }
  return { record, effects: seen };
}

describe('transition: whole lifecycles', () => {
  it('start to RUNNING, stop NORMALLY to STOPPED with the final backup', () => {
    const stop: LifecycleEvent = {
      type: 'stop-requested',
      policy: 'normally',
      byRequest: true,
      reason: 'regular-stop',
    };
    const { record, effects } = drive(makeRecord({ phase: 'pending' }), undefined, stop);
    expect(record.phase).toBe('stopped');
    expect(record.conditions).toMatchObject({
      failed: '',
      finalBackupComplete: true,
      stoppedByRequest: true,
      deployed: false,
    });
    expect(effects).toEqual([
      'acquire-slot',
      'allocate-port',
      'init-content',
      'start-process',
      'release-slot',
      'release-slot',
      'stop-process',
      'dispose-content',
      'release-port',
    ]);
  });

  it("RUNNING carries the runtime's notice (a workspace that is not isolated says so in its status)", () => {
    const record = makeRecord({ phase: 'initializing', progress: { ...makeRecord().progress, contentReady: true } });
    const notice = 'not isolated: workspaces run as trusted processes of user alice';
    const { record: running } = transition(record, { type: 'runtime-ready', state: { ...readyState, notice } }, ctx);
    expect(running.phase).toBe('running');
    expect(running.message).toBe(notice);
  });

  it('ABORT: STOPPED without a backup', () => {
    const abort: LifecycleEvent = { type: 'stop-requested', policy: 'abort', byRequest: true, reason: 'aborted' };
    const { record, effects } = drive(makeRecord({ phase: 'pending' }), undefined, abort);
    expect(record.phase).toBe('stopped');
    expect(record.conditions.finalBackupComplete).toBe(false);
    expect(effects).toContain('dispose-content');
  });

  const failures: ReadonlyArray<[string, LifecycleEffect['type'] | 'after', LifecycleEvent, RegExp, boolean]> = [
    [
      'no port',
      'allocate-port',
      { type: 'port-failed', reason: 'range exhausted' },
      /cannot create the workspace: range exhausted/,
      false,
    ],
    [
      'content init fails',
      'init-content',
      { type: 'content-failed', reason: 'clone failed' },
      /Content initialization failed: clone failed/,
      false,
    ],
    [
      'SSH keys cannot be written',
      'write-ssh-keys',
      { type: 'ssh-keys-failed', reason: 'ELOOP' },
      /cannot write the SSH keys: ELOOP/,
      true,
    ],
    [
      'the process cannot start',
      'start-process',
      { type: 'process-failed', reason: 'no image' },
      /cannot start the workspace process: no image/,
      true,
    ],
    ['the process crashes', 'after', { type: 'runtime-exited', state: crashed }, /exited unexpectedly/, true],
    [
      'the process is gone after a restart',
      'after',
      { type: 'runtime-gone', reason: 'pid 7 gone' },
      /workspace process is gone/,
      true,
    ],
    ['an internal error', 'after', { type: 'internal-error', reason: 'bug' }, /internal error: bug/, true],
    [
      'the final backup fails',
      'dispose-content',
      { type: 'dispose-failed', backup: true, notFound: false, reason: 'daemon gone' },
      /Backup failed: daemon gone/,
      true,
    ],
    [
      'the kill fails',
      'stop-process',
      { type: 'kill-failed', reason: 'EPERM' },
      /cannot stop the workspace process: EPERM/,
      true,
    ],
  ];

  for (const [name, at, failure, reason, initialised] of failures) {
    it(`${name}: ends STOPPED with the reason in conditions.failed`, () => {
      const record = makeRecord({
        phase: 'pending',
        spec: { ...makeRecord().spec, sshPublicKeys: at === 'write-ssh-keys' ? ['ssh-ed25519 AAAA'] : [] },
      });
      const stopAfter: LifecycleEvent = {
        type: 'stop-requested',
        policy: 'normally',
        byRequest: true,
        reason: 'regular-stop',
      };
      const { record: end, effects } =
        at === 'after' ? drive(record, undefined, failure) : drive(record, { effect: at, failure }, stopAfter);
      expect(end.phase).toBe('stopped');
      expect(end.conditions.failed).toMatch(reason);
      // Content that never finished initialising is never backed up.
      if (!initialised) expect(end.conditions.finalBackupComplete).toBe(false);
      // A failed kill is not followed by a backup or a deletion.
      if (at === 'stop-process') expect(effects).not.toContain('dispose-content');
    });
  }
});
