import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { CgroupLayout, V1Controller } from './cgroup-layout.js';
import { cgroupDir, cgroupOp } from './cgroup-layout.js';
import { CgroupError } from './errors.js';

/**
 * A cgroup's resources: setting its CPU/memory/pids limits and reading them back, and reading what it has used,
 * from the v1 or v2 control files.
 */

const V1_UNLIMITED_THRESHOLD = 2 ** 53;

export interface CpuLimit {
  /** CPU time allowed per period, in microseconds. */
  quotaUs: number;
  /** Period length in microseconds (default 100 000). */
  periodUs?: number;
}

export interface CgroupLimits {
  /** null = unlimited. */
  cpu: { quotaUs: number; periodUs: number } | null;
  memoryBytes: number | null;
  pids: number | null;
}

export interface CgroupUsage {
  /** CPU time consumed by the cgroup and its children, in nanoseconds. */
  cpuUsageNs: number;
  /** Memory charged to the cgroup, page cache included. */
  memoryBytes: number;
  /** Memory minus inactive file cache: what the kernel cannot reclaim cheaply. */
  memoryWorkingSetBytes: number;
  /** Tasks in the cgroup (0 when the pids controller is absent). */
  pids: number;
}

export async function writeCpuLimit(layout: CgroupLayout, path: string, limit: CpuLimit | null): Promise<void> {
  const period = limit?.periodUs ?? 100_000;
  if (limit && (!Number.isSafeInteger(limit.quotaUs) || limit.quotaUs < 1000 || period < 1000 || period > 1_000_000)) {
    throw invalidLimit('set-cpu', path, 'cpu limit: quotaUs must be >= 1000 and periodUs within [1000, 1000000]');
  }
  await cgroupOp('set-cpu', path, async () => {
    if (layout.version === 'v2') {
      await writeFile(join(cgroupDir(layout, path), 'cpu.max'), `${limit ? limit.quotaUs : 'max'} ${period}`);
      return;
    }
    const d = cgroupDir(layout, path, 'cpu');
    await writeFile(join(d, 'cpu.cfs_period_us'), String(period));
    await writeFile(join(d, 'cpu.cfs_quota_us'), String(limit ? limit.quotaUs : -1));
  });
}

export async function writeMemoryLimit(layout: CgroupLayout, path: string, bytes: number | null): Promise<void> {
  if (bytes !== null && (!Number.isSafeInteger(bytes) || bytes < 4096)) {
    throw invalidLimit('set-memory', path, 'memory limit must be at least 4096 bytes');
  }
  await cgroupOp('set-memory', path, async () => {
    if (layout.version === 'v2') {
      await writeFile(join(cgroupDir(layout, path), 'memory.max'), bytes === null ? 'max' : String(bytes));
    } else {
      await writeFile(
        join(cgroupDir(layout, path, 'memory'), 'memory.limit_in_bytes'),
        bytes === null ? '-1' : String(bytes),
      );
    }
  });
}

export async function writePidsLimit(layout: CgroupLayout, path: string, max: number | null): Promise<void> {
  if (max !== null && (!Number.isSafeInteger(max) || max < 1)) {
    throw invalidLimit('set-pids', path, 'pids limit must be a positive integer');
  }
  await cgroupOp('set-pids', path, () =>
    writeFile(join(cgroupDir(layout, path, 'pids'), 'pids.max'), max === null ? 'max' : String(max)),
  );
}

/**
 * Caps the kernel memory the cgroup's TCP sockets may hold in buffers (cgroup v1 only). v1 charges socket buffers to a
 * cgroup only once `memory.kmem.tcp.limit_in_bytes` has been written for it, and only for sockets created afterwards:
 * write it before any task joins. v2 needs nothing: it charges socket memory to `memory.max` on its own, so this
 * does nothing there. Fails with ENOENT where the kernel has no such file (v1 memory controller without it).
 */
