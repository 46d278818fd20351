import type { OpArgs } from './contract.js';
import { parseIpv4Cidr } from './contract.js';
import { OpFailure } from './errors.js';
import type { CommandResult } from './exec.js';
import type { ToolRunner } from './inside-tools.js';
import { tool } from './inside-tools.js';
import type { ConnectionLimitStats, NetworkInfo, VethPairResult } from './types.js';

// Operations in the target's network namespace: veths, sysctls, nftables tables and the network dump.

/** Table used for connection limits; one per network namespace. */
export const CONNECTION_LIMIT_TABLE = 'workbay';
export const CONNECTION_LIMIT_CHAIN = 'ratelimit';
export const CONNECTION_DROP_COUNTER = 'ws-connection-drop-stats';
/** Table used for the masquerade rule of a veth pair's outer side. */
export const NAT_TABLE = 'workbay-nat';

export async function setupPairVeths(args: OpArgs<'setup-pair-veths'>, t: ToolRunner): Promise<VethPairResult> {
  const cidr = parseIpv4Cidr(args.cidr);
  // Alone: when the name is taken, this fails and nothing of the other pair is touched.
  await tool(t, 'ip', [
    'link',
    'add',
    args.hostIfName,
    'type',
    'veth',
    'peer',
    'name',
    args.peerIfName,
    'netns',
    String(args.targetPid),
  ]);
  try {
    await tool(
      t,
      'ip',
      ['-batch', '-'],
      `addr add ${cidr.first}/${cidr.prefixLength} dev ${args.hostIfName}\nlink set ${args.hostIfName} up\n`,
    );
    if (args.masquerade) {
      await writeSysctl(t, ['net/ipv4/ip_forward'], '1');
      const script = [
        `table ip ${NAT_TABLE} {}`,
        `delete table ip ${NAT_TABLE}`,
        `table ip ${NAT_TABLE} {`,
        '  chain postrouting {',
        '    type nat hook postrouting priority srcnat; policy accept;',
        `    ip saddr ${cidr.network}/${cidr.prefixLength} oifname != "${args.hostIfName}" masquerade`,
        '  }',
        '}',
        '',
      ].join('\n');
      await tool(t, 'nft', ['-f', '-'], script);
    }
  } catch (e) {
    // Deleting one end removes the pair, so a retry starts clean.
    await t.run('ip', ['link', 'del', args.hostIfName]).catch(() => undefined);
    throw e;
  }
  return {
    hostIfName: args.hostIfName,
    peerIfName: args.peerIfName,
    hostAddress: cidr.first,
    peerAddress: cidr.second,
    prefixLength: cidr.prefixLength,
  };
}

export async function setupPeerVeth(
  args: OpArgs<'setup-peer-veth'>,
  t: ToolRunner,
): Promise<{ ifName: string; address: string; gateway: string }> {
  const cidr = parseIpv4Cidr(args.cidr);
  // One ip run; -batch stops at the first failing line.
  await tool(
    t,
    'ip',
    ['-batch', '-'],
    [
      `addr replace ${cidr.second}/${cidr.prefixLength} dev ${args.ifName}`,
      'link set lo up',
      `link set ${args.ifName} up`,
      `route replace default via ${cidr.first} dev ${args.ifName}`,
      '',
    ].join('\n'),
  );
  return { ifName: args.ifName, address: cidr.second, gateway: cidr.first };
}

// /proc/sys/net shows the network namespace of the process that opens it, so `tee` run under nsenter --net
// writes the target's setting even through the host's proc mount.
async function writeSysctl(t: ToolRunner, keys: readonly string[], value: string): Promise<void> {
  try {
    await tool(t, 'tee', ['--', ...keys.map((k) => `/proc/sys/${k}`)], value);
  } catch (e) {
    if (e instanceof OpFailure && e.code === 'ENOENT') {
      throw new OpFailure('ENOENT', e.message, 'unsupported', { exitCode: e.exitCode, stderr: e.stderr });
    }
    throw e;
  }
}

export async function enableIpForward(args: OpArgs<'enable-ip-forward'>, t: ToolRunner): Promise<{ enabled: boolean }> {
  // The kernel took the write (or it failed): the setting is what was asked.
  await writeSysctl(t, ['net/ipv4/ip_forward'], args.enabled ? '1' : '0');
  return { enabled: args.enabled };
}

