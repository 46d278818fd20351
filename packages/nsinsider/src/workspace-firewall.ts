import { writeFile } from 'node:fs/promises';
import { errnoCode, NsinsiderError, NsinsiderValidationError } from './errors.js';
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
// Names that build interface names: short enough to append a 'p' for the peer's temporary name.
const ifPrefixPattern = /^[A-Za-z][A-Za-z0-9]{0,7}$/;

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
}

/** The table's chains and set, declared without rules: declaring an existing one with the same definition is a no-op. */
function skeleton(): string[] {
  return [
    `table inet ${WORKSPACE_FIREWALL_TABLE} {`,
    // Keyed by interface index, not name: a slot's name comes back for the next workspace, an index does not, so a
    // new workspace never inherits its predecessor's flows. `size` bounds the set whatever happens.
    `  set ${FLOWS_SET} { type iface_index; size 65535; flags dynamic; }`,
    // Before the usual filter priority, so that a host's own accept-all chains cannot let a workspace in.
    '  chain input { type filter hook input priority filter - 10; policy accept; }',
    '  chain forward { type filter hook forward priority filter - 10; policy accept; }',
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
  const ws = `"${req.ifPrefix}*"`;
  return [
    ...skeleton(),
    `table inet ${WORKSPACE_FIREWALL_TABLE} {`,
    '  chain input {',
    `    iifname ${ws} ct state established,related accept`,
    `    iifname ${ws} counter drop`,
    '  }',
    '  chain forward {',
    `    iifname ${ws} oifname ${ws} counter drop`,
    // Link-local: cloud metadata services (169.254.169.254) hand out the node's credentials.
    `    iifname ${ws} ip daddr 169.254.0.0/16 counter drop`,
    // Only a new flow that would leave is counted (the host's input chain drops every other, so it is never
    // confirmed into the table); a dropped one leaves no entry either. Closed TCP connections (TIME_WAIT) do not count.
    `    iifname ${ws} ct state new add @${FLOWS_SET} { iif ct count over ${maxFlows} } counter drop`,
    `    oifname ${ws} ct state established,related accept`,
    `    oifname ${ws} counter drop`,
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
 * turns on IPv4 forwarding, without which workspaces have no way out.
 *
 * Idempotent, in one nft transaction: the chains are declared and flushed and their rules added again, so that
 * anything an operator added to them goes while the flow counts in the set stay (re-created, every workspace could
 * open its limit again at every re-install). A table that cannot be brought back that way (a chain of ours with
 * another hook or priority, a set of another type) is deleted and re-created whole, in one transaction too.
 */
export async function ensureWorkspaceFirewall(req: WorkspaceFirewallRequest): Promise<void> {
  const rules = workspaceFirewallRuleset(req);
  const flush = ['input', 'forward', 'postrouting'].map((c) => `flush chain inet ${WORKSPACE_FIREWALL_TABLE} ${c}`);
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
