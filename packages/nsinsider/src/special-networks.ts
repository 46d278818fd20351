/**
 * Address space that is not the internet: the one table behind every "public addresses only" rule of Workbay (the
 * daemon's outbound requests, the local runtime's host firewall, the Kubernetes runtime's egress policy). Behind a
 * node these addresses are its neighbours (other nodes' daemons and managers, databases, the cloud's internal
 * services) or no host at all; none of them is a public internet host a workspace or a URL it chose may reach.
 */

/** Why an address is refused by default, as error messages name it. */
export type SpecialNetworkKind =
  | 'loopback'
  | 'unspecified'
  | 'link-local'
  | 'private'
  | 'CGNAT'
  | 'unique-local'
  | 'multicast'
  | 'reserved'
  | 'documentation';

/** A special-purpose network (IANA's registries) and the kind an error names it by. */
export interface SpecialNetwork {
  readonly network: string;
  readonly kind: SpecialNetworkKind;
}

/**
 * The special-purpose ranges, in the order a lookup names them (the first match wins: `::1/128` before `::/96`). The
 * documentation and benchmarking ranges are here too: nothing public lives there, and a node's own network may (red
 * team round 13b: this project's machines sit in 192.0.2.0/24, and a workspace reached their gateway).
 */
export const specialPurposeNetworks: readonly SpecialNetwork[] = [
  { network: '0.0.0.0/8', kind: 'unspecified' }, // "this network", includes 0.0.0.0 (Linux connects it to loopback)
  { network: '10.0.0.0/8', kind: 'private' },
  { network: '100.64.0.0/10', kind: 'CGNAT' }, // provider-internal
  { network: '127.0.0.0/8', kind: 'loopback' },
  { network: '169.254.0.0/16', kind: 'link-local' }, // includes the cloud metadata service
  { network: '172.16.0.0/12', kind: 'private' },
  { network: '192.0.0.0/24', kind: 'reserved' }, // IETF protocol assignments
  { network: '192.0.2.0/24', kind: 'documentation' },
  { network: '192.168.0.0/16', kind: 'private' },
  { network: '198.18.0.0/15', kind: 'reserved' }, // benchmarking; some clouds number internal networks from it
  { network: '198.51.100.0/24', kind: 'documentation' },
  { network: '203.0.113.0/24', kind: 'documentation' },
  { network: '224.0.0.0/4', kind: 'multicast' },
  { network: '240.0.0.0/4', kind: 'reserved' }, // includes the broadcast address
  { network: '::1/128', kind: 'loopback' },
  { network: '::/96', kind: 'unspecified' }, // unspecified and the deprecated IPv4-compatible form
  { network: '100::/64', kind: 'reserved' }, // discard
  { network: '64:ff9b:1::/48', kind: 'reserved' }, // local-use NAT64 (RFC 8215): to whatever IPv4 the operator chose
  { network: '2001::/23', kind: 'reserved' }, // IETF protocol assignments: Teredo (2001::/32) embeds an IPv4
  { network: '2001:db8::/32', kind: 'documentation' },
  { network: 'fc00::/7', kind: 'unique-local' },
  { network: 'fe80::/10', kind: 'link-local' },
  { network: 'fec0::/10', kind: 'private' }, // old site-local
  { network: 'ff00::/8', kind: 'multicast' },
];

const ipv4Ranges = specialPurposeNetworks.filter((n) => !n.network.includes(':')).map((n) => n.network);

/**
 * An IPv4 range as the IPv6 range that embeds it behind `prefix` (96 bits of it): `10.0.0.0/8` behind NAT64's
 * `64:ff9b::/96` is `64:ff9b::a00:0/104`.
 */
function embedIpv4(prefix: readonly number[], range: string): string {
  const [address = '', bits = '32'] = range.split('/');
  const [a = 0, b = 0, c = 0, d = 0] = address.split('.').map(Number);
  return `${canonicalIpv6([...prefix, (a << 8) | b, (c << 8) | d])}/${96 + Number(bits)}`;
}

/** Eight 16-bit groups in RFC 5952's form (the longest run of two or more zero groups as `::`), as Kubernetes wants it. */
function canonicalIpv6(groups: readonly number[]): string {
  let best = { at: -1, length: 1 };
  for (let at = 0; at < groups.length; at++) {
    let length = 0;
    while (groups[at + length] === 0) length++;
    if (length > best.length) best = { at, length };
  }
  const hex = (part: readonly number[]): string => part.map((g) => g.toString(16)).join(':');
  if (best.at === -1) return hex(groups);
  return `${hex(groups.slice(0, best.at))}::${hex(groups.slice(best.at + best.length))}`;
}

/**
 * {@link specialPurposeNetworks} per family, as a packet filter matches them, and the IPv6 forms that reach an IPv4
 * range of it: IPv4-mapped and -translated addresses (never on a wire: dropped whole), 6to4 (deprecated: whole), and
 * NAT64's well-known prefix embedding a non-public IPv4 (a NAT64 gateway would translate it; the prefix with public
 * IPv4 inside is how an IPv6-only node reaches the IPv4 internet, so that stays).
 */
export const nonPublicNetworks: { readonly ipv4: readonly string[]; readonly ipv6: readonly string[] } = {
  ipv4: ipv4Ranges,
  ipv6: [
    ...specialPurposeNetworks.filter((n) => n.network.includes(':')).map((n) => n.network),
    '::ffff:0:0/96',
    '::ffff:0:0:0/96',
    '2002::/16',
    ...ipv4Ranges.map((range) => embedIpv4([0x64, 0xff9b, 0, 0, 0, 0], range)),
  ],
};
