import { existsSync } from 'node:fs';
import { NsinsiderValidationError } from './errors.js';
import { closedFlowTimeouts, inboundFlowTimeouts } from './flow-share.js';
import { check, tool } from './host-tool.js';
import { readProcCount } from './proc.js';
import { NETNS_DIR, netnsPattern, netnsRule } from './workspace-network.js';

/**
 * A table inside one workspace's network namespace that bounds the TCP connections its processes open, loopback ones
 * included. cgroup v1 cannot bound their buffers by memory: its TCP limit lets every socket hold one allocation past
 * it, so the overshoot grows with the sockets (red team, round 4: 80,000 unread loopback connections held 5,871 MB of
 * socket buffers, 23 times a 256 MiB cap, 670 MB of it charged; the kernel logged "TCP: out of memory" and reset a
 * neighbour's transfer). Bounding the connections bounds the overshoot. The namespace belongs to the host's user
 * namespace, where the workspace has no capability: it cannot change the table.
 */

/** The table's name inside each workspace's namespace (family `inet`: IPv4 and IPv6). */
export const WORKSPACE_LIMITS_TABLE = 'workbay_limits';

/**
 * TCP connections a workspace may have open at once by default: a build, a language server, a browser preview use a
 * few hundred; at about 73 KB of buffers beyond its cap each, this bounds the overshoot near 300 MB.
 */
export const DEFAULT_MAX_CONNECTIONS_PER_WORKSPACE = 4096;

/**
 * The share of the node's orphan limit (`net.ipv4.tcp_max_orphans`, one for the node: no namespace has its own) that
 * the workspaces' connections may fill together; the rest stays the host's. An orphan is a socket its process closed
 * with bytes or a FIN still to send; past the limit the kernel resets every new one on the node, so a slow client of
 * any owner loses the end of its answer. Each connection a workspace has open can become one, for minutes, at no cost
 * of descriptors (red team round 17, L1: 4,096 per workspace in 0.8 s; 32 such workspaces reach a 131,072 limit).
 */
export const WORKSPACE_ORPHAN_SHARE = 0.75;

/**
 * The per-workspace connection limit on a node of at most `maxWorkspaces` workspaces: `configured`, or less where that
 * many could hold more than their share of `maxOrphans` (unknown: `configured`). At least 1: a share too small for
 * honest work is the operator's to see (the runtime warns), not a floor that lets the workspaces pass it.
 */
export function sharedConnectionLimit(
  configured: number,
  maxOrphans: number | undefined,
  maxWorkspaces: number,
): number {
  if (maxOrphans === undefined || !(maxOrphans > 0)) return configured;
  const share = Math.floor((maxOrphans * WORKSPACE_ORPHAN_SHARE) / Math.max(1, maxWorkspaces));
  return Math.min(configured, Math.max(1, share));
}

/** The node's `net.ipv4.tcp_max_orphans`, or undefined when it cannot be read (the configured limit holds then). */
export async function readMaxOrphans(file = '/proc/sys/net/ipv4/tcp_max_orphans'): Promise<number | undefined> {
  return readProcCount(file);
}

/**
 * The table: new TCP connections past `max` open are answered with a reset (the caller sees ECONNREFUSED).
 *
 * Counting them turns connection tracking on in the namespace, for every packet of every protocol, and the entries
 * are kernel memory the workspace's cgroup is barely charged for, in the node's one conntrack hash. Red team round 15
 * (G2): UDP datagrams to every loopback port filled the namespace's table to `nf_conntrack_max` (262,144 entries, about
 * 65 MB, 1.2 MB of it charged) in 15 s, four workspaces 227 MB. Nothing in the namespace needs to track anything but
 * TCP (the host does the rest: its own table, bounded per workspace), so all else is exempt before conntrack sees it.
 */
export function workspaceConnectionLimitRuleset(max: number): string {
  const closed = closedFlowTimeouts('closed');
  const inbound = inboundFlowTimeouts('inbound');
  return [
    `table inet ${WORKSPACE_LIMITS_TABLE} {}`,
    `delete table inet ${WORKSPACE_LIMITS_TABLE}`,
    `table inet ${WORKSPACE_LIMITS_TABLE} {`,
    // Closed TCP connections are not counted and would stay 120 s: a loopback connect/close loop filled the table
    // (red team round 15c, N1). They leave after the host table's time for workspace flows.
    ...closed.declarations,
    ...inbound.declarations,
    '  chain untracked_in {',
    '    type filter hook prerouting priority raw; policy accept;',
    '    meta l4proto != tcp notrack',
    '  }',
    '  chain untracked_out {',
    '    type filter hook output priority raw; policy accept;',
    '    meta l4proto != tcp notrack',
    '  }',
    '  chain output {',
    '    type filter hook output priority filter; policy accept;',
    `    meta l4proto tcp ct state new ct count over ${max} counter reject with tcp reset`,
    ...closed.setOn(''),
    '  }',
    // Connections into the workspace (the port proxy's, one per request) leave early here too, in every state but
    // ESTABLISHED: they filled this table as they filled the host's (red team round 16, H1: 77,644 entries). Not
    // counted: the proxy bounds them.
    '  chain input {',
    '    type filter hook input priority filter; policy accept;',
    ...inbound.setOn(''),
    '  }',
    '}',
    '',
  ].join('\n');
}

/** Installs (or replaces) the connection limit in the named network namespace `netns`. */
export async function limitWorkspaceConnections(
  netns: string,
  max = DEFAULT_MAX_CONNECTIONS_PER_WORKSPACE,
): Promise<void> {
  const op = 'connections-limit';
  check(op, 'netns', netns, netnsPattern, netnsRule);
  if (!Number.isSafeInteger(max) || max < 1)
    throw new NsinsiderValidationError(op, 'max', 'must be a positive integer');
  await tool(
    op,
    'nsenter',
    [`--net=${NETNS_DIR}/${netns}`, '--', 'nft', '-f', '-'],
    workspaceConnectionLimitRuleset(max),
  );
}

/**
 * Aborts every TCP socket left in the named network namespace `netns` (`ss -K`: each is reset and freed at once);
 * false when there is no such namespace. For a workspace whose processes are gone, just before its namespace is
 * deleted: what is left then are orphans, sockets the processes closed with bytes or a FIN still unsent. They count
 * against the node's orphan limit, which is node-wide, and deleting the namespace does not end them: they live out
 * their retries in it, for minutes when the peer has gone quiet (red team round 16b, J3: stopping one workspace that
 * held 64,000 connections left 55,356 orphans on the node, 30,589 of them 50 s later).
 */
export async function abortWorkspaceConnections(netns: string): Promise<boolean> {
  const op = 'connections-abort';
  check(op, 'netns', netns, netnsPattern, netnsRule);
  // Looked up first: a missing `nsenter` or `ss` fails with ENOENT too, and must not pass for a missing namespace.
  if (!existsSync(`${NETNS_DIR}/${netns}`)) return false;
  await tool(op, 'nsenter', [`--net=${NETNS_DIR}/${netns}`, '--', 'ss', '-K', '-H', '-t', '-a', '-n']);
  return true;
}
