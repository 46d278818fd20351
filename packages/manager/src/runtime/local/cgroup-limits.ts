import { access, readFile, readdir } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import path from 'node:path';
import type { PluginLogger } from '@workbay/api';
import type { Cgroup, CgroupController, IoDeviceLimit } from '@workbay/nsinsider';
import type { LocalRuntimeConfig } from './config.js';

/**
 * The limits that keep workspaces together from exhausting the node, beyond each class's CPU, memory and pids: the
 * parent cgroup's CPU and pids caps and, on cgroup v1, TCP socket buffer caps for the parent and for each workspace.
 */

/** How a workspace's TCP buffer cap is sized (cgroup v1 only; v2 counts socket buffers in the memory limit). */
export interface TcpMemoryPolicy {
  /** Share of the workspace's memory limit. */
  readonly share: number;
  /** Upper bound, and the cap of a workspace without a memory limit. */
  readonly maxBytes: number;
}

/** Below this a workspace's TCP cap would starve its own few connections. */
const minTcpMemoryBytes = 4 * 1024 * 1024;

/**
 * The TCP buffer cap of a workspace with `memoryBytes` (undefined: no memory limit). The kernel still lets each
 * socket take a segment beyond a full cap (about 64 KiB on loopback) so that no connection stalls for good: the
 * overshoot grows with the number of sockets, which the memory limit bounds (socket structures are charged to it).
 */
export function tcpMemoryLimitFor(policy: TcpMemoryPolicy, memoryBytes: number | undefined): number {
  const wanted = memoryBytes === undefined ? policy.maxBytes : Math.floor(memoryBytes * policy.share);
  return Math.max(minTcpMemoryBytes, Math.min(policy.maxBytes, wanted));
}

/**
 * Creates the workspaces' parent cgroup and caps it: CPU (the node's cores minus the reserve, so that busy loops in
 * every workspace still leave the manager, the daemon and a starting workspace's set-up their share), pids (pid_max
 * minus the reserve, so that a fork bomb in every workspace at once still leaves the node process ids) and, on v1,
 * the TCP buffers of all workspaces together.
 * Returns what each workspace's own limits must follow: the CPU cap, when one was set (cgroup v1 refuses a child
 * quota above its parent's), and the per-workspace TCP policy when v1 can enforce one (v2: memory.max already
 * counts socket buffers; v1 without the control file: said in a warning). A cap that cannot be set is a warning,
 * not a refusal to start: each workspace's own limits still hold.
 */
export async function limitWorkspaceParent(
  controller: CgroupController,
  parentPath: string,
  config: LocalRuntimeConfig,
  logger: PluginLogger,
): Promise<ParentLimits> {
  const parent = controller.cgroup(parentPath);
  await parent.create();
  const limits = config.cgroupLimits;

  const cpuCores = await capCpu(parent, parentPath, limits.cpuReserveCores, logger);
  await capPids(parent, parentPath, limits.pidsReserve, logger);
  const tcpMemory = await capTcpMemory(controller, parent, parentPath, limits, logger);
  return { ...(cpuCores !== undefined ? { cpuCores } : {}), ...(tcpMemory ? { tcpMemory } : {}) };
}

/** What the parent's caps mean for each workspace. */
export interface ParentLimits {
  /** The cores all workspaces together may use: no workspace's CPU limit may exceed it. */
  readonly cpuCores?: number;
  /** cgroup v1: how each workspace's TCP buffers are capped (undefined: v2, or a kernel without the control). */
  readonly tcpMemory?: TcpMemoryPolicy;
}

async function capTcpMemory(
  controller: CgroupController,
  parent: Cgroup,
  parentPath: string,
  limits: LocalRuntimeConfig['cgroupLimits'],
  logger: PluginLogger,
): Promise<TcpMemoryPolicy | undefined> {
  // v2 charges socket buffers to each workspace's memory.max: no TCP limit of its own is needed (or exists).
  if (controller.version !== 'v1') return undefined;
  const tcpFile = path.join(parent.dir('memory'), 'memory.kmem.tcp.limit_in_bytes');
  const hasTcpFile = await access(tcpFile).then(
    () => true,
    () => false,
  );
  if (!hasTcpFile) {
    logger.warn(
      { file: tcpFile },
      'this kernel has no cgroup v1 TCP memory limit: workspace socket buffers are not limited per workspace',
    );
    return undefined;
  }
  const capTotal = async (): Promise<number> => {
    // tcp_mem counts pages; 4 KiB assumed (a kernel with larger pages gets a lower, so stricter, default total).
    const total = limits.tcpMemoryTotalBytes ?? ((await readNumbers('/proc/sys/net/ipv4/tcp_mem'))[0] ?? 0) * 4096;
    await parent.setTcpMemoryLimit(total);
    return total;
  };
  await capTotal()
    .then((bytes) => logger.info({ cgroup: parentPath, bytes }, 'capped the TCP buffers of all workspaces'))
    .catch((error: unknown) =>
      // EBUSY: its workspaces already hold more than that. Deliberate: each workspace's own cap still holds.
      logger.warn({ cgroup: parentPath, err: error }, 'could not cap the TCP buffers of all workspaces'),
    );
  return { share: limits.tcpMemoryShare, maxBytes: limits.tcpMemoryMaxBytes };
}

