/**
 * The proxy's per-workspace and per-owner caps on busy connections. The server-wide cap (`connection-slots.ts`) takes slots back
 * from waiting connections only, never from busy ones, so whoever holds enough busy connections holds the proxy:
 * red team round 6 sent 16 addresses x 256 requests to a public port of its own workspace, whose server dripped a
 * byte every 20 s, and every other workspace's requests got 503 for as long as the drip lasted. Here each workspace
 * may hold at most `maxPerWorkspace` busy connections: a proxied request from admission until its response is done,
 * an upgrade from admission until its tunnel closes. Beyond that its requests get 503 and other workspaces are not
 * affected. An owner's workspaces together hold at most `maxPerOwner`: without it, eight workspaces of one owner at
 * 512 each would hold the whole server-wide cap of 4,096 again.
 *
 * A connection is counted once per request in flight (pipelined requests count each: each holds a connection to the
 * workspace of its own).
 *
 * @module
 */
import type { Logger } from '../logger.js';
import type { Refusal } from './routing.js';

/** Which cap a refused connection ran into. */
export type Over = 'workspace' | 'owner';

/** Refusals are logged at most this often (an attack would otherwise flood the log). */
const refusalLogInterval = 60_000;
/** The log names at most this many refused workspaces and owners (the rest is in the counts). */
const loggedKeys = 10;

/**
 * The answer over the cap: 503 with `retry-after`, as over the other caps. Over HTTP (not `upgrade`) it adds
 * `connection: close`: Node then ends and destroys the refused connection once the answer is written, whether or
 * not the client closes (as `rejectUpgrade` does for upgrades, whose raw answer always closes).
 */
export function busyRefusal(workspaceId: string, upgrade = false, over: Over = 'workspace'): Refusal {
  const who = over === 'owner' ? `the owner of workspace ${workspaceId}` : `workspace ${workspaceId}`;
  return {
    status: 503,
    message: `${who} has too many open connections through the proxy; retry later\n`,
    headers: upgrade ? { 'retry-after': '10' } : { 'retry-after': '10', connection: 'close' },
  };
}

/** Busy connections per key, capped (0: no cap, still counted). */
class Counter {
  private readonly busy = new Map<string, number>();
  constructor(readonly max: number) {}

  full(key: string): boolean {
    return this.max > 0 && this.count(key) >= this.max;
  }

  add(key: string, delta: 1 | -1): void {
    const next = this.count(key) + delta;
    if (next <= 0) this.busy.delete(key);
    else this.busy.set(key, next);
  }

  count(key: string): number {
    return this.busy.get(key) ?? 0;
  }
}

export class WorkspaceSlots {
  private readonly workspaces: Counter;
  private readonly owners: Counter;
  /** Refusals since the last log, keyed by workspace id and by owner. */
  private readonly refused = { workspace: new Map<string, number>(), owner: new Map<string, number>() };
  private lastLog = 0;

  constructor(
    caps: { readonly maxPerWorkspace: number; readonly maxPerOwner: number },
    private readonly logger: Logger,
    private readonly now: () => number = Date.now,
  ) {
    this.workspaces = new Counter(caps.maxPerWorkspace);
    this.owners = new Counter(caps.maxPerOwner);
  }

  /**
   * Counts one busy connection of `workspace` (and of its owner); returns the function that releases it
   * (idempotent: call it on every way the request or tunnel can end), or which cap it ran into (nothing counted, the
   * refusal noted).
   */
  take(workspace: { readonly id: string; readonly owner: string }): (() => void) | { readonly over: Over } {
    const over: Over | undefined = this.workspaces.full(workspace.id)
      ? 'workspace'
      : this.owners.full(workspace.owner)
        ? 'owner'
        : undefined;
    if (over) {
      this.noteRefusal(over, over === 'owner' ? workspace.owner : workspace.id);
      return { over };
    }
    this.workspaces.add(workspace.id, 1);
    this.owners.add(workspace.owner, 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.workspaces.add(workspace.id, -1);
      this.owners.add(workspace.owner, -1);
    };
  }

  /** Busy connections of a workspace (for tests and metrics). */
  count(workspaceId: string): number {
    return this.workspaces.count(workspaceId);
  }

  /** Busy connections of an owner's workspaces together (for tests and metrics). */
  ownerCount(owner: string): number {
    return this.owners.count(owner);
  }

  private noteRefusal(over: Over, key: string): void {
    // Keyed by admitted workspaces and their owners only (the caller found the record), so the maps are bounded.
    const refused = this.refused[over];
    refused.set(key, (refused.get(key) ?? 0) + 1);
    const now = this.now();
    if (now - this.lastLog < refusalLogInterval) return;
    const top = (counts: Map<string, number>): Record<string, number> =>
      Object.fromEntries([...counts].sort((a, b) => b[1] - a[1]).slice(0, loggedKeys));
    const total = (counts: Map<string, number>): number => [...counts.values()].reduce((a, b) => a + b, 0);
    this.logger.warn(
      {
        overPerWorkspace: total(this.refused.workspace),
        workspaces: top(this.refused.workspace),
        maxConnectionsPerWorkspace: this.workspaces.max,
        overPerOwner: total(this.refused.owner),
        owners: top(this.refused.owner),
        maxConnectionsPerOwner: this.owners.max,
      },
      'proxy refused requests over the per-workspace or per-owner connection limit',
    );
    this.refused.workspace.clear();
    this.refused.owner.clear();
    this.lastLog = now;
  }
}
