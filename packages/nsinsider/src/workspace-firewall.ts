import { writeFile } from 'node:fs/promises';
import { isIPv4, isIPv6 } from 'node:net';
import { errnoCode, NsinsiderError, NsinsiderValidationError } from './errors.js';
import type { FlowBudget } from './flow-share.js';
import {
  DEFAULT_MAX_WORKSPACE_LINKS,
  readConntrackMax,
  sharedFlowLimit,
  closedFlowTimeouts,
  inboundFlowTimeouts,
  splitFlowBudget,
} from './flow-share.js';
import { check, isCode, tool } from './host-tool.js';

/**
 * The one host nftables table that keeps every workspace away from the host and from each other, and bounds the
 * connection-tracking entries each workspace may hold. Runs in the caller's (the host's) network namespace with
 * plain `nft`. Requires root (CAP_NET_ADMIN) and nftables.
 */

/** The host table (family `inet`, so IPv6 is covered too) holding the workspace isolation rules. */
export const WORKSPACE_FIREWALL_TABLE = 'workbay';

/**
 * Concurrent tracked flows (new connections still in the conntrack table, closed TCP ones excepted) one workspace link
 * may hold by default. An honest workspace (a build fetching packages, a language server, a browser preview) holds a
 * few hundred; 64 workspaces at this limit take 262 144 entries, the usual `nf_conntrack_max` of a node.
 */
export const DEFAULT_MAX_FLOWS_PER_WORKSPACE = 4096;

/** The dynamic set that counts each workspace link's flows, keyed by its interface index. */
const FLOWS_SET = 'workspace_flows';
/** The dynamic set that holds each workspace link's rate of new flows (a token bucket per interface index). */
const FLOW_RATE_SET = 'workspace_flow_rate';
/** Timeout policies of a workspace's TCP flows, for IPv4 and IPv6: closed ones leave the table early (flow-share.ts). */
const CLOSED_TIMEOUT = closedFlowTimeouts('workspace_closed');
/** For the host's connections into workspaces: every state but ESTABLISHED is short (flow-share.ts). */
const INBOUND_TIMEOUT = inboundFlowTimeouts('workspace_inbound');
// Names that build interface names: short enough to append a 'p' for the peer's temporary name.
const ifPrefixPattern = /^[A-Za-z][A-Za-z0-9]{0,7}$/;

/** Where workspaces may open connections beyond the node (the host and other workspaces are never reachable). */
export interface WorkspaceEgress {
  /** Networks (CIDRs or addresses, IPv4 or IPv6) new connections to are dropped, e.g. `nonPublicNetworks`. */
  readonly blocked: readonly string[];
  /** Reachable on every port although `blocked` covers them (an internal registry or package mirror). */
  readonly allowed?: readonly string[];
  /**
   * Reachable on port 53 (UDP and TCP) only although `blocked` covers them: the resolvers workspaces use (a cloud's
   * resolver may be link-local, like AWS's 169.254.169.253; link-local is otherwise never reachable).
   */
  readonly dns?: readonly string[];
}

export interface WorkspaceFirewallRequest {
  /** Every workspace's host end starts with this (e.g. `wbv`); the rules match the prefix, so they hold for any
   * number of workspaces without per-workspace rules, and fail closed for a link that some bookkeeping forgot. */
  ifPrefix: string;
  /**
   * New flows from a workspace link are dropped while that link already has this many tracked (default
   * {@link DEFAULT_MAX_FLOWS_PER_WORKSPACE}): one workspace cannot fill the node's conntrack table, which would
   * drop new connections node-wide.
   */
  maxFlowsPerWorkspace?: number;
  /**
   * {@link workspaceFirewallRuleset} only: new flows a workspace link may open per second (and as many at once);
   * default: what {@link splitFlowBudget} gives the share `maxFlowsPerWorkspace` came from.
   */
  newFlowsPerSecond?: number;
  /** Undefined: every address beyond the node but link-local ones is reachable. */
  egress?: WorkspaceEgress;
  /**
   * {@link ensureWorkspaceFirewall} only: the most workspace links the node holds at once (default
   * {@link DEFAULT_MAX_WORKSPACE_LINKS}), among which the workspaces' share of the conntrack table is divided. The
   * caller refuses links past it; a link's limit is fixed when its counter is made, so the sum holds only then.
   */
  maxWorkspaceLinks?: number;
  /**
   * {@link ensureWorkspaceFirewall} only: the node's conntrack table size the limit is shared out of (see
   * flow-share.ts); default `nf_conntrack_max`. A test seam, and for nodes whose table grows on demand.
   */
  conntrackMax?: number;
}

