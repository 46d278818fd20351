import { constants as fsConstants } from 'node:fs';
import { chown, lstat, mkdir, open, writeFile, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { OpArgs, OpName } from './contract.js';
import { parseIpv4Cidr } from './contract.js';
import { errnoCode, OpFailure } from './errors.js';
import type { CommandResult } from './exec.js';
import { runCommand } from './exec.js';
import type { ConnectionLimitStats, DeviceNodeResult, NetworkInfo, PrepareDevResult, VethPairResult } from './types.js';

/**
 * The operations themselves. They run in whatever namespaces the current process is in: the CLI calls
 * them after nsenter has put it into the target's namespaces. Tools (mount, ip, nft, mknod) are the
 * system's own; failures become {@link OpFailure} with the tool's stderr.
 * @internal
 */

const TOOL_TIMEOUT_MS = 20_000;

/** Table used for connection limits; one per network namespace. */
export const CONNECTION_LIMIT_TABLE = 'workbay';
export const CONNECTION_LIMIT_CHAIN = 'ratelimit';
export const CONNECTION_DROP_COUNTER = 'ws-connection-drop-stats';
/** Table used for the masquerade rule of a veth pair's outer side. */
export const NAT_TABLE = 'workbay-nat';

async function tool(file: string, args: readonly string[], input?: string): Promise<CommandResult> {
  const r = await runCommand(file, args, { timeoutMs: TOOL_TIMEOUT_MS, input });
  if (r.spawnError) {
    const code = r.spawnError.code ?? 'ESPAWN';
    throw new OpFailure(
      code,
      `cannot run ${file}: ${r.spawnError.message}${code === 'ENOENT' ? ` (is ${file} installed?)` : ''}`,
      code === 'ENOENT' ? 'unsupported' : 'failed',
    );
  }
  if (r.timedOut) {
    throw new OpFailure(
      'ETIMEDOUT',
      `${file} ${args.join(' ')} did not finish within ${TOOL_TIMEOUT_MS} ms`,
      'timeout',
    );
  }
  if (r.exitCode !== 0) {
    const stderr = r.stderr.trim();
    throw new OpFailure(classifyToolError(stderr), `${file} ${args.join(' ')} failed (exit ${r.exitCode}): ${stderr}`);
  }
  return r;
}

function classifyToolError(stderr: string): string {
  const s = stderr.toLowerCase();
  if (s.includes('not mounted')) return 'ENOTMOUNTED';
  if (s.includes('file exists') || s.includes('already exists')) return 'EEXIST';
  if (s.includes('no such file') || s.includes('does not exist') || s.includes('cannot find device')) return 'ENOENT';
  if (s.includes('permission denied') || s.includes('operation not permitted')) return 'EPERM';
  if (s.includes('busy')) return 'EBUSY';
  return 'EFAILED';
}

async function ensureDir(path: string): Promise<void> {
  try {
    await mkdir(path, { recursive: true });
  } catch (e) {
    throw new OpFailure(errnoCode(e) ?? 'EFAILED', `cannot create ${path}: ${(e as Error).message}`);
  }
}

async function pathKind(path: string): Promise<'file' | 'dir' | 'missing'> {
  try {
    const st = await lstat(path);
    return st.isDirectory() ? 'dir' : 'file';
  } catch (e) {
    // Only absence is 'missing': a /proc entry we cannot lstat must not be skipped by the masking as absent.
    const code = errnoCode(e);
    if (code === 'ENOENT' || code === 'ENOTDIR') return 'missing';
    throw new OpFailure(code ?? 'EFAILED', `cannot inspect ${path}: ${(e as Error).message}`);
  }
}

// OCI runtime defaults: what a container should not read from proc, and what it must not write.
const PROC_MASKED = [
  'acpi',
  'asound',
  'kcore',
  'keys',
  'latency_stats',
  'timer_list',
  'timer_stats',
  'sched_debug',
  'scsi',
];
const PROC_READ_ONLY = ['bus', 'fs', 'irq', 'sys', 'sysrq-trigger'];

async function mountProc(args: OpArgs<'mount-proc'>): Promise<{ target: string; masked: string[] }> {
  await ensureDir(args.target);
  await tool('mount', ['-t', 'proc', '-o', 'nosuid,nodev,noexec', 'proc', args.target]);
  const masked: string[] = [];
  if (args.mask) {
    try {
      for (const name of PROC_MASKED) {
        const p = join(args.target, name);
        const kind = await pathKind(p);
        if (kind === 'file') {
          await tool('mount', ['--bind', '/dev/null', p]);
        } else if (kind === 'dir') {
          await tool('mount', ['-t', 'tmpfs', '-o', 'ro,nosuid,nodev,noexec,size=4k', 'tmpfs', p]);
        } else {
          continue;
        }
        masked.push(name);
      }
      for (const name of PROC_READ_ONLY) {
        const p = join(args.target, name);
        if ((await pathKind(p)) === 'missing') continue;
        await tool('mount', ['--bind', p, p]);
        await tool('mount', ['-o', 'remount,bind,ro', p]);
        masked.push(name);
      }
    } catch (e) {
      // Never leave a half-masked proc behind.
      await runCommand('umount', ['-R', '-l', args.target], { timeoutMs: TOOL_TIMEOUT_MS });
      throw e;
    }
  }
  return { target: args.target, masked };
}

async function mountSysfs(args: OpArgs<'mount-sysfs'>): Promise<{ target: string }> {
  await ensureDir(args.target);
  const opts = ['nosuid', 'nodev', 'noexec', ...(args.readOnly ? ['ro'] : [])].join(',');
  await tool('mount', ['-t', 'sysfs', '-o', opts, 'sysfs', args.target]);
  return { target: args.target };
}

async function unmount(args: OpArgs<'unmount'>): Promise<{ target: string }> {
  await tool('umount', [...(args.recursive ? ['-R'] : []), ...(args.lazy ? ['-l'] : []), args.target]);
  return { target: args.target };
}

async function makeShared(args: OpArgs<'make-shared'>): Promise<{ target: string }> {
  await tool('mount', ['--make-shared', args.target]);
  return { target: args.target };
}

function devNumbers(rdev: number): { major: number; minor: number } {
  // glibc's gnu_dev_major/minor for the 32-bit range that Node reports.
  return { major: ((rdev >>> 8) & 0xfff) >>> 0, minor: ((rdev & 0xff) | ((rdev >>> 12) & 0xfff00)) >>> 0 };
}

async function mknod(args: OpArgs<'mknod'>): Promise<DeviceNodeResult> {
  const mode = args.mode.toString(8).padStart(4, '0');
  await tool('mknod', [
    '-m',
    mode,
    args.path,
    args.type === 'char' ? 'c' : 'b',
    String(args.major),
    String(args.minor),
  ]);
  if (args.uid !== undefined || args.gid !== undefined) {
    try {
      await chown(args.path, args.uid ?? -1, args.gid ?? -1);
    } catch (e) {
      throw new OpFailure(errnoCode(e) ?? 'EFAILED', `cannot chown ${args.path}: ${(e as Error).message}`);
    }
  }
  return { path: args.path, created: true };
}

async function prepareDev(args: OpArgs<'prepare-dev'>): Promise<PrepareDevResult> {
  const nodes = [
    { path: join(args.devDir, 'net', 'tun'), major: 10, minor: 200 },
    { path: join(args.devDir, 'fuse'), major: 10, minor: 229 },
  ];
  const created: string[] = [];
  const existing: string[] = [];
  await ensureDir(join(args.devDir, 'net'));
  for (const n of nodes) {
    let st;
    try {
      st = await lstat(n.path);
    } catch (e) {
      // Absent nodes are created below; any other failure is not absence.
      if (errnoCode(e) !== 'ENOENT') throw new OpFailure(errnoCode(e) ?? 'EFAILED', `cannot inspect ${n.path}`);
      st = undefined;
    }
    if (st) {
      const { major, minor } = devNumbers(st.rdev);
      if (!st.isCharacterDevice() || major !== n.major || minor !== n.minor) {
        throw new OpFailure('EEXIST', `${n.path} exists but is not the character device ${n.major}:${n.minor}`);
      }
      // An existing node belongs to whoever made it (possibly the host): leave it alone.
      existing.push(n.path);
      continue;
    }
    await mknod({
      path: n.path,
      type: 'char',
      major: n.major,
      minor: n.minor,
      mode: 0o666,
      uid: args.uid,
      gid: args.gid,
    });
    created.push(n.path);
  }
  // Some tools refuse to start without /dev/kmsg; an empty file satisfies them.
  const kmsg = join(args.devDir, 'kmsg');
  if ((await pathKind(kmsg)) === 'missing') {
    const fh = await open(kmsg, fsConstants.O_CREAT | fsConstants.O_WRONLY, 0o644);
    await fh.close();
    created.push(kmsg);
  }
  return { created, existing };
}

async function setupPairVeths(args: OpArgs<'setup-pair-veths'>): Promise<VethPairResult> {
  const cidr = parseIpv4Cidr(args.cidr);
  await tool('ip', [
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
    await tool('ip', ['addr', 'add', `${cidr.first}/${cidr.prefixLength}`, 'dev', args.hostIfName]);
    await tool('ip', ['link', 'set', args.hostIfName, 'up']);
    if (args.masquerade) {
      await writeSysctl('net/ipv4/ip_forward', '1');
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
      await tool('nft', ['-f', '-'], script);
    }
  } catch (e) {
    // Deleting one end removes the pair, so a retry starts clean.
    await runCommand('ip', ['link', 'del', args.hostIfName], { timeoutMs: TOOL_TIMEOUT_MS });
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

async function setupPeerVeth(
  args: OpArgs<'setup-peer-veth'>,
): Promise<{ ifName: string; address: string; gateway: string }> {
  const cidr = parseIpv4Cidr(args.cidr);
  await tool('ip', ['addr', 'replace', `${cidr.second}/${cidr.prefixLength}`, 'dev', args.ifName]);
  await tool('ip', ['link', 'set', 'lo', 'up']);
  await tool('ip', ['link', 'set', args.ifName, 'up']);
  await tool('ip', ['route', 'replace', 'default', 'via', cidr.first, 'dev', args.ifName]);
  return { ifName: args.ifName, address: cidr.second, gateway: cidr.first };
}

// /proc/sys/net shows the network namespace of the process that opens it, so after nsenter --net this
// writes the target's setting even through the host's proc mount.
async function writeSysctl(key: string, value: string): Promise<void> {
  const path = `/proc/sys/${key}`;
  try {
    await writeFile(path, value);
  } catch (e) {
    const code = errnoCode(e) ?? 'EFAILED';
    throw new OpFailure(
      code,
      `cannot write ${path}: ${(e as Error).message}`,
      code === 'ENOENT' ? 'unsupported' : 'failed',
    );
  }
}

async function enableIpForward(args: OpArgs<'enable-ip-forward'>): Promise<{ enabled: boolean }> {
  await writeSysctl('net/ipv4/ip_forward', args.enabled ? '1' : '0');
  const now = (await readFile('/proc/sys/net/ipv4/ip_forward', 'utf8')).trim();
  return { enabled: now === '1' };
}

async function disableIpv6(): Promise<{ applied: boolean }> {
  if ((await pathKind('/proc/sys/net/ipv6/conf/all/disable_ipv6')) === 'missing') {
    // No IPv6 in this kernel: nothing to disable.
    return { applied: false };
  }
  await writeSysctl('net/ipv6/conf/all/disable_ipv6', '1');
  await writeSysctl('net/ipv6/conf/default/disable_ipv6', '1');
  return { applied: true };
}

async function setupConnectionLimit(args: OpArgs<'setup-connection-limit'>): Promise<{ table: string; chain: string }> {
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
  await tool('nft', ['-f', '-'], script);
  return { table: CONNECTION_LIMIT_TABLE, chain: CONNECTION_LIMIT_CHAIN };
}

async function removeConnectionLimit(): Promise<{ removed: boolean }> {
  try {
    await tool('nft', ['delete', 'table', 'inet', CONNECTION_LIMIT_TABLE]);
    return { removed: true };
  } catch (e) {
    if (e instanceof OpFailure && e.code === 'ENOENT') {
      return { removed: false };
    }
    throw e;
  }
}

async function connectionLimitStats(): Promise<ConnectionLimitStats | null> {
  let r: CommandResult;
  try {
    r = await tool('nft', ['-j', 'list', 'counter', 'inet', CONNECTION_LIMIT_TABLE, CONNECTION_DROP_COUNTER]);
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

async function dumpNetworkInfo(): Promise<NetworkInfo> {
  const addrs = JSON.parse((await tool('ip', ['-j', 'addr'])).stdout) as IpLink[];
  const routes = JSON.parse((await tool('ip', ['-j', 'route'])).stdout) as Array<{
    dst: string;
    gateway?: string;
    dev?: string;
  }>;
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

type Handlers = { [O in OpName]: (args: OpArgs<O>) => Promise<unknown> };

/** @internal */
export const insideHandlers: Handlers = {
  'mount-proc': mountProc,
  'mount-sysfs': mountSysfs,
  unmount,
  'make-shared': makeShared,
  mknod,
  'prepare-dev': prepareDev,
  'setup-pair-veths': setupPairVeths,
  'setup-peer-veth': setupPeerVeth,
  'enable-ip-forward': enableIpForward,
  'disable-ipv6': disableIpv6,
  'setup-connection-limit': setupConnectionLimit,
  'remove-connection-limit': removeConnectionLimit,
  'connection-limit-stats': connectionLimitStats,
  'dump-network-info': dumpNetworkInfo,
};
