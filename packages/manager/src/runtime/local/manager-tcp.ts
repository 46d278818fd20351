/**
 * cgroup v1: the manager's own TCP buffers, capped. The port proxy holds two sockets per proxied connection in the
 * host's namespace, outside every workspace's cgroup, and the kernel sizes their buffers for throughput: a client
 * that does not read an 8 MB answer left about 10 MB of the node's TCP memory with the manager (the answer's rest in
 * the socket to the workspace, more in the socket to the client), and 60 such connections from one address took 591
 * MB; about 150 would have passed the node's pressure mark, past which every service's sockets are squeezed (red team
 * round 17, L4). Node cannot size a TCP socket's buffers, but v1 can cap what a cgroup's sockets hold together: the
 * manager's process moves into a cgroup of its own whose `memory.kmem.tcp.limit_in_bytes` is a share of what the
 * node's `tcp_mem` leaves above the workspaces'. Past it the manager's connections slow down, not the node's.
 *
 * v2 counts socket memory against `memory.max`, which would also bound the manager's heap (and OOM-kill it): not
 * done there; the proxy keeps its connections within the same budget by itself instead (`proxy/shedding.ts`). Sockets made before the move (the listeners, the daemon client) stay uncharged; every accepted or
 * dialled connection after it is charged. The daemon `up` started goes into the same cgroup: one it restarts later is
 * born there anyway.
 *
 * @module
 */
import { readdir, readFile, rmdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { PluginLogger } from '@workbay/api';
import type { CgroupController } from '@workbay/nsinsider';
import { ownCgroupPath } from '@workbay/nsinsider';

/**
 * The manager's cgroup is `workbay-manager-<runtime tag>`, beside the workspaces' parent (below the cgroup the manager
 * started in): each runtime on a node (its state directory) has its own cap.
 */
export const managerCgroupName = 'workbay-manager';

/** Below this the manager's own gRPC and proxy traffic would crawl. */
const minManagerTcpBytes = 16 * 1024 * 1024;

/**
 * The manager's TCP buffer cap for a node whose `net.ipv4.tcp_mem` is `tcpMem` (pages of 4 KiB): half of what lies
 * between the workspaces' total (`tcp_mem[0]`, see cgroup-limits.ts) and the pressure mark (`tcp_mem[1]`), so that
 * workspaces and manager together stay below it; at least 16 MiB.
 */
export function managerTcpBytesFor(tcpMem: readonly number[]): number {
  const [low = 0, pressure = 0] = tcpMem;
  return Math.max(minManagerTcpBytes, Math.floor(((pressure - low) * 4096) / 2));
}

/**
 * Moves process `pid` into the memory cgroup `cgroupPath` (created if missing), whose TCP buffers are capped at
 * `bytes` first (v1 charges a socket only to a cgroup whose cap was set before the socket was made). Only the
 * memory hierarchy: the process keeps its place for CPU and pids.
 */
export async function confineTcpMemory(
  controller: CgroupController,
  cgroupPath: string,
  pid: number,
  bytes: number,
): Promise<void> {
  const cg = controller.cgroup(cgroupPath);
  await cg.create();
  await cg.setTcpMemoryLimit(bytes);
  await writeFile(path.join(cg.dir('memory'), 'cgroup.procs'), String(pid));
}

/** The manager's TCP budget: its size and, once capped, how much of the cap is in use. */
export interface ManagerTcpBudget {
  readonly bytes: number;
  /**
   * The share in use (`memory.kmem.tcp.usage_in_bytes` over the cap); undefined where the kernel could not cap it
   * (cgroup v2, no cgroups, a failed move): the proxy then weighs its own connections against `bytes`.
   */
  readonly pressure?: () => Promise<number>;
}

/**
 * Caps the TCP buffers of this process (the manager), with `alsoPids` (its daemon), when the runtime has cgroup v1 with
 * the TCP control: `bytes` from the config, or {@link managerTcpBytesFor} the node. Returns the budget, undefined only
 * when 0 is configured; without a cap (v2, no cgroups, a failure: said in the log) the budget has no `pressure`, and
 * the proxy keeps its connections within it by itself (`proxy/shedding.ts`). A failure is a warning, not a refusal to
 * run: the cap is a bound on what attackers can make the node hold, the proxy's other limits still apply.
 */
export async function confineManagerTcp(
  controller: CgroupController | undefined,
  tag: string,
  configuredBytes: number | undefined,
  logger: PluginLogger,
  alsoPids: readonly number[] = [],
): Promise<ManagerTcpBudget | undefined> {
  if (configuredBytes === 0) return undefined;
  const bytes =
    configuredBytes ??
    managerTcpBytesFor(
      (await readFile('/proc/sys/net/ipv4/tcp_mem', 'utf8').catch(() => '')).trim().split(/\s+/).map(Number),
    );
  if (controller?.version !== 'v1') {
    logger.info(
      { bytes },
      'the manager’s TCP buffers are not capped (cgroup v1 only); the proxy keeps within the budget',
    );
    return { bytes };
  }
  try {
    const own = await ownCgroupPath(controller.layout);
    await removeLeftManagerCgroups(controller, own);
    const cgroupPath = path.posix.join(own, `${managerCgroupName}-${tag}`);
    await confineTcpMemory(controller, cgroupPath, process.pid, bytes);
    const procs = path.join(controller.cgroup(cgroupPath).dir('memory'), 'cgroup.procs');
    for (const pid of alsoPids) {
      // Deliberate: a daemon that exited meanwhile is restarted by the manager, inside this cgroup.
      await writeFile(procs, String(pid)).catch((error: unknown) =>
        logger.warn({ pid, err: error }, 'could not move a process under the manager’s TCP cap'),
      );
    }
    logger.info({ cgroup: cgroupPath, bytes, with: alsoPids }, 'capped the manager’s TCP buffers');
    const usage = path.join(controller.cgroup(cgroupPath).dir('memory'), 'memory.kmem.tcp.usage_in_bytes');
    return { bytes, pressure: async () => Number((await readFile(usage, 'utf8')).trim()) / bytes };
  } catch (error) {
    // Deliberate: see above; said loudly.
    logger.warn({ err: error, bytes }, 'could not cap the manager’s TCP buffers; the proxy keeps within the budget');
    return { bytes };
  }
}

/**
 * Removes the empty manager cgroups below `own` that earlier managers left (a manager's cgroup outlives its process);
 * one with a live process is busy and stays.
 */
async function removeLeftManagerCgroups(controller: CgroupController, own: string): Promise<void> {
  const names = await readdir(controller.cgroup(own).dir('memory')).catch(() => [] as string[]);
  for (const name of names) {
    if (!name.startsWith(`${managerCgroupName}-`)) continue;
    // Deliberate: EBUSY is a live manager's; anything else leaves an empty directory, which costs nothing.
    await rmdir(path.join(controller.cgroup(path.posix.join(own, name)).dir('memory'))).catch(() => undefined);
  }
}
