/**
 * Which addresses the daemon's own outbound connections for a workspace (download initializer files, one-time git
 * secrets, network git through its egress proxy) may go to. The daemon sits inside the node's network: a URL chosen
 * by a requester, or by repository content (`.gitmodules`), must not reach the node's loopback services (the
 * daemon's metrics, a local agent), the node's own addresses (its services bound to every interface), the cloud
 * metadata service (169.254.169.254) or the private network, unless the
 * operator allows it (`initializer.download` and `git` in the daemon config). One policy, one set of ranges, for
 * every caller.
 */
import { lookup as systemLookup } from 'node:dns';
import type { LookupAddress } from 'node:dns';
import { BlockList, isIP } from 'node:net';
import { networkInterfaces } from 'node:os';
import { readFileSync } from 'node:fs';
import type { SpecialNetworkKind } from '@workbay/nsinsider';
import { specialPurposeNetworks } from '@workbay/nsinsider';
import type { UpstreamProxy } from './upstream-proxy.js';

/**
 * The operator's address rules for one kind of outbound connection (`initializer.download`, `git` in the daemon
 * config); the defaults refuse every non-public address.
 */
export interface AddressRules {
  /** Allow every address, loopback and private ones included (single-user setups, tests). */
  readonly allowPrivateAddresses?: boolean;
  /** Networks (`10.1.0.0/16`, `fd00::/8`, or a single address) allowed although refused by default. */
  readonly allowedNetworks?: readonly string[];
  /** Resolves a host name to every address (default: the system resolver). A test seam. */
  readonly resolve?: (hostname: string) => Promise<LookupAddress[]>;
}

/** The operator's rules for outbound initializer requests (the `initializer.download` config section). */
export interface DownloadPolicy extends AddressRules {
  /** Reach the allowed addresses through this forward proxy (config `initializer.download.upstreamProxy`). */
  readonly upstreamProxy?: UpstreamProxy;
  /** Largest download in bytes; larger responses are refused. */
  readonly maxSize?: number;
  /** Redirects followed per request; each hop is checked like the first. */
  readonly maxRedirects?: number;
}

export const downloadPolicyDefaults = {
  allowPrivateAddresses: false,
  allowedNetworks: [] as readonly string[],
  maxSize: 2 * 1024 ** 3,
  maxRedirects: 5,
} as const;

export interface ParsedNetwork {
  readonly address: string;
  readonly prefix: number;
  readonly family: 'ipv4' | 'ipv6';
}

/** Parses `address` or `address/prefix`; throws an Error whose message says what is wrong. */
export function parseNetwork(text: string): ParsedNetwork {
  const slash = text.indexOf('/');
  const address = slash === -1 ? text : text.slice(0, slash);
  const version = isIP(address);
  if (version === 0) throw new Error(`${JSON.stringify(text)} is not an IP address or CIDR network`);
  const family = version === 4 ? 'ipv4' : 'ipv6';
  const bits = version === 4 ? 32 : 128;
  if (slash === -1) return { address, prefix: bits, family };
  const prefixText = text.slice(slash + 1);
  const prefix = Number(prefixText);
  if (!/^\d{1,3}$/.test(prefixText) || prefix > bits)
    throw new Error(`${JSON.stringify(text)} has an invalid prefix length (0-${bits})`);
  return { address, prefix, family };
}

/** Why an address is refused by default, as error messages name it (`node`: one of this node's own). */
export type RefusedAddressKind = SpecialNetworkKind | 'node';

/** How long the node's own addresses are taken as read (interfaces come and go: workspace veths, a DHCP lease). */
const nodeAddressesTtlMs = 1_000;
let nodeAddressCache: { readonly at: number; readonly list: BlockList } | undefined;

/**
 * The addresses the kernel delivers locally: the local routes of IPv4 (`/proc/net/fib_trie`, prefixes such as
 * 127.0.0.0/8 included) and every IPv6 address (`/proc/net/if_inet6`), whatever state their link is in. Node's own
 * list of interfaces leaves out links without a carrier, whose addresses still answer. Without /proc (not Linux):
 * that list.
 */
