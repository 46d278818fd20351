/**
 * Sheds the proxied transfers that hold the manager's TCP budget without using it. `workbay up` caps the manager's
 * socket buffers (cgroup v1, `runtime/local/manager-tcp.ts`) so that the proxy cannot take the node's TCP memory;
 * but the cap is one for every proxied connection, and a client that reads an answer slowly, or not at all, keeps
 * megabytes of it: the rest of the answer queued for it, and more in the paused connection to the workspace. 20-40
 * such connections of one anonymous client filled it, and every owner's downloads through the proxy crawled at
 * 10-25 KB/s for as long as they stayed (red team round 17b, M1).
 *
 * So every second each tracked transfer's pace is measured (the bytes its sockets handed to the kernel), and while
 * the budget is nearly used up, the transfers waiting on a slow end (bytes queued for a socket that took fewer than
 * `minBytesPerSecond` in the last second) of the client address with the most of them are reset at both ends, one
 * address a tick. Transfers that move data keep going; small exchanges queue nothing. Without pressure nothing is
 * shed: a slow client on a slow link is only cut while it holds memory others need, after the heavier ones.
 *
 * @module
 */
import type { Socket } from 'node:net';
import type { Logger } from '../logger.js';
import { resetOrDestroy } from './closing.js';
import { addressKey } from './connection-limits.js';

/** The share of the budget in use (0 to 1, and more when over it). */
export type TcpPressure = () => Promise<number>;

export interface SheddingOptions {
  readonly pressure: TcpPressure;
  /** Shed from this share of the budget on (default 0.8). */
  readonly threshold?: number;
  /** A socket that took fewer bytes than this in the last interval, with bytes queued for it, is slow (64 KiB). */
  readonly minBytesPerSecond?: number;
  readonly intervalMs?: number;
  readonly logger: Logger;
}

interface Transfer {
  readonly ends: readonly Socket[];
  /** Bytes each end had handed to the kernel at the last tick. */
  written: number[];
  /** Whether an end was slow in the last interval. */
  slow: boolean;
}

export class SlowTransferShedder {
  private readonly transfers = new Set<Transfer>();
  private readonly timer: NodeJS.Timeout;
  private readonly threshold: number;
  private readonly minBytes: number;
  private readonly intervalMs: number;
  private running = false;
  /** Transfers reset so far (for metrics and tests). */
  shed = 0;

  constructor(private readonly options: SheddingOptions) {
    this.threshold = options.threshold ?? 0.8;
    this.intervalMs = options.intervalMs ?? 1_000;
    this.minBytes = ((options.minBytesPerSecond ?? 64 * 1024) * this.intervalMs) / 1000;
    this.timer = setInterval(() => void this.tick(), this.intervalMs);
    this.timer.unref();
  }

  /** Tracks a transfer between `ends` (client first); returns the function that stops tracking it. */
  track(ends: readonly Socket[]): () => void {
    const transfer: Transfer = { ends, written: ends.map((end) => end.bytesWritten), slow: false };
    this.transfers.add(transfer);
    return () => this.transfers.delete(transfer);
  }

  get size(): number {
    return this.transfers.size;
  }

  stop(): void {
    clearInterval(this.timer);
    this.transfers.clear();
  }

  /**
   * The slow transfers of the client address that has the most of them (ties: the most bytes queued): one address a
   * tick, the pressure read again before the next. A flood of stalled connections is one client's, and shedding it
   * usually ends the pressure before a lone slow download of someone else's is reached (red team round 17c, N1:
   * shedding every slow transfer at once cut another owner's download at 40 KB/s).
   */
  private heaviestClient(): Transfer[] {
    const byClient = new Map<string, { transfers: Transfer[]; queued: number }>();
    for (const transfer of this.transfers) {
      if (!transfer.slow) continue;
      const client = transfer.ends[0];
      const key = addressKey(client?.remoteAddress ?? '');
      const entry = byClient.get(key) ?? { transfers: [], queued: 0 };
      entry.transfers.push(transfer);
      entry.queued += transfer.ends.reduce((sum, end) => sum + end.writableLength, 0);
      byClient.set(key, entry);
    }
    let heaviest: { transfers: Transfer[]; queued: number } | undefined;
    for (const entry of byClient.values()) {
      if (
        !heaviest ||
        entry.transfers.length > heaviest.transfers.length ||
        (entry.transfers.length === heaviest.transfers.length && entry.queued > heaviest.queued)
      ) {
        heaviest = entry;
      }
    }
    return heaviest?.transfers ?? [];
  }

  private async tick(): Promise<void> {
    if (this.running) return;
    this.running = true;
    try {
      for (const transfer of this.transfers) {
        const written = transfer.ends.map((end) => end.bytesWritten);
        // Slow: bytes wait for an end (the proxy's own buffer for it is not empty: the kernel's is full), and it
        // took fewer than the minimum since the last tick.
        transfer.slow = transfer.ends.some(
          (end, i) => end.writableLength > 0 && written[i]! - transfer.written[i]! < this.minBytes,
        );
        transfer.written = written;
      }
      const load = await this.options.pressure();
      if (!(load >= this.threshold)) return;
      const victims = this.heaviestClient();
      for (const transfer of victims) {
        this.transfers.delete(transfer);
        for (const end of transfer.ends) resetOrDestroy(end);
      }
      const shed = victims.length;
      this.shed += shed;
      if (shed > 0) {
        this.options.logger.warn(
          { shed, load: Math.round(load * 100) / 100 },
          'reset slow proxied transfers: the manager’s TCP budget is nearly used up',
        );
      }
    } catch (error) {
      // Deliberate: the pressure could not be read (a cgroup gone); retried at the next tick.
      this.options.logger.debug({ err: error }, 'cannot read the manager’s TCP pressure');
    } finally {
      this.running = false;
    }
  }
}
