/**
 * The proxy's per-workspace and per-owner caps on busy connections. The server-wide cap (`connection-slots.ts`) takes slots back
 * from waiting connections only, never from busy ones, so whoever holds enough busy connections holds the proxy:
 * red team round 6 sent 16 addresses x 256 requests to a public port of its own workspace, whose server dripped a
 * byte every 20 s, and every other workspace's requests got 503 for as long as the drip lasted. Here each workspace
 * may hold a bounded number of busy connections: a proxied request from admission until its response is done or its
 * client is gone, an upgrade from admission until its client connection closes (within a grace of the client's
 * leaving, see `upgrade.ts`). Beyond that its requests get 503 and other workspaces are not affected. An owner's
 * workspaces together are capped too: without it, eight workspaces of one owner at 512 each would hold the whole
 * server-wide cap of 4,096 again.
 *
 * Two budgets, counted apart, each with its own cap per workspace and per owner:
 *
 * - `authenticated`: connections admitted because they presented the workspace's owner token (`isOwner` in
 *   `PortProxy.admit`): the owner's IDE, her own requests to her ports.
 * - `anonymous`: everything else, admitted because a port is public or the workspace admits everyone.
 *
 * Anonymous clients can fill only the anonymous budget: red team round 7 held 512 anonymous upgrades on one public
 * port of an owner's workspace, and the owner's own IDE (with her token) got 503; 512 + 512 on two of her
 * workspaces locked her out of a third that had no public port at all. The owner's flood of her own workspaces is
 * capped by the authenticated budget, so neither budget alone, nor one owner with both, holds the server. The
 * anonymous budget also has a server-wide total (`maxAnonymousConnections`, three quarters of the server's cap):
 * anonymous clients of four owners' public ports (4 x 1,024) would otherwise hold every connection the server takes,
 * and a connection is accepted before its token is read, so owners with their tokens would get 503 too.
 *
 * A connection is counted once per request in flight (pipelined requests count each: each holds a connection to the
 * workspace of its own).
 *
 * @module
 */
import type { Logger } from '../logger.js';
import type { Refusal } from './routing.js';

/** Which cap a refused connection ran into. */
export type Over = 'workspace' | 'owner' | 'server';

/** Which budget a connection is counted in: with the owner token, or without (see the module comment). */
export type Budget = 'authenticated' | 'anonymous';

/** The caps of one budget (0: no cap, still counted). */
export interface BudgetCaps {
  readonly maxPerWorkspace: number;
  readonly maxPerOwner: number;
  /** All workspaces of all owners together (0: none). */
  readonly maxTotal?: number;
}

/** Refusals are logged at most this often (an attack would otherwise flood the log). */
const refusalLogInterval = 60_000;
/** The log names at most this many refused workspaces and owners (the rest is in the counts). */
const loggedKeys = 10;

/**
 * The answer over the cap: 503 with `retry-after`, as over the other caps. Over HTTP (not `upgrade`) it adds
 * `connection: close`: Node then ends and destroys the refused connection once the answer is written, whether or
 * not the client closes (as `rejectUpgrade` does for upgrades, whose raw answer always closes). The message says
 * which budget is full: an owner refused with her token learns that her own connections are the many.
 */