function readNodeAddresses(): BlockList {
  const list = new BlockList();
  try {
    let leaf: string | undefined;
    for (const line of readFileSync('/proc/net/fib_trie', 'utf8').split('\n')) {
      const address = /\|-- (\d+\.\d+\.\d+\.\d+)$/.exec(line);
      if (address) leaf = address[1];
      const local = /^\s+\/(\d+) host LOCAL$/.exec(line);
      if (local && leaf) list.addSubnet(leaf, Number(local[1]), 'ipv4');
    }
    for (const line of readFileSync('/proc/net/if_inet6', 'utf8').split('\n')) {
      const hex = line.slice(0, 32);
      if (/^[0-9a-f]{32}$/.test(hex)) list.addAddress(hex.replace(/(.{4})(?!$)/g, '$1:'), 'ipv6');
    }
  } catch {
    // Deliberate: no /proc here (not Linux); the interfaces Node lists are the next best answer.
    for (const entries of Object.values(networkInterfaces()))
      for (const entry of entries ?? [])
        list.addAddress(entry.address.split('%')[0]!, entry.family === 'IPv4' ? 'ipv4' : 'ipv6');
  }
  return list;
}

/**
 * Whether `address` is one of this node's own: a service bound to every interface (sshd, the kubelet, a node
 * exporter, a container API) answers there, on a public address too. Workspaces never reach the node (the host
 * firewall); the daemon's requests for them must not either. Red team round 15 (G6): a download URL and a git remote
 * at the node's public address sent chosen GETs to a node service, and the answers told open ports from closed ones.
 */
export function isNodeAddress(address: string): boolean {
  const plain = address.split('%')[0]!;
  const version = isIP(plain);
  if (version === 0) return false;
  const now = Date.now();
  if (!nodeAddressCache || now - nodeAddressCache.at > nodeAddressesTtlMs)
    nodeAddressCache = { at: now, list: readNodeAddresses() };
  return nodeAddressCache.list.check(plain, version === 4 ? 'ipv4' : 'ipv6');
}

const refused = new BlockList();
// Special-purpose ranges (the one table, in @workbay/nsinsider): none of them is a public internet host a download or
// a git remote may be.
const refusedByKind = specialPurposeNetworks.map(({ network, kind }) => {
  const { address, prefix, family } = parseNetwork(network);
  refused.addSubnet(address, prefix, family);
  const one = new BlockList();
  one.addSubnet(address, prefix, family);
  return { kind, list: one, family };
});

/** The 8 16-bit groups of an IPv6 address (`isIP(text) === 6` must hold). */
function ipv6Groups(text: string): number[] {
  // A dotted IPv4 tail (`::ffff:127.0.0.1`) is two groups written differently.
  const body = text
    .split('%')[0]!
    .toLowerCase()
    .replace(/(\d+)\.(\d+)\.(\d+)\.(\d+)$/, (_m, a: string, b: string, c: string, d: string) => {
      const hex = (x: string, y: string): string => ((Number(x) << 8) | Number(y)).toString(16);
      return `${hex(a, b)}:${hex(c, d)}`;
    });
  const parse = (part: string): number[] => (part === '' ? [] : part.split(':').map((g) => parseInt(g, 16)));
  const [head = '', rest] = body.split('::') as [string, string | undefined];
  const left = parse(head);
  const right = rest === undefined ? [] : parse(rest);
  return [...left, ...new Array<number>(8 - left.length - right.length).fill(0), ...right];
}

/**
 * The IPv4 address an IPv6 address stands for, where one is embedded and the network routes to it: IPv4-mapped
 * (`::ffff:a.b.c.d`), IPv4-translated (`::ffff:0:a.b.c.d`, SIIT), NAT64 (`64:ff9b::/96`) and 6to4 (`2002::/16`).
 * `::ffff:127.0.0.1` is loopback.
 */
