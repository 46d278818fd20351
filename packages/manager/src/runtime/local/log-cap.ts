import { fstatSync, ftruncateSync, readSync, watch } from 'node:fs';
import type { FSWatcher } from 'node:fs';
import { open, rename } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import type { PluginLogger } from '@workbay/api';

/** The previous part of a workspace's log, kept by the last rotation. */
export const rotatedLogFile = (logFile: string): string => `${logFile}.1`;

/** Rotations of one workspace are logged at most this often (the first one right away). */
const logEveryMs = 60_000;

/** The kept part starts after its first newline when there is one this early, so that it starts at a line. */
const lineSearchBytes = 64 * 1024;

interface Watched {
  readonly instanceId: string;
  readonly file: string;
  readonly handle: FileHandle;
  watcher?: FSWatcher;
  /** The running check; a change seen meanwhile sets `again` instead of starting a second one. */
  checking?: Promise<void>;
  again: boolean;
  closed: boolean;
  /** The newest kept part not yet written to `.1`, and the write in progress (newest wins, one at a time). */
  keptTail?: Buffer;
  keeping?: Promise<void>;
  rotations: number;
  unlogged: number;
  loggedAt?: number;
  failedAt?: number;
}

export interface LogCapOptions {
  /** What a workspace's log and its `.1` may take on disk together (plus the overshoot between two checks). */
  readonly maxBytes: number;
  /** Fallback check of every watched log, for changes the file watch missed or could not report. */
  readonly checkIntervalMs: number;
  readonly logger: PluginLogger;
}

/**
 * Keeps each live workspace's log (`<id>.log`, which its processes hold open with O_APPEND) under a cap while they
 * write, by copy-truncate: once the log passes half of `maxBytes`, its newest half of `maxBytes` goes to `<id>.log.1`
 * (replacing the previous one) and the log is truncated to 0, where the writers go on (O_APPEND writes at the new
 * end). The log stays a file the workspace writes directly, not a pipe through the manager, so that a workspace
 * outlives a manager restart; the cost is that the cap holds only while a runtime watches (the next runtime watches
 * the logs of the workspaces it adopts) and may be overshot by what is written between a write and the check it
 * triggers (a file watch, plus an interval in case the watch misses or cannot be set up).
 *
 * An isolated workspace's log has a writer that caps it without this race (`log-writer.ts`, rotating by rename); it
 * is not watched here (the record's `logWriter`), those started by a runtime that did not record it excepted.
 *
 * Size counts as `min(size, allocated)`: a workspace that clears O_APPEND on its output (fcntl) writes at its old
 * offset after a truncation, which makes a sparse file that is large but uses little disk; rotating it again and
 * again would only cost the manager CPU. Blocks allocated beyond the end count too, past what a file system's own
 * preallocation explains: `fallocate --keep-size` on its output reserves disk without growing the file (10 GB held at
 * size 0 in a red-team run), and only a truncation that shrinks the file gives them back, so an empty log is grown by a
 * byte first.
 */
export class LogCap {
  private readonly watched = new Map<string, Watched>();
  /** Watches still opening their log: an unwatch waits for them, so that none is left behind. */
  private readonly opening = new Map<string, Promise<void>>();
  private readonly rotateAbove: number;
  private readonly keepBytes: number;
  private timer?: NodeJS.Timeout;
  private rotationsTotal = 0;

  constructor(private readonly options: LogCapOptions) {
    this.rotateAbove = Math.floor(options.maxBytes / 2);
    this.keepBytes = options.maxBytes - this.rotateAbove;
  }

  /** Rotations of all workspace logs since this runtime started. */
  get rotations(): number {
    return this.rotationsTotal;
  }

  /** Starts capping `file`, the log of a workspace whose processes run (just started or adopted). */
  watch(instanceId: string, file: string): Promise<void> {
    if (this.watched.has(instanceId)) return Promise.resolve();
    let opening = this.opening.get(instanceId);
    if (!opening) {
      opening = this.begin(instanceId, file).finally(() => this.opening.delete(instanceId));
      this.opening.set(instanceId, opening);
    }
    return opening;
  }

  private async begin(instanceId: string, file: string): Promise<void> {
    let handle: FileHandle;
    try {
      // Read and write, but neither created nor O_APPEND: this handle only reads the tail and truncates.
      handle = await open(file, 'r+');
    } catch (error) {
      // Without its log (removed by hand) nothing can be capped; the workspace's output then goes nowhere on disk.
      this.options.logger.warn({ instanceId, file, error: String(error) }, 'cannot watch the workspace log');
      return;
    }
    const w: Watched = { instanceId, file, handle, again: false, closed: false, rotations: 0, unlogged: 0 };
    this.watched.set(instanceId, w);
    try {
      w.watcher = watch(file, { persistent: false }, () => this.schedule(w));
      w.watcher.on('error', (error) => this.watchFailed(w, error));
    } catch (error) {
      this.watchFailed(w, error);
    }
    this.timer ??= setInterval(() => {
      for (const each of this.watched.values()) this.schedule(each);
    }, this.options.checkIntervalMs).unref();
    this.schedule(w);
  }

  /** Stops capping a workspace's log after a last check (its processes are gone, or it is forgotten). */
  async unwatch(instanceId: string): Promise<void> {
    await this.opening.get(instanceId);
    const w = this.watched.get(instanceId);
    if (!w) return;
    this.watched.delete(instanceId);
    // No check starts any more and a running one ends after its pass: a workspace still flooding its log would
    // otherwise keep it going forever.
    w.closed = true;
    w.watcher?.close();
    await w.checking;
    await this.checkReporting(w);
    await w.keeping;
    // Deliberate: the handle only served this log's checks, which are over; a failed close leaves nothing to do.
    await w.handle.close().catch(() => undefined);
    if (this.watched.size === 0 && this.timer) {
      clearInterval(this.timer);
      this.timer = undefined;
    }
  }