export async function disableIpv6(_args: OpArgs<'disable-ipv6'>, t: ToolRunner): Promise<{ applied: boolean }> {
  try {
    await writeSysctl(t, ['net/ipv6/conf/all/disable_ipv6', 'net/ipv6/conf/default/disable_ipv6'], '1');
    return { applied: true };
  } catch (e) {
    // No IPv6 in this kernel: nothing to disable.
    if (e instanceof OpFailure && e.kind === 'unsupported') return { applied: false };
    throw e;
  }
}

export async function setupConnectionLimit(
  args: OpArgs<'setup-connection-limit'>,
  t: ToolRunner,
): Promise<{ table: string; chain: string }> {
  const verdict = args.enforce ? ' drop' : '';
  // Declaring, deleting and re-creating the table in one transaction makes this idempotent and atomic.
  const script = [
    `table inet ${CONNECTION_LIMIT_TABLE} {}`,
    `delete table inet ${CONNECTION_LIMIT_TABLE}`,
    `table inet ${CONNECTION_LIMIT_TABLE} {`,
    `  counter ${CONNECTION_DROP_COUNTER} {}`,
    `  chain ${CONNECTION_LIMIT_CHAIN} {`,
    '    type filter hook postrouting priority filter; policy accept;',
    `    ct state new limit rate over ${args.limitPerMinute}/minute burst ${args.bucketSize} packets counter name "${CONNECTION_DROP_COUNTER}"${verdict}`,
    '  }',
    '}',
    '',
  ].join('\n');
  await tool(t, 'nft', ['-f', '-'], script);
  return { table: CONNECTION_LIMIT_TABLE, chain: CONNECTION_LIMIT_CHAIN };
}

export async function removeConnectionLimit(_args: unknown, t: ToolRunner): Promise<{ removed: boolean }> {
  try {
    await tool(t, 'nft', ['delete', 'table', 'inet', CONNECTION_LIMIT_TABLE]);
    return { removed: true };
  } catch (e) {
    if (e instanceof OpFailure && e.code === 'ENOENT') {
      return { removed: false };
    }
    throw e;
  }
}

export async function connectionLimitStats(_args: unknown, t: ToolRunner): Promise<ConnectionLimitStats | null> {
  let r: CommandResult;
  try {
    r = await tool(t, 'nft', ['-j', 'list', 'counter', 'inet', CONNECTION_LIMIT_TABLE, CONNECTION_DROP_COUNTER]);
  } catch (e) {
    if (e instanceof OpFailure && e.code === 'ENOENT' && e.kind !== 'unsupported') {
      return null;
    }
    throw e;
  }
  const doc = JSON.parse(r.stdout) as { nftables?: Array<{ counter?: { packets?: number; bytes?: number } }> };
  const counter = doc.nftables?.find((x) => x.counter)?.counter;
  return { packets: counter?.packets ?? 0, bytes: counter?.bytes ?? 0 };
}

interface IpLink {
  ifname: string;
  operstate?: string;
  flags?: string[];
  mtu?: number;
  addr_info?: Array<{ family: string; local: string; prefixlen: number }>;
}

export async function dumpNetworkInfo(_args: unknown, t: ToolRunner): Promise<NetworkInfo> {
  // Both listings in one ip run: compact JSON, one document per line (strings escape their newlines).
  const out = (await tool(t, 'ip', ['-j', '-batch', '-'], 'addr\nroute\n')).stdout
    .split('\n')
    .filter((l) => l.trim() !== '');
  if (out.length !== 2) {
    throw new OpFailure('EPROTO', `ip printed ${out.length} JSON documents, expected 2`);
  }
  const addrs = JSON.parse(out[0]!) as IpLink[];
  const routes = JSON.parse(out[1]!) as Array<{ dst: string; gateway?: string; dev?: string }>;
  return {
    links: addrs.map((l) => ({
      name: l.ifname,
      up: (l.flags ?? []).includes('UP'),
      state: l.operstate ?? 'UNKNOWN',
      mtu: l.mtu ?? 0,
    })),
    addresses: addrs.flatMap((l) =>
      (l.addr_info ?? []).map((a) => ({
        ifName: l.ifname,
        family: a.family === 'inet6' ? ('ipv6' as const) : ('ipv4' as const),
        address: a.local,
        prefixLength: a.prefixlen,
      })),
    ),
    routes: routes.map((r) => ({ destination: r.dst, gateway: r.gateway, device: r.dev })),
  };
}
