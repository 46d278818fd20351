/**
 * The workspaces' share of the node's connection-tracking table. Each workspace link may hold a bounded number of
 * tracked flows, but the table (`nf_conntrack_max`) is one for the node, and the host's own connections (the manager's
 * gRPC, the proxy's connections to workspaces, the daemon's) need entries too: once it is full the kernel drops every
 * new flow on the node. Red team round 14 held exactly 4,096 entries from each of 4 workspaces; 64 such workspaces fill
 * a 262,144-entry table. So the limit per workspace shrinks as workspaces come, to keep their sum within a share of the
 * table, and grows back as they go (the firewall is installed again at every start and every check interval).
 *
 * A rule-wide `ct count` over all workspaces would bound the sum directly, but the kernel walks a count's whole list
 * when it adds to it (nf_conncount), and this one would hold most of the table: the per-link lists stay short.
 */
import { readFile } from 'node:fs/promises';

/** The share of `nf_conntrack_max` the workspaces may fill together; the rest stays the host's. */
export const WORKSPACE_FLOW_SHARE = 0.75;

/** No workspace gets fewer than this, however many there are (a language server alone holds dozens). */
export const MIN_FLOWS_PER_WORKSPACE = 64;

/**
 * The per-workspace flow limit for `workspaces` links: `configured`, or less where that many would fill more than
 * their share of a table of `conntrackMax` entries (unknown: `configured`).
 */
export function sharedFlowLimit(configured: number, conntrackMax: number | undefined, workspaces: number): number {
  if (conntrackMax === undefined || !(conntrackMax > 0)) return configured;
  const share = Math.floor((conntrackMax * WORKSPACE_FLOW_SHARE) / Math.max(1, workspaces));
  return Math.min(configured, Math.max(MIN_FLOWS_PER_WORKSPACE, share));
}

/** The node's `nf_conntrack_max`, or undefined where conntrack is not loaded (nothing to share then). */
export async function readConntrackMax(file = '/proc/sys/net/netfilter/nf_conntrack_max'): Promise<number | undefined> {
  try {
    const value = Number((await readFile(file, 'utf8')).trim());
    return Number.isSafeInteger(value) && value > 0 ? value : undefined;
  } catch {
    // Deliberate: no conntrack module loaded yet (the first rule that uses it loads it); the configured limit holds.
    return undefined;
  }
}