  /** Stops capping every log (the runtime closes; the next one watches the workspaces it adopts). */
  async close(): Promise<void> {
    await Promise.all(this.opening.values());
    await Promise.all([...this.watched.keys()].map((id) => this.unwatch(id)));
  }

  private watchFailed(w: Watched, error: unknown): void {
    // inotify watches are a per-user kernel limit: without one the interval still checks, only with more overshoot.
    w.watcher?.close();
    w.watcher = undefined;
    this.options.logger.warn(
      { instanceId: w.instanceId, error: String(error), checkIntervalMs: this.options.checkIntervalMs },
      'cannot watch the workspace log for changes; checking it on an interval only',
    );
  }

  private schedule(w: Watched): void {
    if (w.closed) return;
    if (w.checking) {
      w.again = true;
      return;
    }
    w.checking = (async () => {
      do {
        w.again = false;
        await this.checkReporting(w);
      } while (w.again && !w.closed);
      w.checking = undefined;
    })();
  }

  private checkReporting(w: Watched): Promise<void> {
    return this.check(w).catch((error: unknown) => {
      // Rate-limited like the rotations: a check runs at every write the watch reports.
      const now = Date.now();
      if (w.failedAt !== undefined && now - w.failedAt < logEveryMs) return;
      w.failedAt = now;
      this.options.logger.error(
        { instanceId: w.instanceId, file: w.file, error: String(error) },
        'cannot cap the workspace log',
      );
    });
  }

  private async check(w: Watched): Promise<void> {
    const st = await w.handle.stat();
    const allocated = st.blocks * 512;
    // Reserved beyond the end: more than a file system's own speculative preallocation (xfs grows it up to the file's
    // size) plus the cap could account for.
    const reserved = allocated > 2 * st.size + this.rotateAbove;
    if (Math.min(st.size, allocated) <= this.rotateAbove && !reserved) return;
    // The newest part is read and the log truncated back to back, in three synchronous system calls: what the workspace
    // writes between the size read here and the truncation is lost, and awaited calls (a read of up to `keepBytes`,
    // then a truncation, each through the thread pool) let a workspace's last line fall in between under load. The
    // kept part is written out afterwards, off this path; the next check does not wait for it to reach the disk.
    const fd = w.handle.fd;
    const size = fstatSync(fd).size;
    const keep = Math.min(size, this.keepBytes);
    let tail = Buffer.allocUnsafe(keep);
    tail = tail.subarray(0, keep > 0 ? readSync(fd, tail, 0, keep, size - keep) : 0);
    // What was appended while that read ran (the writer's last line right after a flood, often) is read too, until
    // the size holds still, so that only the few microseconds between the last size read and the truncation remain.
    for (let end = size, round = 0; round < 8; round++) {
      const now = fstatSync(fd).size;
      if (now <= end) break;
      const more = Buffer.allocUnsafe(Math.min(now - end, this.keepBytes));
      const got = readSync(fd, more, 0, more.length, now - more.length);
      tail = Buffer.concat([tail, more.subarray(0, got)]);
      if (tail.length > this.keepBytes) tail = tail.subarray(tail.length - this.keepBytes);
      end = now;
    }
    // Truncating to the size a file has frees nothing (ext4, xfs): an empty log with blocks reserved is grown first.
    if (size === 0) ftruncateSync(fd, 1);
    ftruncateSync(fd, 0);
    const newline = tail.subarray(0, Math.min(tail.length, lineSearchBytes)).indexOf(0x0a);
    this.keepTail(w, tail.subarray(newline >= 0 ? newline + 1 : 0));
    // A workspace that filled the log this fast is likely still writing: look again now, not at its next change event.
    w.again = true;
    this.rotationsTotal++;
    w.rotations++;
    w.unlogged++;
    const now = Date.now();
    if (w.loggedAt === undefined || now - w.loggedAt >= logEveryMs) {
      this.options.logger.warn(
        {
          instanceId: w.instanceId,
          file: w.file,
          sizeBytes: st.size,
          maxBytes: this.options.maxBytes,
          rotations: w.rotations,
          rotationsSinceLastReport: w.unlogged,
        },
        'workspace log passed its cap and was rotated (older output dropped)',
      );
      w.loggedAt = now;
      w.unlogged = 0;
    }
  }

  private keepTail(w: Watched, tail: Buffer): void {
    w.keptTail = tail;
    w.keeping ??= (async () => {
      while (w.keptTail) {
        const data = w.keptTail;
        w.keptTail = undefined;
        await writeReplacing(rotatedLogFile(w.file), data).catch((error: unknown) =>
          this.options.logger.error(
            { instanceId: w.instanceId, file: w.file, error: String(error) },
            "cannot keep the workspace log's previous part",
          ),
        );
      }
      w.keeping = undefined;
    })();
  }
}

/** Writes `file` through a temp file and a rename, so that a reader never sees half of it; root-only like the log. */
async function writeReplacing(file: string, data: Buffer): Promise<void> {
  const tmp = `${file}.tmp`;
  const handle = await open(tmp, 'w', 0o600);
  try {
    await handle.writeFile(data);
  } finally {
    await handle.close();
  }
  await rename(tmp, file);
}
