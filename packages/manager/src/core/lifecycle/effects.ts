/**
 * The effect runner: performs the effects a transition asks for (runtime calls, daemon calls, ports, start
 * slots) and feeds each outcome back as an event. It decides nothing about the lifecycle: every failure becomes
 * an event for the transition function, and an effect that throws unexpectedly becomes `internal-error`.
 *
 * Effects of one workspace run concurrently, with one rule: a stop first aborts the start effects still running
 * and waits for them, so the two never touch the runtime at the same time.
 *
 * @module
 */
import { join } from 'node:path';
import { AcquireAborted, isRetryableError, isWorkbayError } from '@workbay/api';
import type { OwnerSlots, Release, RuntimeWorkspaceSpec, WorkspaceRuntime } from '@workbay/api';
import type { ContentService } from '../../content/content-service.js';
import type { GitStatusInfo, WorkspaceRecord } from '../../domain/types.js';
import type { Logger } from '../../logger.js';
import type { ManagerMetrics } from '../../metrics.js';
import { FlowAborted, checkAborted, errorMessage, sleep, withRetries } from '../async.js';
import type { RetryPolicy } from '../async.js';
import type { IdePorts } from '../port-allocator.js';
import { contentDirOf } from '../records.js';
import { writeAuthorizedKeys } from '../ssh-keys.js';
import type { LifecycleEffect, LifecycleEvent } from './events.js';
import { defaultInitProgressPollMs, watchInitProgress } from './init-progress.js';

export interface EffectDeps {
  readonly runtime: WorkspaceRuntime;
  readonly content: ContentService;
  readonly ports: IdePorts;
  /** The node's start slots, shared fairly between owners (`maxConcurrentStarts`, `maxConcurrentStartsPerOwner`). */
  readonly startSlots: OwnerSlots;
  readonly logger: Logger;
  readonly metrics?: ManagerMetrics;
  /** Daemon calls are retried this way while the daemon is unavailable (a restart). */
  readonly daemonRetry: RetryPolicy;
  /** How often a failed stop is retried as a kill before the workspace is given up as unkillable. */
  readonly killRetry: RetryPolicy;
  readonly workingArea: string;
  readonly runtimeSpec: (record: WorkspaceRecord) => RuntimeWorkspaceSpec;
  readonly storageQuotaOf: (record: WorkspaceRecord) => number;
  readonly get: (id: string) => WorkspaceRecord | undefined;
  /** How often the daemon's initialization progress is polled while content initialises (default 1 s). */
  readonly initProgressPollMs?: number;
  readonly dispatch: (id: string, event: LifecycleEvent) => void;
}

type TaskKind = 'start' | 'stop' | 'other';

interface Task {
  readonly kind: TaskKind;
  readonly controller: AbortController;
  done: Promise<void>;
}

const startEffects: ReadonlySet<LifecycleEffect['type']> = new Set([
  'acquire-slot',
  'allocate-port',
  'init-content',
  'write-ssh-keys',
  'start-process',
]);

export class EffectRunner {
  private readonly tasks = new Map<string, Set<Task>>();
  private readonly slotHolders = new Map<string, Release>();
  private closing = false;

  constructor(private readonly deps: EffectDeps) {}

  run(id: string, effect: LifecycleEffect): void {
    switch (effect.type) {
      case 'release-slot':
        this.releaseSlot(id);
        return;
      case 'release-port':
        this.deps.ports.release(effect.port);
        return;
      case 'force-kill':
        this.cancel(id);
        this.spawn(id, 'other', () => this.forceKill(id));
        return;
      default:
        this.spawn(
          id,
          startEffects.has(effect.type) ? 'start' : effect.type === 'stop-process' ? 'stop' : 'other',
          (signal) => this.perform(id, effect, signal),
        );
    }
  }

  /** True while any effect of the workspace runs. */
  isBusy(id: string): boolean {
    return (this.tasks.get(id)?.size ?? 0) > 0;
  }

  /** Aborts every effect of the workspace (their outcomes are dropped). */
  cancel(id: string): void {
    for (const task of this.tasks.get(id) ?? []) task.controller.abort();
  }

  /** Shutdown: aborts everything and waits; outcomes are dropped so that a restarted manager resumes instead. */
  async close(): Promise<void> {
    this.closing = true;
    const all = [...this.tasks.values()].flatMap((set) => [...set]);
    for (const task of all) task.controller.abort();
    await Promise.allSettled(all.map((t) => t.done));
  }