export async function writeTcpMemoryLimit(layout: CgroupLayout, path: string, bytes: number | null): Promise<void> {
  if (bytes !== null && (!Number.isSafeInteger(bytes) || bytes < 4096)) {
    throw invalidLimit('set-tcp-memory', path, 'tcp memory limit must be at least 4096 bytes');
  }
  if (layout.version === 'v2') return;
  await cgroupOp('set-tcp-memory', path, () =>
    writeFile(
      join(cgroupDir(layout, path, 'memory'), 'memory.kmem.tcp.limit_in_bytes'),
      bytes === null ? '-1' : String(bytes),
    ),
  );
}

/** Disk IO limits of one block device (`major:minor`); 0: no limit of that kind. */
export interface IoDeviceLimit {
  readonly device: string;
  readonly readBytesPerSecond: number;
  readonly writeBytesPerSecond: number;
  readonly readIops: number;
  readonly writeIops: number;
}

const ioThrottleFiles = {
  readBytesPerSecond: 'blkio.throttle.read_bps_device',
  writeBytesPerSecond: 'blkio.throttle.write_bps_device',
  readIops: 'blkio.throttle.read_iops_device',
  writeIops: 'blkio.throttle.write_iops_device',
} as const;

/**
 * cgroup v1: throttles the IO the cgroup's tasks submit to each device (`blkio.throttle.*`). v1 sees only IO a task
 * submits itself: reads (direct or through the page cache) and direct writes, not buffered writes, which the kernel's
 * flusher writes back from the root cgroup. Returns false where it cannot act: v2, or no blkio hierarchy mounted.
 */
export async function writeIoLimits(
  layout: CgroupLayout,
  path: string,
  limits: readonly IoDeviceLimit[],
): Promise<boolean> {
  if (layout.version === 'v2' || !layout.roots.blkio) return false;
  const dir = join(layout.roots.blkio, path);
  await cgroupOp('set-io', path, async () => {
    for (const limit of limits) {
      if (!/^\d{1,4}:\d{1,8}$/.test(limit.device)) {
        throw invalidLimit('set-io', path, `'${limit.device.slice(0, 32)}' is not a major:minor device`);
      }
      for (const [kind, file] of Object.entries(ioThrottleFiles) as Array<[keyof typeof ioThrottleFiles, string]>) {
        const value = limit[kind];
        if (!Number.isSafeInteger(value) || value < 0)
          throw invalidLimit('set-io', path, `${kind} must be an integer >= 0`);
        // Writing 0 removes a rule; a device without one is not limited in that kind.
        await writeFile(join(dir, file), `${limit.device} ${value}`);
      }
    }
  });
  return true;
}

/**
 * cgroup v1: gives `child` the limits v1 does not apply through the hierarchy, as `parent` has them, before any task
 * moves into it:
 * - TCP socket buffers: a socket is charged to its own memcg only once that memcg's `memory.kmem.tcp.limit_in_bytes`
 *   was written; in a child never written, sockets are charged to no cgroup at all, past the parent's cap and the
 *   node's. Written (here with the parent's value), the child's charges also count against the parent's cap;
 * - disk IO throttling: v1 blk-throttle is flat, so the parent's `blkio.throttle.*` rules do not hold its children.
 * Memory, CPU and pids limits are hierarchical on v1 too and need nothing. Does nothing on v2, where all are.
 */
export async function inheritFlatLimits(layout: CgroupLayout, parent: string, child: string): Promise<void> {
  if (layout.version === 'v2') return;
  await cgroupOp('inherit-limits', child, async () => {
    const tcpFile = 'memory.kmem.tcp.limit_in_bytes';
    const tcp = await readFile(join(cgroupDir(layout, parent, 'memory'), tcpFile), 'utf8').catch(absentAsUndefined);
    if (tcp !== undefined) {
      const bytes = BigInt(tcp.trim());
      await writeFile(
        join(cgroupDir(layout, child, 'memory'), tcpFile),
        bytes >= BigInt(V1_UNLIMITED_THRESHOLD) ? '-1' : bytes.toString(),
      );
    }
    if (!layout.roots.blkio) return;
    for (const file of Object.values(ioThrottleFiles)) {
      const rules = await readFile(join(layout.roots.blkio, parent, file), 'utf8').catch(absentAsUndefined);
      for (const rule of (rules ?? '').split('\n')) {
        // "major:minor value", one per device with a rule.
        if (/^\d{1,4}:\d{1,8} \d+$/.test(rule.trim()))
          await writeFile(join(layout.roots.blkio, child, file), rule.trim());
      }
    }
  });
}

