/**
 * The bytes the kernel holds for this process's TCP connections: per connection, its send queue (written, not yet
 * acknowledged by the peer) and its receive queue (arrived, not yet read). Node tells neither; the shedder
 * (shedding.ts) needs them to see which transfers hold the manager's TCP budget, and how much their peers really took,
 * whatever pace they keep. Asked of the kernel over netlink (iproute2's `ss`, which the local runtime needs anyway),
 * for the states with buffers only; `/proc/self/net/tcp` where `ss` is missing.
 *
 * @module
 */
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { isIPv4 } from 'node:net';
import { promisify } from 'node:util';
import { systemToolEnv } from '@workbay/nsinsider';

const execFileAsync = promisify(execFile);

/** `local|remote`, each `address:port` with the address in {@link canonicalAddress}'s form. */
export type ConnectionKey = string;

/** What the kernel holds for one connection. */
export interface SocketQueue {
  /** Bytes written and not yet acknowledged by the peer. */
  readonly send: number;
  /** Bytes arrived and not yet read. */
  readonly receive: number;
  /**
   * The memory the kernel charges for the socket (`ss -m`: received and queued buffers with their overhead, and what
   * it reserved ahead), where known: small segments cost twice their data and more (red team round 19b: a flood's
   * 40-55 MB of data were 98-126 MB of the cap).
   */
  readonly memory?: number;
}

/**
 * One spelling per address: IPv4 dotted as is, IPv6 (also IPv4-mapped, as a dual-stack listener reports it) as eight
 * lower-case groups without leading zeros. Undefined for what is not an address.
 */
export function canonicalAddress(address: string): string | undefined {
  if (isIPv4(address)) return address;
  const lower = address.toLowerCase().replace(/%.*$/, '');
  const dotted = /^(.*:)(\d+\.\d+\.\d+\.\d+)$/.exec(lower);
  let text = lower;
  if (dotted) {
    const bytes = dotted[2]!.split('.').map(Number);
    if (!isIPv4(dotted[2]!)) return undefined;
    text = `${dotted[1]}${((bytes[0]! << 8) | bytes[1]!).toString(16)}:${((bytes[2]! << 8) | bytes[3]!).toString(16)}`;
  }
  const halves = text.split('::');
  if (halves.length > 2) return undefined;
  const head = halves[0] ? halves[0].split(':') : [];
  const tail = halves.length === 2 && halves[1] ? halves[1].split(':') : [];
  const missing = 8 - head.length - tail.length;
  if (halves.length === 1 ? missing !== 0 : missing < 0) return undefined;
  const groups = [...head, ...Array<string>(halves.length === 2 ? missing : 0).fill('0'), ...tail];
  if (!groups.every((g) => /^[0-9a-f]{1,4}$/.test(g))) return undefined;
  return groups.map((g) => parseInt(g, 16).toString(16)).join(':');
}

/** The key of a connection from its two ends' addresses and ports (undefined when one is unknown). */
export function connectionKey(
  localAddress: string | undefined,
  localPort: number | undefined,
  remoteAddress: string | undefined,
  remotePort: number | undefined,
): ConnectionKey | undefined {
  const local = localAddress === undefined ? undefined : canonicalAddress(localAddress);
  const remote = remoteAddress === undefined ? undefined : canonicalAddress(remoteAddress);
  if (!local || !remote || localPort === undefined || remotePort === undefined) return undefined;
  return `${local}:${localPort}|${remote}:${remotePort}`;
}

/** An address of `/proc/net/tcp` (`0100007F:1F90`) or `tcp6` (32 hex digits, four little-endian words) and its port. */
function procEndpoint(field: string): string | undefined {
  const [hex = '', portHex = ''] = field.split(':');
  const port = parseInt(portHex, 16);
  let address: string | undefined;
  if (hex.length === 8) {
    address = [6, 4, 2, 0].map((i) => parseInt(hex.slice(i, i + 2), 16)).join('.');
  } else if (hex.length === 32) {
    const bytes: number[] = [];
    for (let word = 0; word < 4; word++) {
      for (const i of [6, 4, 2, 0]) bytes.push(parseInt(hex.slice(word * 8 + i, word * 8 + i + 2), 16));
    }
    const groups: string[] = [];
    for (let i = 0; i < 16; i += 2) groups.push(((bytes[i]! << 8) | bytes[i + 1]!).toString(16));
    address = groups.join(':');
  }
  return address === undefined || !Number.isFinite(port) ? undefined : `${address}:${port}`;
}