  private spawn(id: string, kind: TaskKind, body: (signal: AbortSignal) => Promise<LifecycleEvent | undefined>): void {
    const task: Task = { kind, controller: new AbortController(), done: Promise.resolve() };
    const set = this.tasks.get(id) ?? new Set<Task>();
    this.tasks.set(id, set);
    set.add(task);
    task.done = (async () => {
      let outcome: LifecycleEvent | undefined;
      try {
        outcome = await body(task.controller.signal);
      } catch (error) {
        // Deliberate: an aborted effect has no outcome; whoever aborted it (a stop, shutdown) owns the workspace.
        if (error instanceof FlowAborted || task.controller.signal.aborted) return;
        this.deps.logger.error({ err: error, workspace: id, effect: kind }, 'workspace effect failed unexpectedly');
        outcome = { type: 'internal-error', reason: errorMessage(error) };
      }
      if (outcome && !this.closing) this.deps.dispatch(id, outcome);
    })().finally(() => {
      set.delete(task);
      if (set.size === 0 && this.tasks.get(id) === set) this.tasks.delete(id);
    });
  }

  private releaseSlot(id: string): void {
    // Waiting for a slot is a start task: a stop aborts it. A held slot is given back here, once.
    this.slotHolders.get(id)?.();
    this.slotHolders.delete(id);
  }

  private async perform(id: string, effect: LifecycleEffect, signal: AbortSignal): Promise<LifecycleEvent | undefined> {
    const record = this.deps.get(id);
    if (!record) return undefined;
    const log = this.deps.logger.child({ workspace: id });
    switch (effect.type) {
      case 'acquire-slot': {
        const release = await this.deps.startSlots.acquire(record.owner, signal).catch((error: unknown) => {
          // The semaphore's own abort is the flow's abort: no outcome, whoever aborted owns the workspace.
          if (error instanceof AcquireAborted) throw new FlowAborted();
          throw error;
        });
        // A slot won after the start was aborted, or a second one for the same start, goes straight back.
        if (signal.aborted || this.slotHolders.has(id)) {
          release();
          checkAborted(signal);
          return { type: 'slot-acquired' };
        }
        this.slotHolders.set(id, release);
        return { type: 'slot-acquired' };
      }

      case 'allocate-port':
        try {
          // Not aborted midway: an allocated port is reported (and released by the transition if unwanted).
          return { type: 'port-allocated', port: await this.deps.ports.allocate() };
        } catch (error) {
          return { type: 'port-failed', reason: errorMessage(error) };
        }

      case 'init-content':
        this.prepareRuntime(record, log);
        return this.initContent(record, signal, log);

      case 'write-ssh-keys':
        try {
          await writeAuthorizedKeys(contentDirOf(record, this.deps.workingArea), record.spec.sshPublicKeys);
          return { type: 'ssh-keys-written' };
        } catch (error) {
          log.warn({ err: error }, 'cannot write the SSH keys');
          return { type: 'ssh-keys-failed', reason: errorMessage(error) };
        }

      case 'start-process':
        try {
          // A runtime briefly out of reach is retried like the daemon: an API server restarting answers
          // UNAVAILABLE, then PERMISSION_DENIED for a second or two until its RBAC caches are filled again.
          // Each attempt first looks for the process an earlier attempt may have created after all.
          const state = await withRetries(
            async () => {
              const existing = await this.deps.runtime.inspect(id);
              return existing && existing.status !== 'exited'
                ? existing
                : await this.deps.runtime.start(this.deps.runtimeSpec(record));
            },
            this.deps.daemonRetry,
            signal,
            (error, attempt) =>
              log.warn({ err: error, attempt }, 'the runtime could not start the workspace; retrying'),
            (error) => isRetryableError(error) || isWorkbayError(error, 'permission-denied'),
          );
          // Reported even when a stop aborted the start meanwhile: the stop must know that a process runs.
          return { type: 'process-started', state };
        } catch (error) {
          log.warn({ err: error }, 'the runtime could not start the workspace');
          return { type: 'process-failed', reason: errorMessage(error) };
        }

      case 'stop-process':
        return this.stopProcess(id, effect.graceMs, signal, log);

      case 'escalate-stop':
        await this.deps.runtime.stop(id, { gracePeriodMs: effect.graceMs, signal }).catch((error: unknown) => {
          // Deliberate: the stop already under way owns the outcome (it kills, or reports kill-failed).
          log.warn({ err: error }, 'escalating the stop failed; the running stop continues');
        });
        return undefined;

      case 'take-snapshot':
        return this.takeSnapshot(record, signal, log);

      case 'dispose-content':
        return this.dispose(record, effect, signal, log);

      default:
        throw new Error(`effect ${effect.type} is not performed asynchronously`);
    }
  }

