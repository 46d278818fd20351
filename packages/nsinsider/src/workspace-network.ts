import { readdir, writeFile } from 'node:fs/promises';
import { parseIpv4Cidr } from './contract.js';
import { errnoCode, NsinsiderError, NsinsiderValidationError } from './errors.js';
import type { CommandResult } from './exec.js';
import { runCommand } from './exec.js';
import { check, classify, isCode, tool, TOOL_TIMEOUT_MS } from './host-tool.js';
import type { VethPairResult } from './types.js';

/**
 * Host-side network plumbing for workspaces that live in named network namespaces (`ip netns`), as the local
 * runtime runs them: one netns and one veth pair per workspace (the host table that keeps them apart is in
 * `workspace-firewall.ts`). Everything here runs in the caller's (the host's) network
 * namespace with plain `ip`/`nft`, in-process: no nsenter and no node start-up per step, since these sit on the
 * path of every workspace start.
 *
 * Requires root (CAP_NET_ADMIN, CAP_SYS_ADMIN for `ip netns`), iproute2 and nftables.
 */

/** Where `ip netns` keeps its named namespaces. */
export const NETNS_DIR = '/run/netns';

const ifNamePattern = /^[A-Za-z0-9_.-]{1,15}$/;
export const netnsPattern = /^[A-Za-z0-9_.-]{1,200}$/;
export const netnsRule = '1-200 characters of [A-Za-z0-9_.-]';
const ifNameRule = '1-15 characters of [A-Za-z0-9_.-]';

async function ip(op: string, args: readonly string[], input?: string): Promise<CommandResult> {
  return tool(op, 'ip', args, input);
}

/** Creates the named network namespace `name` (`ip netns add`); fails with code EEXIST when it exists. */
export async function createNetns(name: string): Promise<void> {
  check('netns-create', 'name', name, netnsPattern, netnsRule);
  await ip('netns-create', ['netns', 'add', name]);
}

/** Deletes the named network namespace; false when there was none. Its links go with it once no process holds it. */
export async function deleteNetns(name: string): Promise<boolean> {
  check('netns-delete', 'name', name, netnsPattern, netnsRule);
  try {
    await ip('netns-delete', ['netns', 'delete', name]);
    return true;
  } catch (e) {
    if (isCode(e, 'ENOENT')) return false;
    throw e;
  }
}

/** Names of the named network namespaces, optionally only those starting with `prefix`. */
export async function listNetns(prefix = ''): Promise<string[]> {
  try {
    return (await readdir(NETNS_DIR)).filter((n) => n.startsWith(prefix)).sort();
  } catch (e) {
    if (errnoCode(e) === 'ENOENT') return [];
    throw e;
  }
}

export interface HostLink {
  readonly name: string;
  /** The interface alias (ifalias), '' when unset. */
  readonly alias: string;
}

/** The host's links whose name starts with `prefix`, with their aliases. */
export async function listLinks(prefix = ''): Promise<HostLink[]> {
  const r = await ip('link-list', ['-j', 'link', 'show']);
  const links = JSON.parse(r.stdout || '[]') as Array<{ ifname: string; ifalias?: string }>;
  return links
    .filter((l) => l.ifname.startsWith(prefix))
    .map((l) => ({ name: l.ifname, alias: l.ifalias ?? '' }))
    .sort((a, b) => a.name.localeCompare(b.name));
}

/**
 * How many of the caller's network namespace's links start with `prefix`, from sysfs: no `ip` process, for a check on
 * every workspace start.
 */
export async function countLinks(prefix: string, sysClassNet = '/sys/class/net'): Promise<number> {
  return (await readdir(sysClassNet)).filter((name) => name.startsWith(prefix)).length;
}

/** Deletes a link (a veth end takes its peer with it); false when there was none. */
export async function deleteLink(ifName: string): Promise<boolean> {
  check('link-delete', 'ifName', ifName, ifNamePattern, ifNameRule);
  try {
    await ip('link-delete', ['link', 'delete', ifName]);
    return true;
  } catch (e) {
    if (isCode(e, 'ENOENT')) return false;
    throw e;
  }
}

export interface ClaimVethRequest {
  /** Name of the host end; also what claims it: creation fails with EEXIST when the name is taken. */
  hostIfName: string;
  /** Stored as the host end's alias (at most 200 characters), so that leftovers can be told apart by owner. */
  alias: string;
}