/** An address or CIDR as nft takes it; refused otherwise (the text goes into an nft script). */
function networkOf(field: string, text: string): { family: 4 | 6; text: string } {
  const [address = '', prefix, extra] = text.split('/');
  const family = isIPv4(address) ? 4 : isIPv6(address) && !address.includes('%') ? 6 : undefined;
  const bits = prefix === undefined ? undefined : /^\d{1,3}$/.test(prefix) ? Number(prefix) : NaN;
  if (family === undefined || extra !== undefined || (bits !== undefined && !(bits <= (family === 4 ? 32 : 128)))) {
    throw new NsinsiderValidationError('firewall-ensure', field, `'${text.slice(0, 64)}' is not an IP address or CIDR`);
  }
  return { family, text };
}

/**
 * The rules of the forward chain that keep workspaces to `egress` (none without one): the resolvers' port 53, which
 * goes before the link-local drop, and the allowed and blocked networks, after it.
 */
function egressRules(ws: string, egress: WorkspaceEgress | undefined): { resolvers: string[]; networks: string[] } {
  if (!egress) return { resolvers: [], networks: [] };
  const byFamily = (field: string, list: readonly string[] | undefined) => {
    const parsed = (list ?? []).map((text) => networkOf(field, text));
    return {
      4: [...new Set(parsed.filter((n) => n.family === 4).map((n) => n.text))],
      6: [...new Set(parsed.filter((n) => n.family === 6).map((n) => n.text))],
    };
  };
  const blocked = byFamily('egress.blocked', egress.blocked);
  const allowed = byFamily('egress.allowed', egress.allowed);
  const dns = byFamily('egress.dns', egress.dns);
  const rules: string[] = [];
  for (const family of [4, 6] as const) {
    const match = family === 4 ? 'ip daddr' : 'ip6 daddr';
    if (allowed[family].length > 0) rules.push(`    iifname ${ws} ${match} { ${allowed[family].join(', ')} } accept`);
    if (blocked[family].length > 0)
      rules.push(`    iifname ${ws} ${match} { ${blocked[family].join(', ')} } counter drop`);
  }
  const resolvers = (family: 4 | 6) =>
    dns[family].length === 0
      ? []
      : [
          `    iifname ${ws} ${family === 4 ? 'ip' : 'ip6'} daddr { ${dns[family].join(', ')} } meta l4proto { tcp, udp } th dport 53 accept`,
        ];
  return { resolvers: [...resolvers(4), ...resolvers(6)], networks: rules };
}

/** The table's chains and set, declared without rules: declaring an existing one with the same definition is a no-op. */
function skeleton(): string[] {
  return [
    `table inet ${WORKSPACE_FIREWALL_TABLE} {`,
    // Keyed by interface index, not name: a slot's name comes back for the next workspace, an index does not, so a
    // new workspace never inherits its predecessor's flows. `size` bounds the set whatever happens.
    `  set ${FLOWS_SET} { type iface_index; size 65535; flags dynamic; }`,
    // Refreshed by every new flow of the link, so a busy link keeps its bucket; an idle one's goes after a minute.
    `  set ${FLOW_RATE_SET} { type iface_index; size 65535; flags dynamic,timeout; timeout 1m; }`,
    ...CLOSED_TIMEOUT.declarations,
    ...INBOUND_TIMEOUT.declarations,
    // Before the usual filter priority, so that a host's own accept-all chains cannot let a workspace in.
    '  chain input { type filter hook input priority filter - 10; policy accept; }',
    '  chain forward { type filter hook forward priority filter - 10; policy accept; }',
    '  chain output { type filter hook output priority filter - 10; policy accept; }',
    '  chain postrouting { type nat hook postrouting priority srcnat; policy accept; }',
    '}',
  ];
}