/** A control file this kernel does not have (no TCP accounting, no throttling) reads as undefined. */
function absentAsUndefined(error: unknown): undefined {
  if ((error as { code?: unknown }).code === 'ENOENT') return undefined;
  throw error;
}

export async function readLimits(layout: CgroupLayout, path: string): Promise<CgroupLimits> {
  const readText = textReader(layout, path);
  return cgroupOp('limits', path, async () => {
    if (layout.version === 'v2') {
      const [quota, period] = (await readText('cpu.max')).split(/\s+/);
      return {
        cpu:
          quota === 'max' || quota === undefined
            ? null
            : { quotaUs: Number(quota), periodUs: Number(period ?? 100_000) },
        memoryBytes: parseMax(await readText('memory.max')),
        // No pids.max file: the pids controller is not enabled here, so there is no limit.
        pids: parseMax(await readText('pids.max', 'pids').catch(() => 'max')),
      };
    }
    const quota = Number(await readText('cpu.cfs_quota_us', 'cpu'));
    const period = Number(await readText('cpu.cfs_period_us', 'cpu'));
    const mem = BigInt(await readText('memory.limit_in_bytes', 'memory'));
    return {
      cpu: quota > 0 ? { quotaUs: quota, periodUs: period } : null,
      memoryBytes: mem >= BigInt(V1_UNLIMITED_THRESHOLD) ? null : Number(mem),
      pids: layout.roots.pids ? parseMax(await readText('pids.max', 'pids')) : null,
    };
  });
}

export async function readUsage(layout: CgroupLayout, path: string): Promise<CgroupUsage> {
  const readText = textReader(layout, path);
  return cgroupOp('usage', path, async () => {
    if (layout.version === 'v2') {
      const cpuStat = parseKeyed(await readText('cpu.stat'));
      const memory = Number(await readText('memory.current'));
      const memStat = parseKeyed(await readText('memory.stat'));
      return {
        cpuUsageNs: (cpuStat.get('usage_usec') ?? 0) * 1000,
        memoryBytes: memory,
        memoryWorkingSetBytes: Math.max(0, memory - (memStat.get('inactive_file') ?? 0)),
        // No pids.current file: the pids controller is not enabled here; the count is unknown and reported as 0.
        pids: Number(await readText('pids.current').catch(() => '0')),
      };
    }
    const memory = Number(await readText('memory.usage_in_bytes', 'memory'));
    const memStat = parseKeyed(await readText('memory.stat', 'memory'));
    return {
      cpuUsageNs: Number(await readText('cpuacct.usage', 'cpuacct')),
      memoryBytes: memory,
      memoryWorkingSetBytes: Math.max(0, memory - (memStat.get('total_inactive_file') ?? 0)),
      pids: layout.roots.pids ? Number(await readText('pids.current', 'pids')) : 0,
    };
  });
}

/** An out-of-range limit: rejected before any control file is written. */
function invalidLimit(op: string, path: string, message: string): CgroupError {
  return new CgroupError(message, { op, path, code: 'EINVAL' });
}

/** Reads one control file of the cgroup at `path`, trimmed. */
function textReader(layout: CgroupLayout, path: string): (file: string, controller?: V1Controller) => Promise<string> {
  return async (file, controller) => (await readFile(join(cgroupDir(layout, path, controller), file), 'utf8')).trim();
}

function parseMax(v: string): number | null {
  return v.trim() === 'max' ? null : Number(v);
}

function parseKeyed(text: string): Map<string, number> {
  const m = new Map<string, number>();
  for (const line of text.split('\n')) {
    const [k, v] = line.trim().split(/\s+/);
    if (k && v !== undefined) m.set(k, Number(v));
  }
  return m;
}
