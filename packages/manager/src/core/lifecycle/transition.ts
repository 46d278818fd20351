/**
 * The workspace lifecycle as one pure function: `transition(record, event, context) → { record', effects }`.
 * It performs nothing; the effect runner (`./effects.ts`) performs the effects and feeds their outcomes back as
 * events. The rules, checkable against the original's (inventory §2.6, §2.10):
 *
 * | phase | events that move it | effects asked for |
 * |---|---|---|
 * | pending | slot-acquired → creating | allocate-port |
 * | creating | port-allocated → initializing | init-content |
 * | initializing | content-progress (message only); content-ready; ssh-keys-written; process-started (ready → running) | write-ssh-keys, start-process |
 * | running | runtime-exited (regular: failed; headless: completed or headless task failed) → stopping | stop-process |
 * | interrupted | runtime-found → running; runtime-gone → failed, stopping | stop-process |
 * | stopping | process-stopped → snapshot (prebuild) → dispose (backup unless aborted or never initialised) → stopped | take-snapshot, dispose-content, release-port |
 * | stopped | nothing (terminal) | |
 *
 * Failure rules:
 * - Every failure records the first reason in `conditions.failed` and stops IMMEDIATELY; every path ends in
 *   STOPPED (invariant 4). Content that was never initialised is not backed up (§2.10 "no backup if content
 *   init did not happen"), ABORT skips the backup (§2.8), and a prebuild's result is a snapshot (§2.9).
 * - A process that could not be killed is never backed up and deleted underneath (it may still write): the
 *   workspace ends STOPPED with the reason, its content kept for an operator.
 * - A runtime that cannot be asked after a restart makes running workspaces INTERRUPTED, never failed: they may
 *   still be running.
 * - Timeouts (`../../domain/timeouts.ts`, §2.6): a timed-out workspace stops NORMALLY with `conditions.timeout`;
 *   a stop that itself timed out is forced to STOPPED with the reason.
 * - Outcomes of start steps that arrive after a stop began are ignored (the stop owns the workspace then), except
 *   an allocated port (released) and a started process (recorded, so that the stop stops it).
 *
 * @module
 */
import { isStarting, withConditions, withFailure, withPhase, withProgress } from '../../domain/status.js';
import type { StopPolicy, StopReason, WorkspaceRecord } from '../../domain/types.js';
import type { LifecycleEffect, LifecycleEvent, RuntimeState, TransitionContext, TransitionResult } from './events.js';

type Result = TransitionResult<WorkspaceRecord>;

const none = (record: WorkspaceRecord, ...effects: LifecycleEffect[]): Result => ({ record, effects });