/** The ruleset {@link ensureWorkspaceFirewall} installs (exported for tests and docs). */
export function workspaceFirewallRuleset(req: WorkspaceFirewallRequest): string {
  check('firewall-ensure', 'ifPrefix', req.ifPrefix, ifPrefixPattern, 'a letter then at most 7 letters or digits');
  const maxFlows = req.maxFlowsPerWorkspace ?? DEFAULT_MAX_FLOWS_PER_WORKSPACE;
  if (!Number.isSafeInteger(maxFlows) || maxFlows < 1 || maxFlows > 1_000_000) {
    throw new NsinsiderValidationError('firewall-ensure', 'maxFlowsPerWorkspace', 'must be an integer in [1, 1000000]');
  }
  const rate = req.newFlowsPerSecond ?? splitFlowBudget(maxFlows / 0.4).newFlowsPerSecond;
  if (!Number.isSafeInteger(rate) || rate < 1 || rate > 1_000_000) {
    throw new NsinsiderValidationError('firewall-ensure', 'newFlowsPerSecond', 'must be an integer in [1, 1000000]');
  }
  const ws = `"${req.ifPrefix}*"`;
  const egress = egressRules(ws, req.egress);
  return [
    ...skeleton(),
    `table inet ${WORKSPACE_FIREWALL_TABLE} {`,
    '  chain input {',
    `    iifname ${ws} ct state established,related accept`,
    `    iifname ${ws} counter drop`,
    '  }',
    '  chain forward {',
    `    iifname ${ws} oifname ${ws} counter drop`,
    // Only a new flow that would leave is counted (the host's input chain drops every other, so it is never
    // confirmed into the table); a dropped one leaves no entry either. Closed TCP connections (TIME_WAIT) do not count.
    // First, so that what the rules below accept (a resolver's port 53) is counted too.
    `    iifname ${ws} ct state new update @${FLOW_RATE_SET} { iif limit rate over ${rate}/second burst ${rate} packets } counter drop`,
    `    iifname ${ws} ct state new add @${FLOWS_SET} { iif ct count over ${maxFlows} } counter drop`,
    // Closed TCP connections are not counted above: they leave the table after seconds, not the kernel's 120 (R1).
    ...CLOSED_TIMEOUT.setOn(`iifname ${ws} `),
    // The resolvers' port 53 before link-local (a cloud's resolver may live there), nothing else of it after.
    ...egress.resolvers,
    // Link-local: cloud metadata services (169.254.169.254) hand out the node's credentials. IPv6 workspaces have
    // none, but a link-local destination must not depend on that.
    `    iifname ${ws} ip daddr 169.254.0.0/16 counter drop`,
    `    iifname ${ws} ip6 daddr fe80::/10 counter drop`,
    ...egress.networks,
    `    oifname ${ws} ct state established,related accept`,
    `    oifname ${ws} counter drop`,
    '  }',
    // The host's own connections into workspaces (the port proxy opens one per request, readiness probes) leave
    // early too: in the kernel's 120 s of TIME_WAIT, one anonymous client of one public port filled the node's
    // table with the proxy's closed connections (red team round 16, H1: 90,045 entries in 150 s), and a workspace
    // that never closed its side held them 60 s in CLOSE_WAIT (16b: 20,115 from one process).
    '  chain output {',
    ...INBOUND_TIMEOUT.setOn(`oifname ${ws} `),
    '  }',
    '  chain postrouting {',
    `    iifname ${ws} oifname != ${ws} masquerade`,
    '  }',
    '}',
    '',
  ].join('\n');
}

