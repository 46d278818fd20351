import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Cgroup } from './cgroup.js';
import type { CgroupLayout } from './cgroup-layout.js';
import { CgroupError } from './errors.js';
import { runCommand } from './exec.js';

/**
 * Host-side cgroup helpers around {@link Cgroup}: where the calling process sits in the hierarchy (so that
 * workspace cgroups can go below the caller's own on v1), mounting the v1 controllers on a machine that has no
 * cgroup filesystem at all, and the OOM-kill count a runtime reports when a workspace dies of its memory limit.
 */

const V1_MOUNTED = ['cpu', 'cpuacct', 'memory', 'pids', 'freezer', 'blkio'] as const;

/**
 * The caller's own cgroup, relative to the hierarchy root: on v2 the unified entry of /proc/self/cgroup, on v1
 * the entry of the memory hierarchy (or cpu's when memory is not mounted), made relative to the mount's root.
 */
export async function ownCgroupPath(layout: CgroupLayout, procSelf = '/proc/self'): Promise<string> {
  const [cgroupText, mountInfo] = await Promise.all([
    readFile(join(procSelf, 'cgroup'), 'utf8'),
    readFile(join(procSelf, 'mountinfo'), 'utf8'),
  ]);
  const entries = cgroupText
    .split('\n')
    .filter(Boolean)
    .map((line) => {
      const first = line.indexOf(':');
      const second = line.indexOf(':', first + 1);
      return {
        controllers: line
          .slice(first + 1, second)
          .split(',')
          .filter(Boolean),
        path: line.slice(second + 1),
      };
    });
  let entry: { path: string } | undefined;
  let mountPoint: string | undefined;
  if (layout.version === 'v2') {
    entry = entries.find((e) => e.controllers.length === 0);
    mountPoint = layout.root;
  } else {
    const controller = layout.roots.memory ? 'memory' : 'cpu';
    entry = entries.find((e) => e.controllers.includes(controller));
    mountPoint = layout.roots[controller];
  }
  let path = entry?.path ?? '/';
  // A hierarchy mounted from a sub-cgroup (containers) shows paths relative to that root.
  const mountRoot = mountInfo
    .split('\n')
    .map((l) => l.split(' '))
    .find((f) => f[4] === mountPoint)?.[3];
  if (mountRoot && mountRoot !== '/' && path.startsWith(mountRoot)) path = path.slice(mountRoot.length);
  return path.split('/').filter(Boolean).join('/');
}

/**
 * Mounts the v1 controllers (cpu, cpuacct, memory, pids, freezer, blkio) under `base` when no cgroup filesystem is
 * mounted at all (e.g. a bare container with a writable /sys/fs/cgroup). Does nothing when any cgroup or cgroup2
 * mount exists. Returns the controllers it mounted.
 */
export async function mountCgroupsIfMissing(base = '/sys/fs/cgroup'): Promise<string[]> {
  const mountInfo = await readFile('/proc/self/mountinfo', 'utf8');
  const fsTypes = mountInfo.split('\n').map((l) => l.split(' - ')[1]?.split(' ')[0]);
  if (fsTypes.some((t) => t === 'cgroup' || t === 'cgroup2')) return [];
  const mounted: string[] = [];
  await mkdir(base, { recursive: true });
  const baseMounted = mountInfo.split('\n').some((l) => l.split(' ')[4] === base);
  if (!baseMounted) {
    const r = await runCommand('mount', ['-t', 'tmpfs', '-o', 'mode=755', 'cgroup_root', base], { timeoutMs: 10_000 });
    if (r.exitCode !== 0) {
      throw new CgroupError(`cannot mount a tmpfs at ${base}: ${r.stderr.trim()}`, { op: 'mount', path: base });
    }
  }
  for (const controller of V1_MOUNTED) {
    const dir = join(base, controller);
    await mkdir(dir, { recursive: true });
    const r = await runCommand('mount', ['-t', 'cgroup', '-o', controller, 'cgroup', dir], { timeoutMs: 10_000 });
    if (r.exitCode === 0) mounted.push(controller);
  }
  return mounted;
}

/** How often the kernel's OOM killer struck inside the cgroup (0 when it cannot tell). */
export async function oomKillCount(cgroup: Cgroup): Promise<number> {
  const file = cgroup.version === 'v1' ? 'memory.oom_control' : 'memory.events';
  let dir: string;
  try {
    dir = cgroup.dir('memory');
  } catch {
    // Deliberate: no memory controller mounted, so no OOM count to tell (documented above as 0).
    return 0;
  }
  const text = await readFile(join(dir, file), 'utf8').catch(() => '');
  const match = /^oom_kill (\d+)$/m.exec(text);
  return match ? Number(match[1]) : 0;
}
