import { join } from 'node:path';
import type { OpArgs, OpName } from './contract.js';
import { parseIpv4Cidr } from './contract.js';
import { OpFailure } from './errors.js';
import type { CommandResult } from './exec.js';
import { runCommand } from './exec.js';
import type { ConnectionLimitStats, DeviceNodeResult, NetworkInfo, PrepareDevResult, VethPairResult } from './types.js';

/**
 * The operations themselves, as sequences of the system's own tools (mount, umount, mkdir, mknod, chown, stat,
 * install, tee, ip, nft), each run through a {@link ToolRunner} that puts it into the target's namespaces: the
 * library runs every tool under `nsenter` (no Node start-up per operation), the CLI runs them in the namespaces it
 * was itself started in. Nothing here touches the file system in-process: a path is only ever resolved by a tool
 * inside the target's mount namespace, never through the caller's view of it. Arguments are argv arrays (and
 * stdin for `ip -batch`/`nft -f`, built only from validated values), never shell strings. Failures become
 * {@link OpFailure} with the tool's stderr and an errno-like code.
 * @internal
 */

export const TOOL_TIMEOUT_MS = 20_000;

/** Table used for connection limits; one per network namespace. */
export const CONNECTION_LIMIT_TABLE = 'workbay';
export const CONNECTION_LIMIT_CHAIN = 'ratelimit';
export const CONNECTION_DROP_COUNTER = 'ws-connection-drop-stats';
/** Table used for the masquerade rule of a veth pair's outer side. */
export const NAT_TABLE = 'workbay-nat';

/**
 * Runs one tool in the namespaces of the operation. Resolves with the tool's result whatever its exit code;
 * rejects with an {@link OpFailure} only when the tool could not run there at all (not installed, the target's
 * namespaces are gone, the time is up).
 * @internal
 */
export interface ToolRunner {
  run(file: string, args: readonly string[], input?: string): Promise<CommandResult>;
}

/** Runs tools in the current namespaces (the CLI: nsenter already put it where it acts). @internal */
export function directRunner(timeoutMs = TOOL_TIMEOUT_MS): ToolRunner {
  return {
    async run(file, args, input) {
      // Messages in English: failures are classified by what the tools print.
      const r = await runCommand(file, args, { timeoutMs, input, env: { ...process.env, LC_ALL: 'C' } });
      if (r.spawnError) {
        const code = r.spawnError.code ?? 'ESPAWN';
        throw new OpFailure(
          code,
          `cannot run ${file}: ${r.spawnError.message}${code === 'ENOENT' ? ` (is ${file} installed?)` : ''}`,
          code === 'ENOENT' ? 'unsupported' : 'failed',
        );
      }
      if (r.timedOut) {
        throw new OpFailure('ETIMEDOUT', `${file} ${args.join(' ')} did not finish within ${timeoutMs} ms`, 'timeout');
      }
      return r;
    },
  };
}

/** Runs a tool and turns a non-zero exit into an {@link OpFailure} carrying its stderr and exit code. */
async function tool(t: ToolRunner, file: string, args: readonly string[], input?: string): Promise<CommandResult> {
  const r = await t.run(file, args, input);
  if (r.exitCode !== 0) {
    const stderr = r.stderr.trim();
    throw new OpFailure(
      classifyToolError(stderr),
      `${file} ${args.join(' ')} failed (exit ${r.exitCode}): ${stderr.slice(0, 400)}`,
      'failed',
      { exitCode: r.exitCode, stderr },
    );
  }
  return r;
}

export function classifyToolError(stderr: string): string {
  const s = stderr.toLowerCase();
  if (s.includes('not mounted')) return 'ENOTMOUNTED';
  if (s.includes('file exists') || s.includes('already exists')) return 'EEXIST';
  if (s.includes('no such file') || s.includes('does not exist') || s.includes('cannot find device')) return 'ENOENT';
  if (s.includes('permission denied') || s.includes('operation not permitted')) return 'EPERM';
  if (s.includes('busy')) return 'EBUSY';
  return 'EFAILED';
}