/**
 * Creates a veth pair in the host namespace, the peer named `<hostIfName>p` for now, and labels the host end with
 * `alias`. The kernel refuses a second link of the same name, so this is an atomic claim of the name (and of
 * whatever the caller derives from it, such as an address slot): it fails with code EEXIST when the name is taken.
 */
export async function claimVethPair(req: ClaimVethRequest): Promise<void> {
  const op = 'veth-claim';
  check(op, 'hostIfName', req.hostIfName, /^[A-Za-z0-9_.-]{1,14}$/, '1-14 characters of [A-Za-z0-9_.-]');
  if (typeof req.alias !== 'string' || req.alias.length > 200 || /[\n\0]/.test(req.alias)) {
    throw new NsinsiderValidationError(op, 'alias', 'must be at most 200 characters without newlines');
  }
  await ip(op, ['link', 'add', req.hostIfName, 'type', 'veth', 'peer', 'name', `${req.hostIfName}p`]);
  try {
    await ip(op, ['link', 'set', req.hostIfName, 'alias', req.alias]);
  } catch (e) {
    await runCommand('ip', ['link', 'delete', req.hostIfName], { timeoutMs: TOOL_TIMEOUT_MS });
    throw e;
  }
}

export interface WorkspaceVethRequest {
  /** Name of the host end. Creating it is the claim: it fails with code EEXIST when the name is taken. */
  hostIfName: string;
  /** Stored as the host end's alias (at most 200 characters), so that leftovers can be told apart by owner. */
  alias: string;
  /** Named network namespace (already created) where the peer is created. */
  netns: string;
  /** The pair's /30 (or larger): the host end gets the first address, the peer the second. */
  cidr: string;
  /** Name of the peer inside the namespace (default eth0). */
  peerIfName?: string;
}

/**
 * The whole pair in two `ip -batch` runs, as the original's SetupPairVeths: the peer is created directly inside
 * `netns` (moving an existing link into a namespace costs tens of milliseconds of RCU grace periods); the host end
 * is labelled with `alias`, gets no IPv6 link-local address (no address a workspace could reach the host on), the
 * first address, and goes up; inside, the peer gets the second address, loopback and peer go up, and the default
 * route points at the host end. The host end's name is the claim: code EEXIST when it is taken, and nothing is
 * left behind by a failure.
 */