/** The CFS period of the parent's CPU cap: the kernel's default, so a cap of N cores reads N × 100 ms. */
const cpuPeriodUs = 100_000;

async function capCpu(
  parent: Cgroup,
  parentPath: string,
  configuredReserve: number | undefined,
  logger: PluginLogger,
): Promise<number | undefined> {
  if (configuredReserve === undefined) {
    // Off by default: a quota on all workspaces together throttles every one of them in bursts once they are busy
    // together (CFS bandwidth control), which cost the local runtime's own timing-sensitive specs their margins; the
    // cpu controller's weights already give the manager and the daemon their share beside the workspaces' parent.
    // A cap left by an earlier configuration is lifted.
    await parent.setCpuLimit(null).catch((error: unknown) => logger.warn({ err: error }, 'could not lift a CPU cap'));
    return undefined;
  }
  // The cores this process may run on (its affinity), which are the ones its workspaces inherit.
  const cores = availableParallelism();
  const reserve = configuredReserve;
  const quotaUs = Math.floor((cores - reserve) * cpuPeriodUs);
  if (quotaUs < 1000) {
    // The kernel's smallest quota is 1 ms: a reserve that leaves less is taken as "no cap", said loudly.
    logger.warn({ reserve, cores }, 'cgroupLimits.cpuReserveCores leaves workspaces no CPU: not capped');
    return undefined;
  }
  try {
    await parent.setCpuLimit({ quotaUs, periodUs: cpuPeriodUs });
    logger.info({ cgroup: parentPath, cores, reserve }, 'capped the CPU of all workspaces');
    return quotaUs / cpuPeriodUs;
  } catch (error) {
    // Deliberate: said loudly, and each workspace's own CPU limit still holds.
    logger.warn({ cgroup: parentPath, err: error }, 'could not cap the CPU of all workspaces');
    return undefined;
  }
}

async function capPids(
  parent: Cgroup,
  parentPath: string,
  configuredReserve: number | undefined,
  logger: PluginLogger,
): Promise<void> {
  try {
    const [pidMax = 0] = await readNumbers('/proc/sys/kernel/pid_max');
    const [threadsMax = 0] = await readNumbers('/proc/sys/kernel/threads-max');
    const available = Math.min(pidMax, threadsMax);
    const reserve = configuredReserve ?? Math.floor(available / 4);
    if (reserve >= available) {
      // A cap of nothing would stop every workspace from starting: the operator's reserve is taken as "no cap".
      logger.warn({ reserve, available }, 'cgroupLimits.pidsReserve leaves workspaces no process ids: not capped');
      return;
    }
    const pidsMax = available - reserve;
    await parent.setPidsLimit(pidsMax);
    logger.info({ cgroup: parentPath, pidsMax, reserve }, 'capped the process ids of all workspaces');
  } catch (error) {
    // Deliberate: said loudly, and each workspace's own pids limit still holds.
    logger.warn({ cgroup: parentPath, err: error }, 'could not cap the process ids of all workspaces');
  }
}

/** The whitespace-separated positive integers of a /proc file (at least one). */
async function readNumbers(file: string): Promise<number[]> {
  const numbers = (await readFile(file, 'utf8')).trim().split(/\s+/).map(Number);
  if (numbers.length === 0 || numbers.some((n) => !Number.isSafeInteger(n) || n <= 0)) {
    throw new Error(`unexpected content of ${file}`);
  }
  return numbers;
}

/** Block devices that are no disk of the node's: loop images (the daemon limits a workspace's own), RAM, optical. */
const notNodeDisks = /^(loop|ram|zram|sr|fd|nbd)\d*/;

/**
 * Each workspace's IO limits on the node's disks (`cgroupLimits.io`), one rule per disk in `/sys/block` (whole disks:
 * cgroup v1 throttles whole devices), or undefined when there is nothing to limit (all 0) or no blkio hierarchy (v2,
 * said in a warning: v2's `io.max` is not set yet).
 */
export async function workspaceIoLimits(
  controller: CgroupController,
  config: LocalRuntimeConfig,
  logger: PluginLogger,
  sysBlock = '/sys/block',
): Promise<IoDeviceLimit[] | undefined> {
  const io = config.cgroupLimits.io;
  if (Object.values(io).every((value) => value === 0)) return undefined;
  if (controller.layout.version !== 'v1' || !controller.layout.roots.blkio) {
    logger.warn({}, 'no cgroup v1 blkio hierarchy: workspaces’ disk IO on the node’s disks is not limited');
    return undefined;
  }
  const limits: IoDeviceLimit[] = [];
  for (const name of await readdir(sysBlock)) {
    if (notNodeDisks.test(name)) continue;
    const device = (await readFile(path.join(sysBlock, name, 'dev'), 'utf8').catch(() => '')).trim();
    if (/^\d+:\d+$/.test(device)) limits.push({ device, ...io });
  }
  return limits;
}
