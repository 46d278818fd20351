/**
 * The proxy's per-workspace cap on busy connections. The server-wide cap (`connection-slots.ts`) takes slots back
 * from waiting connections only, never from busy ones, so whoever holds enough busy connections holds the proxy:
 * red team round 6 sent 16 addresses x 256 requests to a public port of its own workspace, whose server dripped a
 * byte every 20 s, and every other workspace's requests got 503 for as long as the drip lasted. Here each workspace
 * may hold at most `max` busy connections: a proxied request from admission until its response is done, an upgrade
 * from admission until its tunnel closes. Beyond that its requests get 503 and other workspaces are not affected.
 *
 * A connection is counted once per request in flight (pipelined requests count each: each holds a connection to the
 * workspace of its own).
 *
 * @module
 */
import type { Logger } from '../logger.js';
import type { Refusal } from './routing.js';

/** Refusals are logged at most this often (an attack would otherwise flood the log). */
const refusalLogInterval = 60_000;
/** The log names at most this many refused workspaces (the rest is in the count). */
const loggedWorkspaces = 10;

/**
 * The answer over the cap: 503 with `retry-after`, as over the other caps. Over HTTP (not `upgrade`) it adds
 * `connection: close`: Node then ends and destroys the refused connection once the answer is written, whether or
 * not the client closes (as `rejectUpgrade` does for upgrades, whose raw answer always closes).
 */
export function busyRefusal(workspaceId: string, upgrade = false): Refusal {
  return {
    status: 503,
    message: `workspace ${workspaceId} has too many open connections through the proxy; retry later\n`,
    headers: upgrade ? { 'retry-after': '10' } : { 'retry-after': '10', connection: 'close' },
  };
}

export class WorkspaceSlots {
  private readonly busy = new Map<string, number>();
  private readonly refused = new Map<string, number>();
  private lastLog = 0;

  /** `max` 0: no cap (still counted, for metrics). */
  constructor(
    private readonly max: number,
    private readonly logger: Logger,
    private readonly now: () => number = Date.now,
  ) {}

  /**
   * Counts one busy connection of `workspaceId`; returns the function that releases it (idempotent: call it on
   * every way the request or tunnel can end), or undefined (nothing counted, the refusal noted) at the cap.
   */
  take(workspaceId: string): (() => void) | undefined {
    const count = this.busy.get(workspaceId) ?? 0;
    if (this.max > 0 && count >= this.max) {
      this.noteRefusal(workspaceId);
      return undefined;
    }
    this.busy.set(workspaceId, count + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const left = (this.busy.get(workspaceId) ?? 1) - 1;
      if (left <= 0) this.busy.delete(workspaceId);
      else this.busy.set(workspaceId, left);
    };
  }

  /** Busy connections of `workspaceId` (for tests and metrics). */
  count(workspaceId: string): number {
    return this.busy.get(workspaceId) ?? 0;
  }

  private noteRefusal(workspaceId: string): void {
    // Keyed by admitted workspaces only (the caller found the record), so the map is bounded by the workspaces.
    this.refused.set(workspaceId, (this.refused.get(workspaceId) ?? 0) + 1);
    const now = this.now();
    if (now - this.lastLog < refusalLogInterval) return;
    const top = [...this.refused].sort((a, b) => b[1] - a[1]).slice(0, loggedWorkspaces);
    let total = 0;
    for (const n of this.refused.values()) total += n;
    this.logger.warn(
      { overPerWorkspace: total, workspaces: Object.fromEntries(top), maxConnectionsPerWorkspace: this.max },
      'proxy refused requests over the per-workspace connection limit',
    );
    this.refused.clear();
    this.lastLog = now;
  }
}