  /**
   * Lets the runtime set up what does not depend on the content (cgroup, network) while the daemon produces it. Never
   * waited for: the start takes what it made, and the stop that every failed start ends in gives back what it did not.
   */
  private prepareRuntime(record: WorkspaceRecord, log: Logger): void {
    const runtime = this.deps.runtime;
    if (!runtime.prepare) return;
    const spec = this.deps.runtimeSpec(record);
    (async () => runtime.prepare?.(spec))().catch((error: unknown) => {
      // Deliberate: a runtime that could not prepare sets everything up in start(), which reports its own failure.
      log.debug({ err: error }, 'the runtime could not prepare the start ahead');
    });
  }

  /** InitWorkspace (or, for a resumed start, WaitForInit), with the daemon's retries shown in the status meanwhile. */
  private async initContent(record: WorkspaceRecord, signal: AbortSignal, log: Logger): Promise<LifecycleEvent> {
    const watch = watchInitProgress({
      id: record.id,
      content: this.deps.content,
      intervalMs: this.deps.initProgressPollMs ?? defaultInitProgressPollMs,
      signal,
      logger: log,
      onMessage: (message) => this.deps.dispatch(record.id, { type: 'content-progress', message }),
    });
    try {
      return await this.initOrAwaitContent(record, signal, log);
    } finally {
      watch.stop();
    }
  }

  private async initOrAwaitContent(record: WorkspaceRecord, signal: AbortSignal, log: Logger): Promise<LifecycleEvent> {
    const id = record.id;
    try {
      const result = await this.deps.content.initWorkspace(
        {
          instanceId: id,
          owner: record.owner,
          metaId: record.metaId,
          initializer: record.spec.initializer,
          storageQuotaBytes: this.deps.storageQuotaOf(record),
        },
        signal,
      );
      return {
        type: 'content-ready',
        contentDir: result.contentLocation ?? join(this.deps.workingArea, id),
        metrics: result.metrics,
        nodeName: result.nodeName,
      };
    } catch (error) {
      checkAborted(signal);
      if (!isWorkbayError(error, 'already-exists')) {
        log.warn({ err: error }, 'content initialization failed');
        // PERMISSION_DENIED: the daemon holds another workspace's content under this id (see the event).
        const foreign = isWorkbayError(error, 'permission-denied');
        return { type: 'content-failed', reason: errorMessage(error), ...(foreign ? { foreign } : {}) };
      }
    }
    // A resumed start: the daemon has (or is producing) the content already.
    try {
      await this.deps.content.waitForInit(id, signal);
      return { type: 'content-ready', contentDir: join(this.deps.workingArea, id) };
    } catch (error) {
      checkAborted(signal);
      return { type: 'content-failed', reason: errorMessage(error) };
    }
  }

  private async stopProcess(id: string, graceMs: number, signal: AbortSignal, log: Logger): Promise<LifecycleEvent> {
    // End the start first (a process it launches meanwhile is recorded before we go on, and stopped below).
    const starts = [...(this.tasks.get(id) ?? [])].filter((t) => t.kind === 'start');
    for (const task of starts) task.controller.abort();
    await Promise.allSettled(starts.map((t) => t.done));
    checkAborted(signal);
    try {
      // The signal ends a stop still waiting for confirmation when the manager shuts down (a restart resumes it).
      await this.deps.runtime.stop(id, { gracePeriodMs: graceMs, signal });
      return { type: 'process-stopped' };
    } catch (error) {
      log.warn({ err: error }, 'the runtime could not stop the workspace cleanly; killing it');
    }
    try {
      await withRetries(
        () => this.deps.runtime.stop(id, { gracePeriodMs: 0, signal }),
        this.deps.killRetry,
        signal,
        (error, attempt) => log.warn({ err: error, attempt }, 'killing the workspace failed; retrying'),
        () => true,
      );
      return { type: 'process-stopped' };
    } catch (error) {
      checkAborted(signal);
      log.error({ err: error }, 'cannot kill the workspace process; its content is kept');
      return { type: 'kill-failed', reason: errorMessage(error) };
    }
  }