/** What `stat` says about each of `paths` (absent ones are missing from the map); other failures throw. */
async function probe(t: ToolRunner, paths: readonly string[]): Promise<Map<string, { type: string; rdev: string }>> {
  // NUL-separated fields: a path may hold any byte but NUL. %t/%T: device major/minor in hex.
  const r = await t.run('stat', ['--printf', '%F\\0%t:%T\\0%n\\0', '--', ...paths]);
  const problems = r.stderr
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !/no such file or directory|not a directory/i.test(l));
  if (r.exitCode !== 0 && problems.length > 0) {
    throw new OpFailure(classifyToolError(problems.join('\n')), `cannot inspect: ${problems.join('; ').slice(0, 400)}`);
  }
  const fields = r.stdout.split('\0');
  const found = new Map<string, { type: string; rdev: string }>();
  for (let i = 0; i + 2 < fields.length; i += 3) {
    found.set(fields[i + 2]!, { type: fields[i]!, rdev: fields[i + 1]! });
  }
  return found;
}

/** Mounts at `target`, creating the mount point only when it is missing (one tool run in the usual case). */
async function mountCreating(t: ToolRunner, target: string, args: readonly string[]): Promise<void> {
  try {
    await tool(t, 'mount', [...args, target]);
  } catch (e) {
    if (!(e instanceof OpFailure) || e.code !== 'ENOENT') throw e;
    await tool(t, 'mkdir', ['-p', '--', target]);
    await tool(t, 'mount', [...args, target]);
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

async function mountProc(args: OpArgs<'mount-proc'>, t: ToolRunner): Promise<{ target: string; masked: string[] }> {
  await mountCreating(t, args.target, ['-t', 'proc', '-o', 'nosuid,nodev,noexec', 'proc']);
  if (!args.mask) return { target: args.target, masked: [] };
  try {
    // The entries depend on the kernel: one stat of the new proc says which exist and what they are.
    const names = [...PROC_MASKED, ...PROC_READ_ONLY];
    const present = await probe(
      t,
      names.map((n) => join(args.target, n)),
    );
    const work: Array<{ name: string; argv: string[] }> = [];
    for (const name of PROC_MASKED) {
      const p = join(args.target, name);
      const kind = present.get(p)?.type;
      if (kind === undefined) continue;
      work.push({
        name,
        argv:
          kind === 'directory'
            ? ['-t', 'tmpfs', '-o', 'ro,nosuid,nodev,noexec,size=4k', 'tmpfs', p]
            : ['--bind', '/dev/null', p],
      });
    }
    for (const name of PROC_READ_ONLY) {
      const p = join(args.target, name);
      // A read-only bind of the entry onto itself (mount does the bind and the read-only remount).
      if (present.has(p)) work.push({ name, argv: ['--bind', '-o', 'ro', p, p] });
    }
    // Independent mount points: all at once (the kernel serialises the mount table changes).
    const settled = await Promise.allSettled(work.map((w) => tool(t, 'mount', w.argv)));
    const failed = settled.find((s): s is PromiseRejectedResult => s.status === 'rejected');
    if (failed) throw failed.reason;
    return { target: args.target, masked: work.map((w) => w.name) };
  } catch (e) {
    // Never leave a half-masked proc behind.
    await t.run('umount', ['-R', '-l', args.target]).catch(() => undefined);
    throw e;
  }
}

async function mountSysfs(args: OpArgs<'mount-sysfs'>, t: ToolRunner): Promise<{ target: string }> {
  const opts = ['nosuid', 'nodev', 'noexec', ...(args.readOnly ? ['ro'] : [])].join(',');
  await mountCreating(t, args.target, ['-t', 'sysfs', '-o', opts, 'sysfs']);
  return { target: args.target };
}

async function unmount(args: OpArgs<'unmount'>, t: ToolRunner): Promise<{ target: string }> {
  await tool(t, 'umount', [...(args.recursive ? ['-R'] : []), ...(args.lazy ? ['-l'] : []), args.target]);
  return { target: args.target };
}

async function makeShared(args: OpArgs<'make-shared'>, t: ToolRunner): Promise<{ target: string }> {
  await tool(t, 'mount', ['--make-shared', args.target]);
  return { target: args.target };
}

/** `chown` argument with numeric ids (a leading '+' keeps GNU chown from reading them as user names). */
function owner(uid: number | undefined, gid: number | undefined): string {
  return `${uid === undefined ? '' : `+${uid}`}${gid === undefined ? '' : `:+${gid}`}`;
}

async function mknod(args: OpArgs<'mknod'>, t: ToolRunner): Promise<DeviceNodeResult> {
  const mode = args.mode.toString(8).padStart(4, '0');
  await tool(t, 'mknod', [
    '-m',
    mode,
    args.path,
    args.type === 'char' ? 'c' : 'b',
    String(args.major),
    String(args.minor),
  ]);
  if (args.uid !== undefined || args.gid !== undefined) {
    // -h: never through a link someone put at the path since mknod made it.
    await tool(t, 'chown', ['-h', owner(args.uid, args.gid), '--', args.path]);
  }
  return { path: args.path, created: true };
}

async function prepareDev(args: OpArgs<'prepare-dev'>, t: ToolRunner): Promise<PrepareDevResult> {
  const nodes = [
    { path: join(args.devDir, 'net', 'tun'), major: 10, minor: 200 },
    { path: join(args.devDir, 'fuse'), major: 10, minor: 229 },
  ];
  const kmsg = join(args.devDir, 'kmsg');
  await tool(t, 'mkdir', ['-p', '--', join(args.devDir, 'net')]);
  const present = await probe(t, [...nodes.map((n) => n.path), kmsg]);
  const created: string[] = [];
  const existing: string[] = [];
  for (const n of nodes) {
    const st = present.get(n.path);
    if (!st) continue;
    if (st.type !== 'character special file' || st.rdev !== `${n.major.toString(16)}:${n.minor.toString(16)}`) {
      throw new OpFailure('EEXIST', `${n.path} exists but is not the character device ${n.major}:${n.minor}`);
    }
    // An existing node belongs to whoever made it (possibly the host): leave it alone.
    existing.push(n.path);
  }
  const missing = nodes.filter((n) => !present.has(n.path));
  for (const n of missing) {
    await tool(t, 'mknod', ['-m', '0666', n.path, 'c', String(n.major), String(n.minor)]);
    created.push(n.path);
  }
  if (missing.length > 0) {
    await tool(t, 'chown', ['-h', owner(args.uid, args.gid), '--', ...missing.map((n) => n.path)]);
  }
  // Some tools refuse to start without /dev/kmsg; an empty file satisfies them. install unlinks and creates
  // (O_EXCL), so a link planted there is replaced, not followed.
  if (!present.has(kmsg)) {
    await tool(t, 'install', ['-m', '0644', '/dev/null', kmsg]);
    created.push(kmsg);
  }
  return { created, existing };
}

async function setupPairVeths(args: OpArgs<'setup-pair-veths'>, t: ToolRunner): Promise<VethPairResult> {
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

async function setupPeerVeth(
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

async function enableIpForward(args: OpArgs<'enable-ip-forward'>, t: ToolRunner): Promise<{ enabled: boolean }> {
  // The kernel took the write (or it failed): the setting is what was asked.
  await writeSysctl(t, ['net/ipv4/ip_forward'], args.enabled ? '1' : '0');
  return { enabled: args.enabled };
}

async function disableIpv6(_args: OpArgs<'disable-ipv6'>, t: ToolRunner): Promise<{ applied: boolean }> {
  try {
    await writeSysctl(t, ['net/ipv6/conf/all/disable_ipv6', 'net/ipv6/conf/default/disable_ipv6'], '1');
    return { applied: true };
  } catch (e) {
    // No IPv6 in this kernel: nothing to disable.
    if (e instanceof OpFailure && e.kind === 'unsupported') return { applied: false };
    throw e;
  }
}

async function setupConnectionLimit(
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

async function removeConnectionLimit(_args: unknown, t: ToolRunner): Promise<{ removed: boolean }> {
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

async function connectionLimitStats(_args: unknown, t: ToolRunner): Promise<ConnectionLimitStats | null> {
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

async function dumpNetworkInfo(_args: unknown, t: ToolRunner): Promise<NetworkInfo> {
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

type Handlers = { [O in OpName]: (args: OpArgs<O>, tools: ToolRunner) => Promise<unknown> };

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