export function transition(record: WorkspaceRecord, event: LifecycleEvent, ctx: TransitionContext): Result {
  if (record.phase === 'stopped') return none(record);
  switch (event.type) {
    case 'resume':
      if (isStarting(record.phase)) return none(record, { type: 'acquire-slot' });
      if (record.phase === 'stopping') {
        return none(record, { type: 'stop-process', graceMs: graceOf(ctx, record.progress.stopPolicy) });
      }
      return none(record); // running/interrupted: recovery reports what the runtime knows

    case 'slot-acquired':
      return isStarting(record.phase) ? nextStartStep(record, ctx) : none(record, { type: 'release-slot' });

    case 'port-allocated':
      if (!isStarting(record.phase) || record.progress.idePort) {
        return none(record, { type: 'release-port', port: event.port });
      }
      return nextStartStep(withProgress(record, { idePort: event.port }), ctx);

    case 'port-failed':
      return startFailure(record, `cannot create the workspace: ${event.reason}`, ctx);

    case 'content-ready':
      if (!isStarting(record.phase)) return none(record);
      return nextStartStep(
        {
          ...withProgress(record, {
            contentReady: true,
            contentDir: event.contentDir,
            ...(event.nodeName ? { nodeName: event.nodeName } : {}),
          }),
          initializerMetrics: event.metrics ?? record.initializerMetrics,
          // The progress of the initialization (retries) is over with it.
          message: '',
        },
        ctx,
      );

    case 'content-progress':
      // Only while the content is still being produced: a late report never overwrites a later status.
      if (record.phase !== 'initializing' || record.progress.contentReady || record.message === event.message) {
        return none(record);
      }
      return none({ ...record, message: event.message });

    case 'content-failed': {
      // Content that is not this workspace's is never disposed by its stop.
      const ours = event.foreign ? withProgress(record, { initRequested: false }) : record;
      return startFailure(ours, `Content initialization failed: ${event.reason}`, ctx);
    }

    case 'ssh-keys-written':
      return isStarting(record.phase) ? none(record, { type: 'start-process' }) : none(record);

    case 'ssh-keys-failed':
      // Never a silent start without the keys the caller asked for.
      return startFailure(record, `cannot write the SSH keys: ${event.reason}`, ctx);

    case 'process-started': {
      // Even when a stop began meanwhile, record that it runs, so that the stop stops it.
      // The start is over either way: its slot is free (idempotent, also when the runtime reported ready first).
      const adopted = adopt(record, event.state);
      const released = { type: 'release-slot' } as const;
      if (!isStarting(record.phase)) return none(adopted, released);
      if (event.state.status === 'exited') return withEffect(exited(adopted, event.state, ctx), released);
      if (event.state.ready) return withEffect(ready(adopted, event.state, ctx), released);
      return none(adopted, released);
    }

    case 'process-failed':
      return startFailure(record, `cannot start the workspace process: ${event.reason}`, ctx);

    case 'runtime-ready':
      return ready(record, event.state, ctx);

    case 'runtime-exited':
      return exited(record, event.state, ctx);

    case 'runtime-found': {
      if (record.phase !== 'running' && record.phase !== 'interrupted') return none(record);
      const adopted = adopt(record, event.state);
      if (event.state.status === 'exited') return exited(adopted, event.state, ctx);
      if (record.phase === 'interrupted' && event.state.ready) return ready(adopted, event.state, ctx);
      return none(adopted);
    }

    case 'runtime-gone':
      if (record.phase !== 'running' && record.phase !== 'interrupted') return none(record);
      return fail(record, `workspace process is gone: ${event.reason}`, ctx);

    case 'runtime-unknown':
      if (record.phase !== 'running') return none(record);
      return none({
        ...withPhase(record, 'interrupted', ctx.now),
        message: `the runtime cannot be reached (${event.reason}); the workspace may still be running`,
      });

    case 'stop-requested':
      return beginStop(record, event.policy, event.byRequest, event.reason, ctx);

    case 'timed-out':
      if (record.phase === 'stopping') return forceStopped(record, event.message, ctx);
      return beginStop(
        withConditions(record, { timeout: event.message }),
        'normally',
        false,
        event.rule === 'closed' ? 'tab-closed' : 'timeout',
        ctx,
      );

    case 'process-stopped':
      return record.phase === 'stopping' ? afterProcessStopped(record, ctx) : none(record);

    case 'kill-failed': {
      if (record.phase !== 'stopping') return none(record);
      // The process may still run: no backup and no deletion underneath it. The content stays on the node.
      const failed = withFailure(record, `cannot stop the workspace process: ${event.reason}; its content was kept`);
      return none(withPhase(failed, 'stopped', ctx.now));
    }

    case 'snapshot-taken':
      if (record.phase !== 'stopping') return none(record);
      return none(withConditions(record, { snapshot: event.url }), disposeOf(record, true));

    case 'snapshot-failed':
      if (record.phase !== 'stopping') return none(record);
      return none(withFailure(record, `Snapshot failed: ${event.reason}`), disposeOf(record, false));

    case 'content-disposed':
      if (record.phase !== 'stopping') return none(record);
      return finish(
        {
          ...withConditions(withProgress(record, { disposed: true, contentReady: false }), {
            finalBackupComplete: event.finalBackupComplete,
          }),
          repo: event.gitStatus ?? record.repo,
        },
        ctx,
      );

    case 'dispose-failed':
      if (record.phase !== 'stopping') return none(record);
      if (event.notFound && !event.backup) {
        // Nothing to remove: the daemon never had (or already removed) the content.
        return finish(withProgress(record, { disposed: true, contentReady: false }), ctx);
      }
      // The daemon keeps the content when the backup fails (invariant 2); the failure is reported loudly.
      return finish(
        withFailure(record, `${event.backup ? 'Backup failed' : 'Content disposal failed'}: ${event.reason}`),
        ctx,
      );

    case 'internal-error':
      return fail(record, `internal error: ${event.reason}`, ctx);
  }
}

export function graceOf(ctx: TransitionContext, policy: StopPolicy | undefined): number {
  return ctx.graceMs[policy ?? 'normally'];
}

/** The next step of a start, from whatever the record already has (a resumed start skips completed steps). */
function nextStartStep(record: WorkspaceRecord, ctx: TransitionContext): Result {
  let r = record.phase === 'pending' ? withPhase(record, 'creating', ctx.now) : record;
  if (!r.progress.idePort) return none(r, { type: 'allocate-port' });
  if (r.phase === 'creating') r = withPhase(r, 'initializing', ctx.now);
  if (!r.progress.contentReady) return none(withProgress(r, { initRequested: true }), { type: 'init-content' });
  if (r.spec.sshPublicKeys.length > 0) return none(r, { type: 'write-ssh-keys' });
  return none(r, { type: 'start-process' });
}

/** Adds effects in front of a result's own; an effect type the result already asks for is not repeated. */
function withEffect(result: Result, ...effects: LifecycleEffect[]): Result {
  const added = effects.filter((e) => !result.effects.some((own) => own.type === e.type));
  return { record: result.record, effects: [...added, ...result.effects] };
}

function adopt(record: WorkspaceRecord, state: RuntimeState): WorkspaceRecord {
  return withConditions(
    withProgress(record, {
      runtimeHost: state.host,
      nodeName: state.nodeName,
      podName: state.podName ?? record.progress.podName,
      nodeIp: state.nodeIp ?? record.progress.nodeIp,
      portMap: state.portMap ?? record.progress.portMap,
    }),
    { deployed: true },
  );
}

