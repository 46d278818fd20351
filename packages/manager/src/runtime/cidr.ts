/**
 * CIDR checks of network settings (the Kubernetes NetworkPolicies, the local runtime's egress). The API server
 * refuses an `ipBlock` whose CIDR has host bits set (`10.0.0.1/8`), and refuses it only when the runtime starts:
 * the config is checked up front instead, so that the error names the config key.
 *
 * @module
 */
import { isIPv4, isIPv6 } from 'node:net';

export interface Cidr {
  readonly family: 4 | 6;
  readonly prefix: number;
  /** The address as bytes (4 or 16). */
  readonly bytes: readonly number[];
}

/** Parses `a.b.c.d/n` or `x:y::z/n`; undefined when it is neither. */
export function parseCidr(text: string): Cidr | undefined {
  const slash = text.indexOf('/');
  if (slash < 0) return undefined;
  const address = text.slice(0, slash);
  const prefixText = text.slice(slash + 1);
  if (!/^\d{1,3}$/.test(prefixText)) return undefined;
  const prefix = Number(prefixText);
  if (isIPv4(address)) return prefix <= 32 ? { family: 4, prefix, bytes: address.split('.').map(Number) } : undefined;
  // Zone ids (`fe80::1%eth0`) and embedded IPv4 (`::ffff:1.2.3.4`) are not CIDR syntax the API server takes.
  if (!isIPv6(address) || address.includes('%') || address.includes('.')) return undefined;
  return prefix <= 128 ? { family: 6, prefix, bytes: ipv6Bytes(address) } : undefined;
}

function ipv6Bytes(address: string): number[] {
  const [head = '', tail] = address.split('::');
  const groups = (part: string): number[] => (part === '' ? [] : part.split(':').map((g) => parseInt(g, 16)));
  const front = groups(head);
  const back = tail === undefined ? [] : groups(tail);
  const all = [...front, ...new Array<number>(8 - front.length - back.length).fill(0), ...back];
  return all.flatMap((g) => [g >> 8, g & 0xff]);
}

/** Whether the CIDR names a network: no bit is set past its prefix. */
export function isNetworkAligned(cidr: Cidr): boolean {
  return cidr.bytes.every((byte, i) => {
    const keep = Math.max(0, Math.min(8, cidr.prefix - i * 8));
    return (byte & (0xff >> keep)) === 0;
  });
}

/** Why `text` cannot be an `ipBlock` CIDR, or undefined when it can. */
export function cidrProblem(text: string): string | undefined {
  const cidr = parseCidr(text);
  if (!cidr) return 'must be an IPv4 or IPv6 CIDR such as 10.1.2.0/24 or 2001:db8::/32';
  if (!isNetworkAligned(cidr)) return 'must be a network address (no bits set after the prefix)';
  return undefined;
}