export function busyRefusal(
  workspaceId: string,
  upgrade = false,
  over: Over = 'workspace',
  budget: Budget = 'anonymous',
): Refusal {
  const who =
    over === 'owner'
      ? `the owner of workspace ${workspaceId}`
      : over === 'server'
        ? 'the proxy'
        : `workspace ${workspaceId}`;
  const which = budget === 'authenticated' ? 'connections with the owner token' : 'connections';
  return {
    status: 503,
    message: `${who} has too many open ${which} through the proxy; retry later\n`,
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

/** One budget: its counters and the refusals since the last log. */
class Pool {
  readonly workspaces: Counter;
  readonly owners: Counter;
  /** One key for everything: the budget's server-wide total. */
  readonly all: Counter;
  /** Refusals since the last log, keyed by workspace id, by owner, and the server-wide ones. */
  readonly refused = {
    workspace: new Map<string, number>(),
    owner: new Map<string, number>(),
    server: new Map<string, number>(),
  };

  constructor(caps: BudgetCaps) {
    this.workspaces = new Counter(caps.maxPerWorkspace);
    this.owners = new Counter(caps.maxPerOwner);
    this.all = new Counter(caps.maxTotal ?? 0);
  }
}

const budgets: readonly Budget[] = ['anonymous', 'authenticated'];

export class WorkspaceSlots {
  private readonly pools: Readonly<Record<Budget, Pool>>;
  private lastLog = 0;

  constructor(
    caps: Readonly<Record<Budget, BudgetCaps>>,
    private readonly logger: Logger,
    private readonly now: () => number = Date.now,
  ) {
    this.pools = { anonymous: new Pool(caps.anonymous), authenticated: new Pool(caps.authenticated) };
  }

  /**
   * Counts one busy connection of `workspace` (and of its owner) in `budget`; returns the function that releases it
   * (idempotent: call it on every way the request or tunnel can end), or which cap it ran into (nothing counted, the
   * refusal noted). The other budget is neither looked at nor charged.
   */
  take(
    workspace: { readonly id: string; readonly owner: string },
    budget: Budget,
  ): (() => void) | { readonly over: Over } {
    const pool = this.pools[budget];
    const over: Over | undefined = pool.workspaces.full(workspace.id)
      ? 'workspace'
      : pool.owners.full(workspace.owner)
        ? 'owner'
        : pool.all.full('')
          ? 'server'
          : undefined;
    if (over) {
      this.noteRefusal(pool, over, over === 'owner' ? workspace.owner : over === 'server' ? '' : workspace.id);
      return { over };
    }
    pool.workspaces.add(workspace.id, 1);
    pool.owners.add(workspace.owner, 1);
    pool.all.add('', 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      pool.workspaces.add(workspace.id, -1);
      pool.owners.add(workspace.owner, -1);
      pool.all.add('', -1);
    };
  }

  /** Busy connections of a workspace in `budget`, or in both (for tests and metrics). */
  count(workspaceId: string, budget?: Budget): number {
    return this.sum(budget, (pool) => pool.workspaces.count(workspaceId));
  }

  /** Busy connections of an owner's workspaces together in `budget`, or in both (for tests and metrics). */
  ownerCount(owner: string, budget?: Budget): number {
    return this.sum(budget, (pool) => pool.owners.count(owner));
  }

  private sum(budget: Budget | undefined, of: (pool: Pool) => number): number {
    return (budget === undefined ? budgets : [budget]).reduce((n, b) => n + of(this.pools[b]), 0);
  }

  private noteRefusal(pool: Pool, over: Over, key: string): void {
    // Keyed by admitted workspaces and their owners only (the caller found the record), so the maps are bounded.
    const refused = pool.refused[over];
    refused.set(key, (refused.get(key) ?? 0) + 1);
    const now = this.now();
    if (now - this.lastLog < refusalLogInterval) return;
    const top = (counts: Map<string, number>): Record<string, number> =>
      Object.fromEntries([...counts].sort((a, b) => b[1] - a[1]).slice(0, loggedKeys));
    const total = (counts: Map<string, number>): number => [...counts.values()].reduce((a, b) => a + b, 0);
    const report = (p: Pool): Record<string, unknown> => ({
      overPerWorkspace: total(p.refused.workspace),
      workspaces: top(p.refused.workspace),
      maxPerWorkspace: p.workspaces.max,
      overPerOwner: total(p.refused.owner),
      owners: top(p.refused.owner),
      maxPerOwner: p.owners.max,
      overTotal: total(p.refused.server),
      maxTotal: p.all.max,
    });
    this.logger.warn(
      { anonymous: report(this.pools.anonymous), authenticated: report(this.pools.authenticated) },
      'proxy refused requests over a per-workspace, per-owner or server-wide connection limit',
    );
    for (const b of budgets) {
      for (const counts of Object.values(this.pools[b].refused)) counts.clear();
    }
    this.lastLog = now;
  }
}