/** States whose sockets hold buffers: established and the closing ones (not TIME_WAIT, LISTEN or CLOSE). */
const statesWithQueues = new Set(['01', '04', '05', '08', '09', '0B']);

/**
 * The queues of each connection in the text of `/proc/net/tcp` or `tcp6` with buffers (established or closing:
 * TIME_WAIT and listeners are left out), and with `localPorts` only those whose local port is one of them. The file
 * lists the node's whole namespace (18b, N4: 45,000 TIME_WAIT entries of the proxy's own port in 40 s, and taking
 * every line apart cost the manager's event loop 87 ms per 10,000), so a line is looked at in place, by its fixed
 * layout (`sl: local remote st tx:rx ...`), and only split when it is one of ours.
 */
export function parseSocketQueues(
  text: string,
  into: Map<ConnectionKey, SocketQueue> = new Map(),
  localPorts?: ReadonlySet<number>,
): Map<ConnectionKey, SocketQueue> {
  for (let start = 0; start < text.length;) {
    const newline = text.indexOf('\n', start);
    const end = newline === -1 ? text.length : newline;
    const lineStart = start;
    start = end + 1;
    // The addresses start after `<sl>: `; both have the same width (IPv4: 13 characters, IPv6: 37). Read in place.
    const colon = text.indexOf(': ', lineStart);
    if (colon === -1 || colon > end) continue;
    const local = colon + 2;
    const width = text.charCodeAt(local + 8) === 58 /* : */ ? 13 : 37;
    if (!statesWithQueues.has(text.slice(local + 2 * width + 2, local + 2 * width + 4))) continue;
    if (localPorts && !localPorts.has(parseInt(text.slice(local + width - 4, local + width), 16))) continue;
    const fields = text.slice(lineStart, end).trim().split(/\s+/);
    const localEnd = procEndpoint(fields[1] ?? '');
    const remoteEnd = procEndpoint(fields[2] ?? '');
    const [tx = '', rx = ''] = (fields[4] ?? '').split(':');
    const send = parseInt(tx, 16);
    const receive = parseInt(rx, 16);
    if (!localEnd || !remoteEnd || !Number.isFinite(send) || !Number.isFinite(receive)) continue;
    into.set(`${localEnd}|${remoteEnd}`, { send, receive });
  }
  return into;
}

/** `ss`'s names of {@link statesWithQueues}. */
const ssStatesWithQueues = ['established', 'fin-wait-1', 'fin-wait-2', 'close-wait', 'last-ack', 'closing'];

/** `address:port` as `ss -n` prints it (`127.0.0.1:80`, `[::ffff:127.0.0.1]:80`, `[fe80::1%eth0]:80`), canonical. */
function ssEndpoint(field: string): string | undefined {
  const colon = field.lastIndexOf(':');
  if (colon === -1) return undefined;
  const port = Number(field.slice(colon + 1));
  const address = canonicalAddress(field.slice(0, colon).replace(/^\[(.*)\]$/, '$1'));
  return address === undefined || !Number.isInteger(port) ? undefined : `${address}:${port}`;
}

/** `skmem:(r…,rb…,t…,tb…,f…,w…,…)`: received (r), queued to send (w) and reserved (f) bytes, as the kernel charges them. */
function skmemCharge(line: string): number | undefined {
  const fields = /skmem:\(([^)]*)\)/.exec(line)?.[1];
  if (fields === undefined) return undefined;
  const value = (name: string): number => Number(new RegExp(`(?:^|,)${name}(\\d+)`).exec(fields)?.[1] ?? 0);
  return value('r') + value('w') + value('f');
}

/**
 * The queues of each connection in the output of `ss -tnHm state …` with several states (`State Recv-Q Send-Q Local
 * Peer`, then its `skmem:(…)` on a line of its own), with `localPorts` only those whose local port is one of them.
 */
