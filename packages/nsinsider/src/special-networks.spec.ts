import { BlockList, isIPv4, isIPv6 } from 'node:net';
import { describe, expect, it } from 'vitest';
import { nonPublicNetworks, specialPurposeNetworks } from './special-networks.js';

/** Whether the packet-filter list of `address`'s family covers it (as nft matches: one family per rule). */
function blocked(address: string): boolean {
  // One list per family: Node's BlockList also matches an IPv4 address against IPv4-mapped IPv6 subnets.
  const family = isIPv4(address) ? 'ipv4' : 'ipv6';
  const list = new BlockList();
  for (const network of nonPublicNetworks[family]) {
    const [base = '', bits] = network.split('/');
    list.addSubnet(base, Number(bits), family);
  }
  return list.check(address, family);
}

describe('nonPublicNetworks', () => {
  it('are well-formed CIDRs, IPv6 ones in the canonical form Kubernetes keeps', () => {
    for (const network of [...nonPublicNetworks.ipv4, ...nonPublicNetworks.ipv6]) {
      const [base = '', bits] = network.split('/');
      expect(isIPv4(base) || isIPv6(base), network).toBe(true);
      expect(Number(bits)).toBeLessThanOrEqual(isIPv4(base) ? 32 : 128);
      // The WHATWG URL serializer writes IPv6 in RFC 5952's form.
      if (isIPv6(base)) expect(`[${base}]`).toBe(new URL(`http://[${base}]/`).hostname);
    }
    expect(nonPublicNetworks.ipv4).toEqual(
      specialPurposeNetworks.filter((n) => !n.network.includes(':')).map((n) => n.network),
    );
  });

  it('cover the node-side ranges red team round 13b reached or named: documentation, benchmarking, embedded IPv4', () => {
    // The project's machines sit in 192.0.2.0/24; some clouds number internal networks from 198.18.0.0/15.
    for (const address of ['192.0.2.1', '198.18.0.1', '198.19.255.254', '198.51.100.7', '203.0.113.9', '192.0.0.8'])
      expect(blocked(address), address).toBe(true);
    // IPv4-mapped and -translated forms never go on a wire; 6to4 is retired; NAT64 to a non-public IPv4.
    for (const address of ['::ffff:10.0.0.1', '::ffff:0:8.8.8.8', '2002:0a00:0001::1', '64:ff9b::10.1.2.3'])
      expect(blocked(address), address).toBe(true);
    for (const address of ['64:ff9b::169.254.169.254', '64:ff9b::192.168.1.1', '64:ff9b:1::8.8.8.8', '2001:db8::1'])
      expect(blocked(address), address).toBe(true);
  });

  it('leave the internet alone, NAT64 to public IPv4 included (how an IPv6-only node reaches IPv4 hosts)', () => {
    for (const address of ['8.8.8.8', '1.1.1.1', '192.88.99.2', '100.63.255.255', '100.128.0.0', '2606:4700::1111'])
      expect(blocked(address), address).toBe(false);
    expect(blocked('64:ff9b::8.8.8.8')).toBe(false);
    expect(blocked('64:ff9b::198.20.0.1')).toBe(false);
  });
});
