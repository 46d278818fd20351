/**
 * The workspaces' share of the node's connection-tracking table. Each workspace link may hold a bounded number of
 * tracked flows, but the table (`nf_conntrack_max`) is one for the node, and the host's own connections (the manager's
 * gRPC, the proxy's connections to workspaces, the daemon's) need entries too: once it is full the kernel drops every
 * new flow on the node. Red team round 14 held exactly 4,096 entries from each of 4 workspaces; 64 such workspaces fill
 * a 262,144-entry table. So the share is divided by the most workspace links the node holds at once, a fixed number
 * the runtime refuses to go past: the limit does not depend on which links are there when.
 *
 * It did (round 15, G1): shared out among the links present at each install, the limit shrank only for links that
 * came later. Each link's counter in the nft set keeps the limit it was made with, and flows a workspace already
 * holds stay, so links that came early kept their larger share and five workspaces filled the table.
 *
 * A rule-wide `ct count` over all workspaces would bound the sum directly, but the kernel walks a count's whole list
 * when it adds to it (nf_conncount), and this one would hold most of the table: the per-link lists stay short.
 */
import { readProcCount } from './proc.js';

/** The share of `nf_conntrack_max` the workspaces may fill together; the rest stays the host's. */
export const WORKSPACE_FLOW_SHARE = 0.75;

/**
 * Fewer than this per workspace is too few for honest work (a language server alone holds dozens): the runtime warns,
 * naming the node's table and `maxWorkspaces`. Not a floor: a floor let a large `maxWorkspaces` pass the share (red
 * team round 15b, R2).
 */
export const MIN_FLOWS_PER_WORKSPACE = 64;

/**
 * Workspace links (workspaces with a network) a node holds at once by default: the divisor of the table's share.
 * 64 at the default 4,096 flows each take three quarters of a 262,144-entry table, the usual `nf_conntrack_max`.
 */
export const DEFAULT_MAX_WORKSPACE_LINKS = 64;

/**
 * The per-workspace flow limit on a node of at most `maxLinks` workspace links: `configured`, or less where that many
 * would fill more than their share of a table of `conntrackMax` entries (unknown: `configured`).
 */
export function sharedFlowLimit(configured: number, conntrackMax: number | undefined, maxLinks: number): number {
  if (conntrackMax === undefined || !(conntrackMax > 0)) return configured;
  const share = Math.floor((conntrackMax * WORKSPACE_FLOW_SHARE) / Math.max(1, maxLinks));
  return Math.min(configured, Math.max(1, share));
}

/**
 * Seconds a workspace's closed TCP connection stays in the node's table (states TIME_WAIT and CLOSE; the kernel's
 * own 120 and 10 s): an `nft ct timeout` the host table sets on each new TCP flow of a workspace link.
 */
export const WORKSPACE_CLOSED_FLOW_SECONDS = 2;

/** TCP states a workspace's closed connection lingers in: the kernel keeps TIME_WAIT 120 s and CLOSE 10 s. */
const closedStates = ['time_wait', 'close'] as const;

/**
 * TCP states a connection the host opened into a workspace (the port proxy's, a readiness probe) can be held in by a
 * workspace that stalls it: a SYN it never answers (120 s), a FIN it acknowledges but never answers (CLOSE_WAIT, 60
 * s: red team round 16b held 20,115 such entries from one process), then the closed states. The host's side gives
 * up on them within seconds anyway (the proxy's grace after an end is 2 s), so their entries need not outlive that.
 */
const inboundStates = ['syn_sent', 'syn_recv', 'fin_wait', 'close_wait', 'last_ack', ...closedStates] as const;

/** nft `ct timeout` objects for TCP and the rules that set them on new flows (see the two functions below). */
export interface FlowTimeouts {
  /** The objects, one per address family (`<prefix>_ip`, `<prefix>_ip6`), for a table's body. */
  readonly declarations: string[];
  /** Rules setting them on new TCP flows matching `match` (e.g. `iifname "wbv*" `), for a chain's body. */
  readonly setOn: (match: string) => string[];
}

function flowTimeouts(prefix: string, states: readonly string[]): FlowTimeouts {
  const families = [
    ['ip', 'ipv4'],
    ['ip6', 'ipv6'],
  ] as const;
  const policy = states.map((state) => `${state}: ${WORKSPACE_CLOSED_FLOW_SECONDS}`).join(', ');
  return {
    declarations: families.map(
      ([l3]) => `  ct timeout ${prefix}_${l3} { protocol tcp; l3proto ${l3}; policy = { ${policy} }; }`,
    ),
    setOn: (match) =>
      families.map(
        ([l3, nfproto]) =>
          `    ${match}meta nfproto ${nfproto} meta l4proto tcp ct state new ct timeout set "${prefix}_${l3}"`,
      ),
  };
}

/**
 * For a workspace's own TCP connections: {@link WORKSPACE_CLOSED_FLOW_SECONDS} in TIME_WAIT and CLOSE (the host
 * table's flows from workspace links, the loopback and outgoing ones in each workspace's namespace).
 */
export function closedFlowTimeouts(prefix: string): FlowTimeouts {
  return flowTimeouts(prefix, closedStates);
}

/**
 * For TCP connections into a workspace: {@link WORKSPACE_CLOSED_FLOW_SECONDS} in every state but ESTABLISHED (the
 * host table's flows to workspace links, and the incoming ones in each workspace's namespace).
 */
export function inboundFlowTimeouts(prefix: string): FlowTimeouts {
  return flowTimeouts(prefix, inboundStates);
}

/** What one workspace link may do with its share of the node's table. */
export interface FlowBudget {
  /** Flows it may hold (closed TCP connections not counted: the kernel's per-key count leaves them out). */
  readonly maxFlows: number;
  /** New flows per second (and as many at once), which bounds the closed connections that linger. */
  readonly newFlowsPerSecond: number;
}

/**
 * Splits a link's share of the table between the flows it holds and the closed ones it leaves behind. The count
 * (`ct count`) leaves closed TCP connections out, so a workspace that opens and closes connections in a loop filled
 * a 16,384-entry table in under 4 s with TIME_WAIT entries (red team round 15b, R1). At most `maxFlows` are open; a
 * closed one lingers {@link WORKSPACE_CLOSED_FLOW_SECONDS}, and in that time at most the `maxFlows` open before and the
 * new ones (rate × the timeout, plus a burst of one second's) close: `2 × maxFlows + 3 × rate` entries at the worst
 * moment, which 0.4 and 1/15 of the share keep within it.
 */
export function splitFlowBudget(share: number): FlowBudget {
  return {
    maxFlows: Math.max(1, Math.floor(share * 0.4)),
    newFlowsPerSecond: Math.max(1, Math.floor(share / 15)),
  };
}

/** The node's `nf_conntrack_max`, or undefined where conntrack is not loaded (nothing to share then). */
export async function readConntrackMax(file = '/proc/sys/net/netfilter/nf_conntrack_max'): Promise<number | undefined> {
  // Undefined: no conntrack module loaded yet (the first rule that uses it loads it); the configured limit holds.
  return readProcCount(file);
}
