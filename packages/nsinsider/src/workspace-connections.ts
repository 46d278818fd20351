import { NsinsiderValidationError } from './errors.js';
import { check, tool } from './host-tool.js';
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

/** The table: new TCP connections past `max` open are answered with a reset (the caller sees ECONNREFUSED). */
export function workspaceConnectionLimitRuleset(max: number): string {
  return [
    `table inet ${WORKSPACE_LIMITS_TABLE} {}`,
    `delete table inet ${WORKSPACE_LIMITS_TABLE}`,
    `table inet ${WORKSPACE_LIMITS_TABLE} {`,
    '  chain output {',
    '    type filter hook output priority filter; policy accept;',
    `    meta l4proto tcp ct state new ct count over ${max} counter reject with tcp reset`,
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