export async function createWorkspaceVeth(req: WorkspaceVethRequest): Promise<VethPairResult> {
  const op = 'veth-create';
  check(op, 'hostIfName', req.hostIfName, ifNamePattern, ifNameRule);
  check(op, 'netns', req.netns, netnsPattern, netnsRule);
  const peerIfName = req.peerIfName ?? 'eth0';
  check(op, 'peerIfName', peerIfName, ifNamePattern, ifNameRule);
  if (typeof req.alias !== 'string' || req.alias.length > 200 || /["\\\n\0]/.test(req.alias)) {
    throw new NsinsiderValidationError(
      op,
      'alias',
      'must be at most 200 characters without quotes, backslashes or newlines',
    );
  }
  let cidr;
  try {
    cidr = parseIpv4Cidr(req.cidr);
  } catch {
    throw new NsinsiderValidationError(op, 'cidr', `must be an IPv4 CIDR of at most /30, got ${req.cidr.slice(0, 32)}`);
  }
  const host = req.hostIfName;
  const created = await runCommand('ip', ['-batch', '-'], {
    timeoutMs: TOOL_TIMEOUT_MS,
    input: [
      `link add ${host} type veth peer name ${peerIfName} netns ${req.netns}`,
      `link set ${host} alias "${req.alias}"`,
      `link set ${host} addrgenmode none`,
      `addr add ${cidr.first}/${cidr.prefixLength} dev ${host}`,
      `link set ${host} up`,
      '',
    ].join('\n'),
  });
  if (created.exitCode !== 0 || created.spawnError) {
    const stderr = created.stderr.trim();
    // Only the first line creates anything: when it failed, the name belongs to someone else; leave it alone.
    if (/-:1\b/.test(stderr) || created.spawnError) {
      throw new NsinsiderError(`${op}: cannot create ${host}: ${stderr.slice(0, 400) || created.spawnError?.message}`, {
        op,
        kind: created.spawnError ? 'spawn' : 'failed',
        code: created.spawnError ? created.spawnError.code : classify(stderr),
        exitCode: created.exitCode,
        stderr,
      });
    }
    await runCommand('ip', ['link', 'delete', host], { timeoutMs: TOOL_TIMEOUT_MS });
    throw new NsinsiderError(`${op}: cannot configure ${host}: ${stderr.slice(0, 400)}`, {
      op,
      kind: 'failed',
      code: classify(stderr),
      exitCode: created.exitCode,
      stderr,
    });
  }
  try {
    await ip(
      op,
      ['-n', req.netns, '-batch', '-'],
      [
        `addr add ${cidr.second}/${cidr.prefixLength} dev ${peerIfName}`,
        'link set lo up',
        `link set ${peerIfName} up`,
        `route add default via ${cidr.first} dev ${peerIfName}`,
        '',
      ].join('\n'),
    );
  } catch (e) {
    await runCommand('ip', ['link', 'delete', host], { timeoutMs: TOOL_TIMEOUT_MS });
    throw e;
  }
  return {
    hostIfName: host,
    peerIfName,
    hostAddress: cidr.first,
    peerAddress: cidr.second,
    prefixLength: cidr.prefixLength,
  };
}

export interface AttachVethRequest {
  /** Host end created by {@link claimVethPair}; its peer is `<hostIfName>p`. */
  hostIfName: string;
  /** Named network namespace (already created) that receives the peer. */
  netns: string;
  /** The pair's /30 (or larger): the host end gets the first address, the peer the second. */
  cidr: string;
  /** Name of the peer inside the namespace (default eth0). */
  peerIfName?: string;
}

/**
 * Moves the claimed pair's peer into `netns` and configures both ends, as the original's SetupPairVeths: host end
 * with the first address, up, IPv6 off (no link-local address a workspace could reach the host on); inside, the
 * peer renamed and given the second address, loopback and peer up, default route via the host end.
 */
export async function attachVethToNetns(req: AttachVethRequest): Promise<VethPairResult> {
  const op = 'veth-attach';
  check(op, 'hostIfName', req.hostIfName, /^[A-Za-z0-9_.-]{1,14}$/, '1-14 characters of [A-Za-z0-9_.-]');
  check(op, 'netns', req.netns, netnsPattern, netnsRule);
  const peerIfName = req.peerIfName ?? 'eth0';
  check(op, 'peerIfName', peerIfName, ifNamePattern, ifNameRule);
  let cidr;
  try {
    cidr = parseIpv4Cidr(req.cidr);
  } catch {
    throw new NsinsiderValidationError(op, 'cidr', `must be an IPv4 CIDR of at most /30, got ${req.cidr.slice(0, 32)}`);
  }
  const tmpPeer = `${req.hostIfName}p`;
  await writeIpv6Disabled(op, req.hostIfName);
  await ip(
    op,
    ['-batch', '-'],
    [
      `link set ${tmpPeer} netns ${req.netns}`,
      `addr add ${cidr.first}/${cidr.prefixLength} dev ${req.hostIfName}`,
      `link set ${req.hostIfName} up`,
      '',
    ].join('\n'),
  );
  await ip(
    op,
    ['-n', req.netns, '-batch', '-'],
    [
      `link set ${tmpPeer} name ${peerIfName}`,
      `addr add ${cidr.second}/${cidr.prefixLength} dev ${peerIfName}`,
      'link set lo up',
      `link set ${peerIfName} up`,
      `route add default via ${cidr.first} dev ${peerIfName}`,
      '',
    ].join('\n'),
  );
  return {
    hostIfName: req.hostIfName,
    peerIfName,
    hostAddress: cidr.first,
    peerAddress: cidr.second,
    prefixLength: cidr.prefixLength,
  };
}

async function writeIpv6Disabled(op: string, ifName: string): Promise<void> {
  try {
    await writeFile(`/proc/sys/net/ipv6/conf/${ifName}/disable_ipv6`, '1');
  } catch (e) {
    // No IPv6 in this kernel: nothing to disable.
    if (errnoCode(e) === 'ENOENT') return;
    throw new NsinsiderError(`${op}: cannot disable IPv6 on ${ifName}: ${(e as Error).message}`, {
      op,
      kind: 'failed',
      code: errnoCode(e),
      cause: e,
    });
  }
}