export function embeddedIpv4(address: string): string | undefined {
  if (isIP(address) !== 6) return undefined;
  const g = ipv6Groups(address);
  const v4 = (high: number, low: number): string => `${high >> 8}.${high & 0xff}.${low >> 8}.${low & 0xff}`;
  if (g.slice(0, 5).every((x) => x === 0) && g[5] === 0xffff) return v4(g[6]!, g[7]!);
  if (g.slice(0, 4).every((x) => x === 0) && g[4] === 0xffff && g[5] === 0) return v4(g[6]!, g[7]!);
  if (g[0] === 0x64 && g[1] === 0xff9b && g.slice(2, 6).every((x) => x === 0)) return v4(g[6]!, g[7]!);
  if (g[0] === 0x2002) return v4(g[1]!, g[2]!);
  return undefined;
}

/** Decides whether an outbound connection (download, one-time secret, network git) may go to an address. */
export class AddressPolicy {
  private readonly allowAll: boolean;
  private readonly allowed = new BlockList();

  constructor(policy: AddressRules = {}) {
    this.allowAll = policy.allowPrivateAddresses ?? downloadPolicyDefaults.allowPrivateAddresses;
    for (const network of policy.allowedNetworks ?? []) {
      const { address, prefix, family } = parseNetwork(network);
      this.allowed.addSubnet(address, prefix, family);
    }
  }

  /** True when a connection to `address` (an IP literal; anything else is refused) is allowed. */
  allows(address: string): boolean {
    const version = isIP(address);
    if (version === 0) return false;
    if (this.allowAll) return true;
    const family = version === 4 ? 'ipv4' : 'ipv6';
    const embedded = embeddedIpv4(address);
    if (this.allowed.check(address, family) || (embedded && this.allowed.check(embedded, 'ipv4'))) return true;
    if (isNodeAddress(address) || (embedded !== undefined && isNodeAddress(embedded))) return false;
    return !refused.check(address, family) && !(embedded && refused.check(embedded, 'ipv4'));
  }

  /**
   * Why a connection to `address` is refused (for the error that says so), or undefined when it is allowed. An
   * IPv6 form embedding an IPv4 address (`::ffff:127.0.0.1`) is named by what it embeds.
   */
  refusal(address: string): RefusedAddressKind | 'not an IP address' | undefined {
    if (this.allows(address)) return undefined;
    const version = isIP(address);
    if (version === 0) return 'not an IP address';
    const embedded = embeddedIpv4(address);
    const [checked, family] = embedded ? [embedded, 'ipv4'] : [address, version === 4 ? 'ipv4' : 'ipv6'];
    const special = refusedByKind.find((r) => r.family === family && r.list.check(checked, family))?.kind;
    return special ?? (isNodeAddress(checked) ? 'node' : 'reserved');
  }
}

/** A name's addresses split by the policy: the allowed ones in the resolver's order, and the refused ones. */
export interface ResolvedAddresses {
  readonly allowed: readonly LookupAddress[];
  readonly refused: ReadonlyArray<{ readonly address: string; readonly kind: string }>;
}

/**
 * Resolves `hostname` once (an IP literal is not resolved) and splits the answer by `policy`. Callers connect only
 * to an address from `allowed`, never to the name: a second resolution (DNS rebinding: public when checked,
 * 127.0.0.1 when connecting) would not be checked.
 */
export async function resolveChecked(
  hostname: string,
  policy: AddressPolicy,
  resolve: AddressRules['resolve'],
  family = 0,
): Promise<ResolvedAddresses> {
  const addresses: LookupAddress[] =
    isIP(hostname) !== 0
      ? [{ address: hostname, family: isIP(hostname) }]
      : resolve
        ? await resolve(hostname)
        : await new Promise((done, fail) =>
            systemLookup(hostname, { all: true, family }, (error, found) => (error ? fail(error) : done(found))),
          );
  const allowed: LookupAddress[] = [];
  const refusedOnes: Array<{ address: string; kind: string }> = [];
  for (const entry of addresses) {
    const kind = policy.refusal(entry.address);
    if (kind === undefined) allowed.push(entry);
    else refusedOnes.push({ address: entry.address, kind });
  }
  return { allowed, refused: refusedOnes };
}
