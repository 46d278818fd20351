/**
 * Recovery after a (re)start of the manager: resumes interrupted starts and stops, and asks the runtime which
 * instances still run. A runtime that cannot be asked is retried; if it still cannot answer, running workspaces
 * become INTERRUPTED (never failed: they may well be running) and are checked again in the background until the
 * runtime answers. Instances nobody owns any more are stopped.
 *
 * @module
 */
import type { RuntimeWorkspaceState, WorkspaceRuntime } from '@workbay/api';
import { isStarting } from '../domain/status.js';
import type { WorkspaceRecord } from '../domain/types.js';
import type { Logger } from '../logger.js';
import { errorMessage, withRetries } from './async.js';
import type { RetryPolicy } from './async.js';
import type { LifecycleEvent } from './lifecycle/events.js';

export interface RecoveryOptions {
  readonly runtime: WorkspaceRuntime;
  readonly get: (id: string) => WorkspaceRecord | undefined;
  readonly list: () => Iterable<WorkspaceRecord>;
  readonly dispatch: (id: string, event: LifecycleEvent) => void;
  readonly logger: Logger;
  /** How `runtime.list()` is retried at start-up. */
  readonly listRetry: RetryPolicy;
  /** How often INTERRUPTED workspaces are checked again while the runtime cannot be listed. */
  readonly recheckMs: number;
  /** Grace period for stopping orphaned instances. */
  readonly orphanGraceMs: number;
}

export class Recovery {
  private timer: NodeJS.Timeout | undefined;
  private readonly controller = new AbortController();

  constructor(private readonly options: RecoveryOptions) {}

  async recover(records: readonly WorkspaceRecord[]): Promise<void> {
    const o = this.options;
    // Starts and stops resume by themselves: each asks the runtime about its own instance.
    for (const stored of records) {
      const record = o.get(stored.id);
      if (record && (isStarting(record.phase) || record.phase === 'stopping')) {
        o.logger.info({ workspace: record.id, phase: record.phase }, 'resuming a workspace flow');
        o.dispatch(record.id, { type: 'resume' });
      }
    }
    let states: RuntimeWorkspaceState[];
    try {
      states = await withRetries(
        () => o.runtime.list(),
        o.listRetry,
        this.controller.signal,
        (error, attempt) => o.logger.warn({ err: error, attempt }, 'cannot list the runtime instances; retrying'),
        () => true,
      );
    } catch (error) {
      if (this.controller.signal.aborted) return;
      o.logger.error(
        { err: error },
        'cannot list the runtime instances; running workspaces are INTERRUPTED until the runtime answers',
      );
      for (const record of o.list()) {
        if (record.phase === 'running') o.dispatch(record.id, { type: 'runtime-unknown', reason: errorMessage(error) });
      }
      this.scheduleRecheck();
      return;
    }
    this.apply(states);
  }

  close(): void {
    this.controller.abort();
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
  }

  private scheduleRecheck(): void {
    if (this.controller.signal.aborted) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.options.runtime.list().then(
        (states) => this.apply(states),
        (error: unknown) => {
          this.options.logger.warn({ err: error }, 'the runtime still cannot list its instances');
          this.scheduleRecheck();
        },
      );
    }, this.options.recheckMs);
    this.timer.unref();
  }

  /** What the runtime knows, applied to every running or interrupted workspace; orphans are stopped. */
  private apply(states: readonly RuntimeWorkspaceState[]): void {
    if (this.controller.signal.aborted) return;
    const o = this.options;
    const byId = new Map(states.map((s) => [s.instanceId, s]));
    const targets = [...o.list()].filter((r) => r.phase === 'running' || r.phase === 'interrupted');
    for (const record of targets) {
      const state = byId.get(record.id);
      if (state && state.status !== 'exited') {
        o.logger.info({ workspace: record.id, pid: state.pid }, 're-adopted a running workspace');
        o.dispatch(record.id, { type: 'runtime-found', state: { ...state, portMap: portMapOf(state) } });
      } else {
        const reason = state?.failure ?? 'the workspace process ended while the manager was not running';
        o.logger.warn({ workspace: record.id, reason }, 'a running workspace is gone');
        o.dispatch(record.id, { type: 'runtime-gone', reason });
      }
    }
    for (const state of states) {
      const record = o.get(state.instanceId);
      if (state.status === 'exited' || (record && record.phase !== 'stopped')) continue;
      o.logger.warn({ workspace: state.instanceId }, 'stopping an orphaned runtime instance');
      o.runtime.stop(state.instanceId, { gracePeriodMs: o.orphanGraceMs }).catch((error: unknown) => {
        // Reported only: nothing of ours depends on it, and the next manager start tries again.
        o.logger.error({ err: error, workspace: state.instanceId }, 'cannot stop an orphaned runtime instance');
      });
    }
  }
}

/** Runtimes that map ports (kubernetes) add a port map to their state; the SPI type does not name it. */
export function portMapOf(state: RuntimeWorkspaceState): Readonly<Record<string, number>> | undefined {
  return (state as { portMap?: Readonly<Record<string, number>> }).portMap;
}
