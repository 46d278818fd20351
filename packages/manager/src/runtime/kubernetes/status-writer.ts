/**
 * The leader's status writes: per workspace, every committed change is written in order (followers publish what
 * their watch delivers, so each visible transition must reach the object), one write in flight at a time; a run
 * of changes no subscriber sees shares one status_version and only its newest is written. A failed write is
 * retried until it succeeds, the object is gone, or this replica stops leading.
 *
 * @module
 */
import { isWorkbayError } from '@workbay/api';
import type { WorkspaceRecord } from '../../domain/types.js';
import type { Logger } from '../../logger.js';

interface WriteQueue {
  readonly records: WorkspaceRecord[];
  running: boolean;
}

export interface StatusWriterOptions {
  readonly write: (record: WorkspaceRecord) => Promise<void>;
  /** Whether this replica still leads (a deposed leader stops writing). */
  readonly leading: () => boolean;
  readonly logger: Logger;
  readonly retryMs: number;
}

export class StatusWriter {
  private readonly queues = new Map<string, WriteQueue>();
  private closing = false;

  constructor(private readonly options: StatusWriterOptions) {}

  enqueue(record: WorkspaceRecord): void {
    let queue = this.queues.get(record.id);
    if (!queue) this.queues.set(record.id, (queue = { records: [], running: false }));
    const last = queue.records.at(-1);
    if (last && last.statusVersion === record.statusVersion) queue.records[queue.records.length - 1] = record;
    else queue.records.push(record);
    if (!queue.running) void this.drain(record.id, queue);
  }

  /** Stops retrying; waits up to `graceMs` for writes in flight (the next leader writes what is left). */
  async close(graceMs: number): Promise<void> {
    this.closing = true;
    const deadline = Date.now() + graceMs;
    while ([...this.queues.values()].some((q) => q.running) && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }

  private async drain(id: string, queue: WriteQueue): Promise<void> {
    queue.running = true;
    try {
      while (queue.records.length > 0 && this.options.leading()) {
        try {
          await this.options.write(queue.records[0]!);
          queue.records.shift();
        } catch (error) {
          if (isWorkbayError(error, 'not-found')) {
            this.options.logger.error({ workspace: id }, 'the workspace object is gone; its status cannot be written');
            queue.records.length = 0;
            break;
          }
          this.options.logger.error({ err: error, workspace: id }, 'cannot write a workspace status; retrying');
          if (this.closing) break;
          await new Promise((resolve) => setTimeout(resolve, this.options.retryMs));
        }
      }
    } finally {
      queue.running = false;
      if (queue.records.length === 0) this.queues.delete(id);
    }
  }
}