export function parseSsQueues(
  text: string,
  into: Map<ConnectionKey, SocketQueue> = new Map(),
  localPorts?: ReadonlySet<number>,
): Map<ConnectionKey, SocketQueue> {
  let last: { key: ConnectionKey; queue: SocketQueue } | undefined;
  for (const line of text.split('\n')) {
    if (/^\s/.test(line)) {
      // The memory line of the connection above.
      const memory = last && skmemCharge(line);
      if (last && memory !== undefined) into.set(last.key, { ...last.queue, memory });
      last = undefined;
      continue;
    }
    last = undefined;
    const [, rx = '', tx = '', local = '', remote = ''] = line.trim().split(/\s+/);
    if (localPorts && !localPorts.has(Number(local.slice(local.lastIndexOf(':') + 1)))) continue;
    const localEnd = ssEndpoint(local);
    const remoteEnd = ssEndpoint(remote);
    const send = Number(tx);
    const receive = Number(rx);
    if (!localEnd || !remoteEnd || !Number.isInteger(send) || !Number.isInteger(receive)) continue;
    last = { key: `${localEnd}|${remoteEnd}`, queue: { send, receive } };
    into.set(last.key, last.queue);
  }
  return into;
}

/** Set once `ss` could not be run: `/proc` from then on. */
let ssMissing = false;

/**
 * The kernel's queues of the TCP connections in this process's network namespace (those with a local port in
 * `localPorts`, when given). Over netlink (`ss`) the kernel skips the states without buffers before it formats
 * anything; `/proc/net/tcp` formats every line of the namespace, TIME_WAIT too (red team round 18b, N4: 50,000-73,000
 * TIME_WAIT entries cost 450-595 ms a read, even idle).
 */
export async function readSocketQueues(localPorts?: ReadonlySet<number>): Promise<Map<ConnectionKey, SocketQueue>> {
  if (!ssMissing) {
    const queues = await readSsSocketQueues(localPorts);
    if (queues) return queues;
    ssMissing = true;
  }
  return readProcSocketQueues(localPorts);
}

/** {@link readSocketQueues} through `ss`; undefined when it is not installed. */
export async function readSsSocketQueues(
  localPorts?: ReadonlySet<number>,
): Promise<Map<ConnectionKey, SocketQueue> | undefined> {
  try {
    const args = ['-tnHm', ...ssStatesWithQueues.flatMap((state) => ['state', state])];
    // Looked up in the system's directories only: this runs as root every second (red team round 19).
    const { stdout } = await execFileAsync('ss', args, { maxBuffer: 256 * 1024 * 1024, env: systemToolEnv });
    return parseSsQueues(stdout, new Map(), localPorts);
  } catch (error) {
    // Only a missing `ss` is an answer; anything else is the tick's failure (the shedder retries at the next).
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw error;
  }
}

/** {@link readSocketQueues} from `/proc/self/net/tcp` and `tcp6`. */
export async function readProcSocketQueues(localPorts?: ReadonlySet<number>): Promise<Map<ConnectionKey, SocketQueue>> {
  const queues = new Map<ConnectionKey, SocketQueue>();
  for (const file of ['/proc/self/net/tcp', '/proc/self/net/tcp6']) {
    // A kernel without IPv6 has no tcp6: nothing to add from it.
    const text = await readFile(file, 'utf8').catch(() => '');
    parseSocketQueues(text, queues, localPorts);
  }
  return queues;
}

/**
 * What the node's TCP sockets hold together, in bytes: `/proc/net/sockstat`'s `TCP: … mem <pages>`, the counter the
 * kernel checks against `net.ipv4.tcp_mem` (one for the whole node, whatever the namespace). Pages of 4 KiB, as
 * `tcp_mem` counts them on the machines Workbay runs on (x86-64, arm64 with 4 KiB pages). Each CPU keeps up to 1 MiB
 * of charges to itself before they reach this count (SK_MEMORY_PCPU_RESERVE), so it can be off by that much a CPU.
 */
export async function readNodeTcpBytes(): Promise<number> {
  const text = await readFile('/proc/net/sockstat', 'utf8');
  const pages = /^TCP:.*\bmem (\d+)/m.exec(text)?.[1];
  if (pages === undefined) throw new Error('/proc/net/sockstat has no TCP memory line');
  return Number(pages) * 4096;
}