function ready(record: WorkspaceRecord, state: RuntimeState, ctx: TransitionContext): Result {
  const startedUp = isStarting(record.phase) && record.phase !== 'pending' && record.progress.contentReady;
  if (!startedUp && record.phase !== 'interrupted') return none(record);
  // RUNNING ends the start: its slot is free (release is idempotent). A runtime that cannot isolate the
  // workspace says so in its notice, and the workspace's status carries it for as long as it runs.
  return none(
    { ...withPhase(adopt(record, state), 'running', ctx.now), message: state.notice ?? '' },
    { type: 'release-slot' },
  );
}

function exited(record: WorkspaceRecord, state: RuntimeState, ctx: TransitionContext): Result {
  if (record.phase === 'stopping') return none(record);
  const reason = state.failure ?? (state.exitCode !== undefined ? `exit code ${state.exitCode}` : 'the process ended');
  const clean = state.exitCode === 0 && !state.failure;
  if (record.type !== 'regular') {
    if (clean) return beginStop(record, 'normally', false, 'completed', ctx);
    // A failed headless task is the task's result, not a workspace failure (as in the original).
    const failedTask = withConditions(record, { headlessTaskFailed: `headless task failed: ${reason}` });
    return beginStop(failedTask, 'normally', false, 'failed', ctx);
  }
  return fail(
    record,
    clean
      ? 'the workspace process exited with code 0, but a regular workspace is not supposed to end by itself'
      : `the workspace process exited unexpectedly: ${reason}`,
    ctx,
  );
}

/** A start step failed: only while the start is still under way (a stop owns the workspace afterwards). */
function startFailure(record: WorkspaceRecord, reason: string, ctx: TransitionContext): Result {
  return isStarting(record.phase) ? fail(record, reason, ctx) : none(record);
}

/** Records the failure (the first wins) and stops IMMEDIATELY. */
function fail(record: WorkspaceRecord, reason: string, ctx: TransitionContext): Result {
  const failed = withFailure(record, reason);
  return beginStop(failed, 'immediately', false, failed.progress.everReady ? 'failed' : 'start-failure', ctx);
}

function beginStop(
  record: WorkspaceRecord,
  policy: StopPolicy,
  byRequest: boolean,
  reason: StopReason,
  ctx: TransitionContext,
): Result {
  if (record.phase === 'stopping') {
    // A second, more urgent request escalates: ABORT skips a backup that has not started, and a shorter grace
    // period is passed on to the runtime.
    const escalate = graceOf(ctx, policy) < graceOf(ctx, record.progress.stopPolicy);
    const next = withProgress(
      withConditions(record, {
        aborted: record.conditions.aborted || (policy === 'abort' && !record.progress.disposed),
        stoppedByRequest: record.conditions.stoppedByRequest || byRequest,
      }),
      escalate ? { stopPolicy: policy } : {},
    );
    return escalate && record.conditions.deployed
      ? none(next, { type: 'escalate-stop', graceMs: graceOf(ctx, policy) })
      : none(next);
  }
  const stopping = withProgress(
    withConditions(withPhase(record, 'stopping', ctx.now), {
      stoppedByRequest: record.conditions.stoppedByRequest || byRequest,
      aborted: record.conditions.aborted || policy === 'abort',
    }),
    { stopPolicy: policy, stopReason: record.progress.stopReason ?? reason },
  );
  return none(stopping, { type: 'release-slot' }, { type: 'stop-process', graceMs: graceOf(ctx, policy) });
}

function afterProcessStopped(record: WorkspaceRecord, ctx: TransitionContext): Result {
  const p = record.progress;
  if (p.disposed || !(p.initRequested || p.contentReady)) return finish(record, ctx);
  const c = record.conditions;
  if (record.type === 'prebuild' && p.contentReady && !c.aborted && !c.headlessTaskFailed) {
    // A prebuild's result is a snapshot that later workspaces start from, not a backup of its own.
    return none(record, { type: 'take-snapshot' });
  }
  return none(record, disposeOf(record, false));
}

function disposeOf(record: WorkspaceRecord, snapshotTaken: boolean): LifecycleEffect {
  const backup =
    record.progress.contentReady &&
    !record.conditions.aborted &&
    record.type !== 'imagebuild' &&
    record.type !== 'prebuild';
  return {
    type: 'dispose-content',
    backup,
    mayBeInitializing: !record.progress.contentReady,
    finalBackup: backup || snapshotTaken,
  };
}

function finish(record: WorkspaceRecord, ctx: TransitionContext): Result {
  const stopped = withConditions(withPhase(record, 'stopped', ctx.now), { deployed: false });
  return record.progress.idePort
    ? none(stopped, { type: 'release-port', port: record.progress.idePort })
    : none(stopped);
}

/** Stopping took too long: give up on it and end in STOPPED with the reason. */
function forceStopped(record: WorkspaceRecord, message: string, ctx: TransitionContext): Result {
  const forced = withFailure(
    withProgress(withConditions(record, { timeout: record.conditions.timeout || message }), { stopForced: true }),
    `the workspace did not finish stopping in time: ${message}`,
  );
  const result = finish(forced, ctx);
  return withEffect(result, { type: 'force-kill' });
}
