import { z } from 'zod';
import { NsinsiderValidationError } from './errors.js';

/**
 * The contract between the library and the CLI: one argument schema per operation. The library
 * validates before it spawns anything, the CLI validates again (it may be run by hand).
 */

const absolutePath = z
  .string()
  .min(1, 'must not be empty')
  .refine((p) => p.startsWith('/'), 'must be an absolute path')
  .refine((p) => !p.split('/').includes('..'), "must not contain '..'")
  .refine((p) => !p.includes('\0'), 'must not contain NUL');

const pid = z.number().int('must be an integer').positive('must be a positive pid');
const uid = z.number().int().min(0).max(0xfffffffe);

// Linux interface names: at most 15 bytes, no '/', no whitespace.
const ifName = z.string().regex(/^[A-Za-z0-9_.-]{1,15}$/, 'must be 1-15 characters of [A-Za-z0-9_.-]');

/** An IPv4 CIDR with room for two hosts (prefix /1 to /30). */
const ipv4Cidr = z.string().refine((v) => {
  try {
    parseIpv4Cidr(v);
    return true;
  } catch {
    // Deliberate: the refinement's answer; zod reports the field with the message below.
    return false;
  }
}, 'must be an IPv4 CIDR like 10.0.5.0/30 with a prefix of at most /30');

export const opSchemas = {
  'mount-proc': z.strictObject({
    target: absolutePath,
    mask: z.boolean().default(true),
    createTarget: z.boolean().default(true),
  }),
  'mount-sysfs': z.strictObject({
    target: absolutePath,
    readOnly: z.boolean().default(true),
    createTarget: z.boolean().default(true),
  }),
  unmount: z.strictObject({
    target: absolutePath,
    lazy: z.boolean().default(false),
    recursive: z.boolean().default(true),
  }),
  'make-shared': z.strictObject({ target: absolutePath }),
  mknod: z.strictObject({
    path: absolutePath,
    type: z.enum(['char', 'block']),
    major: z.number().int().min(0).max(4095),
    minor: z.number().int().min(0).max(1048575),
    mode: z.number().int().min(0).max(0o7777).default(0o666),
    uid: uid.optional(),
    gid: uid.optional(),
  }),
  'prepare-dev': z.strictObject({ devDir: absolutePath.default('/dev'), uid, gid: uid }),
  'setup-pair-veths': z.strictObject({
    targetPid: pid,
    cidr: ipv4Cidr,
    hostIfName: ifName.default('veth0'),
    peerIfName: ifName.default('eth0'),
    masquerade: z.boolean().default(false),
  }),
  'setup-peer-veth': z.strictObject({ cidr: ipv4Cidr, ifName: ifName.default('eth0') }),
  'enable-ip-forward': z.strictObject({ enabled: z.boolean().default(true) }),
  'disable-ipv6': z.strictObject({}),
  'setup-connection-limit': z.strictObject({
    limitPerMinute: z.number().int().positive().max(1_000_000),
    bucketSize: z.number().int().positive().max(1_000_000),
    enforce: z.boolean().default(true),
  }),
  'remove-connection-limit': z.strictObject({}),
  'connection-limit-stats': z.strictObject({}),
  'dump-network-info': z.strictObject({}),
} as const;

export type OpName = keyof typeof opSchemas;
export const opNames = Object.keys(opSchemas) as OpName[];
export type OpInput<O extends OpName> = z.input<(typeof opSchemas)[O]>;
export type OpArgs<O extends OpName> = z.output<(typeof opSchemas)[O]>;

export function isOpName(name: string): name is OpName {
  return Object.prototype.hasOwnProperty.call(opSchemas, name);
}

/** Validates and defaults an operation's arguments; the error names the first bad field. */
export function parseOpArgs<O extends OpName>(op: O, input: unknown): OpArgs<O> {
  const result = opSchemas[op].safeParse(input);
  if (!result.success) {
    const issue = result.error.issues[0]!;
    const field = issue.path.length > 0 ? issue.path.join('.') : 'args';
    throw new NsinsiderValidationError(op, field, issue.message);
  }
  return result.data as OpArgs<O>;
}

/** Validates a pid on the library side (the CLI never sees it: it goes to nsenter). */
export function assertPid(op: string, field: string, value: unknown): asserts value is number {
  if (!pid.safeParse(value).success) {
    throw new NsinsiderValidationError(op, field, `must be a positive integer pid, got ${JSON.stringify(value)}`);
  }
}

/** The JSON line the CLI prints last on stdout. */
export type CliResult =
  | { ok: true; op: string; result: unknown }
  | { ok: false; op: string; error: { kind: string; code: string; message: string; field?: string } };

/** Exit code of the CLI when the arguments were bad (nothing was changed). */
export const EXIT_USAGE = 2;
/** Exit code of the CLI when the operation failed. */
export const EXIT_FAILED = 1;

export interface Ipv4Cidr {
  /** Network address, dotted. */
  network: string;
  prefixLength: number;
  /** First usable address: the host (outer) side of a veth pair. */
  first: string;
  /** Second usable address: the peer (inner) side. */
  second: string;
}

export function parseIpv4Cidr(value: string): Ipv4Cidr {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\/(\d{1,2})$/.exec(value);
  if (!m) {
    throw new TypeError(`not an IPv4 CIDR: ${value}`);
  }
  const octets = m.slice(1, 5).map(Number);
  const prefixLength = Number(m[5]);
  if (octets.some((o) => o > 255) || prefixLength < 1 || prefixLength > 30) {
    throw new TypeError(`not a usable IPv4 CIDR: ${value}`);
  }
  const addr = octets.reduce((acc, o) => acc * 256 + o, 0);
  const size = 2 ** (32 - prefixLength);
  const network = addr - (addr % size);
  const fmt = (n: number): string => [24, 16, 8, 0].map((s) => Math.floor(n / 2 ** s) % 256).join('.');
  return { network: fmt(network), prefixLength, first: fmt(network + 1), second: fmt(network + 2) };
}