  private async forceKill(id: string): Promise<undefined> {
    await this.deps.runtime.stop(id, { gracePeriodMs: 0 }).catch((error: unknown) => {
      // Reported, not retried: the workspace already ended STOPPED with the timeout as its failure.
      this.deps.logger.error({ err: error, workspace: id }, 'cannot kill a workspace whose stop timed out');
    });
    return undefined;
  }

  private async takeSnapshot(record: WorkspaceRecord, signal: AbortSignal, log: Logger): Promise<LifecycleEvent> {
    const labels = labelsOf(record);
    try {
      const url = await this.retryDaemon(() => this.deps.content.takeSnapshot(record.id, false), signal, log);
      this.deps.metrics?.backupsTotal.inc(labels);
      return { type: 'snapshot-taken', url };
    } catch (error) {
      checkAborted(signal);
      this.deps.metrics?.backupFailuresTotal.inc(labels);
      return { type: 'snapshot-failed', reason: errorMessage(error) };
    }
  }

  private async dispose(
    record: WorkspaceRecord,
    effect: Extract<LifecycleEffect, { type: 'dispose-content' }>,
    signal: AbortSignal,
    log: Logger,
  ): Promise<LifecycleEvent> {
    const labels = labelsOf(record);
    try {
      const result = await this.retryDaemon(
        () => this.disposeAfterInit(record.id, effect.backup, effect.mayBeInitializing, signal),
        signal,
        log,
      );
      if (effect.backup) this.deps.metrics?.backupsTotal.inc(labels);
      return { type: 'content-disposed', finalBackupComplete: effect.finalBackup, gitStatus: result.gitStatus };
    } catch (error) {
      checkAborted(signal);
      const notFound = isWorkbayError(error, 'not-found');
      if (!(notFound && !effect.backup))
        log.error({ err: error, backup: effect.backup }, 'disposing the workspace content failed');
      if (effect.backup) this.deps.metrics?.backupFailuresTotal.inc(labels);
      return { type: 'dispose-failed', backup: effect.backup, notFound, reason: errorMessage(error) };
    }
  }

  /**
   * DisposeWorkspace of a workspace whose content may still be initializing (a stop during the start, or a start a
   * restart interrupted). The daemon ends a running initialization when asked to dispose (red team round 12, G2: a
   * slow remote held the stop for the whole clone); one that refuses while initializing (an older daemon) is asked
   * again until the initialization ended.
   */
  private async disposeAfterInit(
    id: string,
    backup: boolean,
    mayBeInitializing: boolean,
    signal: AbortSignal,
  ): Promise<{ gitStatus?: GitStatusInfo }> {
    for (let delay = 100; ; delay = Math.min(delay * 2, 2_000)) {
      try {
        return await this.deps.content.disposeWorkspace(id, backup, signal);
      } catch (error) {
        const stillInitializing =
          mayBeInitializing && isWorkbayError(error, 'failed-precondition') && /initializ/.test(errorMessage(error));
        if (!stillInitializing) throw error;
        await this.deps.content.waitForInit(id, signal).catch((waitError: unknown) => {
          // Deliberate: an init that failed or never ran leaves nothing to wait for; the next DisposeWorkspace
          // reports whatever state the daemon really has.
          checkAborted(signal);
          this.deps.logger.debug({ err: waitError, workspace: id }, 'no initialisation to wait for before disposing');
        });
        // The stopping timeout bounds this loop.
        await sleep(delay, signal);
      }
    }
  }

  /**
   * Retries a daemon call that failed on the way (UNAVAILABLE, ABORTED), not one the daemon refused: its
   * RESOURCE_EXHAUSTED answers (a full storage or disk, an owner's kept workspaces, its budgets) hold for longer than
   * the retries last, and a final backup into a full storage re-uploaded up to the free space on each of its five
   * attempts (red team round 14, F9).
   */
  private retryDaemon<T>(call: () => Promise<T>, signal: AbortSignal, log: Logger): Promise<T> {
    return withRetries(
      call,
      this.deps.daemonRetry,
      signal,
      (error, attempt) => log.warn({ err: error, attempt }, 'daemon call failed; retrying'),
      (error) => isWorkbayError(error, 'unavailable') || isWorkbayError(error, 'aborted'),
    );
  }
}

export function labelsOf(record: WorkspaceRecord): { type: string; class: string } {
  return { type: record.type, class: record.spec.className };
}