/**
 * Installs (or re-installs, atomically) the host table `inet workbay`: new connections from a workspace link to
 * any address of the host are dropped (input), so are connections between workspaces, to link-local addresses
 * (cloud metadata), a workspace's new flows beyond its limit, and new connections from elsewhere into a workspace
 * (forward); replies to connections the host opened pass; traffic from workspaces to the outside is masqueraded. Also
 * turns on IPv4 forwarding, without which workspaces have no way out. Resolves with what each workspace link may
 * do: its share of the node's conntrack table is `maxFlowsPerWorkspace`, or less where `maxWorkspaceLinks` links would
 * together fill more than three quarters of it, split between the flows it holds and the new ones per second it opens
 * (flow-share.ts: closed TCP connections linger uncounted).
 *
 * Idempotent, in one nft transaction: the chains are declared and flushed and their rules added again, so that
 * anything an operator added to them goes while the flow counts in the set stay (re-created, every workspace could
 * open its limit again at every re-install). A table that cannot be brought back that way (a chain of ours with
 * another hook or priority, a set of another type) is deleted and re-created whole, in one transaction too.
 */
export async function ensureWorkspaceFirewall(req: WorkspaceFirewallRequest): Promise<FlowBudget> {
  // Checked (and refused, naming the field) before anything runs.
  workspaceFirewallRuleset(req);
  // What each link may hold so that the most links the node takes stay within their share of its table together
  // (flow-share.ts).
  const budget = splitFlowBudget(
    sharedFlowLimit(
      req.maxFlowsPerWorkspace ?? DEFAULT_MAX_FLOWS_PER_WORKSPACE,
      req.conntrackMax ?? (await readConntrackMax()),
      req.maxWorkspaceLinks ?? DEFAULT_MAX_WORKSPACE_LINKS,
    ),
  );
  const rules = workspaceFirewallRuleset({
    ...req,
    maxFlowsPerWorkspace: budget.maxFlows,
    newFlowsPerSecond: budget.newFlowsPerSecond,
  });
  const flush = ['input', 'forward', 'output', 'postrouting'].map(
    (c) => `flush chain inet ${WORKSPACE_FIREWALL_TABLE} ${c}`,
  );
  const inPlace = [...skeleton(), ...flush, rules].join('\n');
  try {
    await tool('firewall-ensure', 'nft', ['-f', '-'], inPlace);
  } catch (error) {
    // Deliberate: a table altered beyond a flush is replaced; a failure of that is the caller's to see.
    if (!(error instanceof NsinsiderError) || error.kind !== 'failed') throw error;
    const replace = [
      `table inet ${WORKSPACE_FIREWALL_TABLE} {}`,
      `delete table inet ${WORKSPACE_FIREWALL_TABLE}`,
      rules,
    ].join('\n');
    await tool('firewall-ensure', 'nft', ['-f', '-'], replace);
  }
  try {
    await writeFile('/proc/sys/net/ipv4/ip_forward', '1');
  } catch (e) {
    throw new NsinsiderError(`firewall-ensure: cannot enable IPv4 forwarding: ${(e as Error).message}`, {
      op: 'firewall-ensure',
      kind: 'failed',
      code: errnoCode(e),
      cause: e,
    });
  }
  return budget;
}

/** The installed host table as nft prints it, or undefined when there is none. */
export async function readWorkspaceFirewall(): Promise<string | undefined> {
  try {
    return (await tool('firewall-read', 'nft', ['list', 'table', 'inet', WORKSPACE_FIREWALL_TABLE])).stdout;
  } catch (e) {
    if (isCode(e, 'ENOENT')) return undefined;
    throw e;
  }
}

/** Removes the host table; false when there was none. */
export async function removeWorkspaceFirewall(): Promise<boolean> {
  try {
    await tool('firewall-remove', 'nft', ['delete', 'table', 'inet', WORKSPACE_FIREWALL_TABLE]);
    return true;
  } catch (e) {
    if (isCode(e, 'ENOENT')) return false;
    throw e;
  }
}
