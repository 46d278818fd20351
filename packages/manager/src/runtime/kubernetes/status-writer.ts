/**
 * The leader's status writes. Per workspace, every committed change reaches the object in order (followers
 * publish what their watch delivers, so each visible transition must be readable there), with one write in flight
 * at a time:
 * - a run of changes no subscriber sees shares one status_version, and only its newest is written;
 * - changes committed while a write is in flight are written together by the next one: its newest as the record,
 *   the visible ones before it as transitions (at most {@link maxTransitions}). Under load this is what keeps a
 *   follower's delay bounded: a workspace whose pending, creating, initializing and running follow each other
 *   faster than the API server answers costs two writes instead of four, and RUNNING waits behind at most one.
 * A failed write is retried (with whatever was committed meanwhile) until it succeeds, the object is gone, or this
 * replica stops leading.
 *
 * {@link StatusWriter.belowBacklog} is the leader's backpressure: new starts wait while too many workspaces have
 * writes outstanding. Without it, starts are admitted as fast as two creates take, and every change of every
 * workspace already started queues behind them in a saturated API server: measured with 1,000 starts, followers
 * then saw RUNNING 6 s (p50) after the pod ran.
 *
 * @module
 */
import { UnavailableError, isWorkbayError } from '@workbay/api';
import type { WorkspaceRecord } from '../../domain/types.js';
import type { Logger } from '../../logger.js';

/** How many earlier visible changes one write carries beside its record (bounds the object's size). */
export const maxTransitions = 8;

interface WriteQueue {
  /** Committed and not yet written, oldest first; distinct status_versions. */
  readonly records: WorkspaceRecord[];
  running: boolean;
}

export interface StatusWriterOptions {
  /** Writes `record` as the status, with `earlier` (oldest first) as the transitions before it. */
  readonly write: (record: WorkspaceRecord, earlier: readonly WorkspaceRecord[]) => Promise<void>;
  /** Whether this replica still leads (a deposed leader stops writing). */
  readonly leading: () => boolean;
  readonly logger: Logger;
  readonly retryMs: number;
}

export class StatusWriter {
  private readonly queues = new Map<string, WriteQueue>();
  private closing = false;
  /** Resolved (and dropped) once the backlog falls below their limit. */
  private waiters: { readonly limit: number; readonly resolve: () => void }[] = [];

  constructor(private readonly options: StatusWriterOptions) {}

  enqueue(record: WorkspaceRecord): void {
    let queue = this.queues.get(record.id);
    if (!queue) this.queues.set(record.id, (queue = { records: [], running: false }));
    // Only records not yet taken by a write are here, so replacing one never loses a change in flight.
    const last = queue.records.at(-1);
    if (last && last.statusVersion === record.statusVersion) queue.records[queue.records.length - 1] = record;
    else queue.records.push(record);
    if (!queue.running) void this.drain(record.id, queue);
  }

  /** How many workspaces have a status write queued or in flight. */
  get backlog(): number {
    return this.queues.size;
  }

  /** Resolves once fewer than `limit` workspaces have writes outstanding (at once when that is so already). */
  belowBacklog(limit: number): Promise<void> {
    if (this.queues.size < limit || this.closing) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push({ limit, resolve }));
  }

  /**
   * Resolves once fewer than `limit` workspaces have writes outstanding; fails with UNAVAILABLE (`what`, and why)
   * when that takes longer than `waitMs`.
   */
  async admit(limit: number, waitMs: number, what: string): Promise<void> {
    if (this.queues.size < limit) return;
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(true), waitMs)));
    const late = await Promise.race([this.belowBacklog(limit).then(() => false), timedOut]);
    clearTimeout(timer);
    if (late) {
      throw new UnavailableError(`${what}: the manager's writes to the Kubernetes API are ${waitMs} ms behind`);
    }
  }

  /** Stops retrying; waits up to `graceMs` for writes in flight (the next leader writes what is left). */
  async close(graceMs: number): Promise<void> {
    this.closing = true;
    this.release();
    const deadline = Date.now() + graceMs;
    while ([...this.queues.values()].some((q) => q.running) && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }

  private async drain(id: string, queue: WriteQueue): Promise<void> {
    queue.running = true;
    try {
      while (queue.records.length > 0 && this.options.leading()) {
        const batch = queue.records.splice(0, maxTransitions + 1);
        try {
          await this.options.write(batch.at(-1)!, batch.slice(0, -1));
        } catch (error) {
          if (isWorkbayError(error, 'not-found')) {
            this.options.logger.error({ workspace: id }, 'the workspace object is gone; its status cannot be written');
            queue.records.length = 0;
            break;
          }
          // Written again with what was committed meanwhile: back in front, where its order puts it, except a
          // record superseded since by a newer one of the same status_version.
          if (queue.records[0]?.statusVersion === batch.at(-1)!.statusVersion) batch.pop();
          queue.records.unshift(...batch);
          this.options.logger.error({ err: error, workspace: id }, 'cannot write a workspace status; retrying');
          if (this.closing) break;
          await new Promise((resolve) => setTimeout(resolve, this.options.retryMs));
        }
      }
    } finally {
      queue.running = false;
      if (queue.records.length === 0) this.queues.delete(id);
      this.release();
    }
  }

  private release(): void {
    if (this.waiters.length === 0) return;
    const size = this.queues.size;
    const ready = this.waiters.filter((w) => size < w.limit || this.closing);
    if (ready.length === 0) return;
    this.waiters = this.waiters.filter((w) => !ready.includes(w));
    for (const waiter of ready) waiter.resolve();
  }
}
