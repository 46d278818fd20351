import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { CgroupError, errnoCode } from './errors.js';

/**
 * Where cgroups live: which hierarchies are mounted (v1 per-controller or the v2 unified one), the directories a
 * cgroup path names in them, and how a failed cgroupfs operation is reported. Shared by the `Cgroup` handle
 * and the modules that act on its files.
 */

export const V2_CONTROLLERS = ['cpu', 'memory', 'pids'] as const;
/** The v1 controllers this helper manages. */
export type V1Controller = 'cpu' | 'cpuacct' | 'memory' | 'pids' | 'freezer' | 'blkio';
const V1_CONTROLLERS: readonly V1Controller[] = ['cpu', 'cpuacct', 'memory', 'pids', 'freezer', 'blkio'];

export type CgroupLayout =
  { version: 'v2'; root: string } | { version: 'v1'; roots: Partial<Record<V1Controller, string>> };

/** Reads /proc/self/mountinfo and picks v2 when the unified hierarchy has the cpu or memory controller. */
export async function detectCgroupLayout(mountinfoPath = '/proc/self/mountinfo'): Promise<CgroupLayout> {
  const text = await readFile(mountinfoPath, 'utf8');
  const v1: Partial<Record<V1Controller, string>> = {};
  const v2Mounts: string[] = [];
  for (const line of text.split('\n')) {
    const sep = line.indexOf(' - ');
    if (sep < 0) continue;
    const left = line.slice(0, sep).split(' ');
    const right = line.slice(sep + 3).split(' ');
    const mountPoint = unescapeMount(left[4] ?? '');
    const fsType = right[0];
    if (fsType === 'cgroup2') {
      v2Mounts.push(mountPoint);
    } else if (fsType === 'cgroup') {
      const superOpts = (right[2] ?? '').split(',');
      for (const c of V1_CONTROLLERS) {
        if (superOpts.includes(c) && v1[c] === undefined) {
          v1[c] = mountPoint;
        }
      }
    }
  }
  for (const root of v2Mounts) {
    // A probe: a v2 mount whose controllers cannot be read is not a usable hierarchy (detection goes on).
    const controllers = await readFile(join(root, 'cgroup.controllers'), 'utf8').catch(() => '');
    const names = controllers.trim().split(/\s+/);
    if (names.includes('cpu') || names.includes('memory')) {
      return { version: 'v2', root };
    }
  }
  if (v1.cpu || v1.memory) {
    return { version: 'v1', roots: v1 };
  }
  throw new CgroupError('no usable cgroup hierarchy: neither v2 with cpu/memory nor v1 cpu/memory is mounted', {
    op: 'detect',
    path: '',
    code: 'ENOTSUP',
  });
}

function unescapeMount(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_m, oct: string) => String.fromCharCode(parseInt(oct, 8)));
}

/** `path` without empty segments; refuses '.', '..' and odd characters, so that no cgroup path leaves its hierarchy. */
export function normalizeCgroupPath(path: string): string {
  const segments = path.split('/').filter(Boolean);
  for (const s of segments) {
    if (s === '..' || s === '.' || !/^[A-Za-z0-9._:@-]+$/.test(s)) {
      throw new CgroupError(`invalid cgroup path '${path}': segment '${s}' is not allowed`, {
        op: 'open',
        path,
        code: 'EINVAL',
      });
    }
  }
  return segments.join('/');
}

/** Directory of the cgroup at `path` in the hierarchy that holds `controller` (v2: the one directory). */
export function cgroupDir(layout: CgroupLayout, path: string, controller?: V1Controller): string {
  if (layout.version === 'v2') {
    return join(layout.root, path);
  }
  const root = layout.roots[controller ?? 'memory'] ?? layout.roots.cpu ?? layout.roots.memory;
  if (!root) {
    throw new CgroupError(`cgroup v1 controller '${controller}' is not mounted`, {
      op: 'dir',
      path,
      code: 'ENOTSUP',
    });
  }
  return join(root, path);
}

/** Every distinct directory of the cgroup at `path` (v1: one per mounted hierarchy). */
export function cgroupDirs(layout: CgroupLayout, path: string): string[] {
  if (layout.version === 'v2') {
    return [cgroupDir(layout, path)];
  }
  const roots = new Set(Object.values(layout.roots).filter((r): r is string => r !== undefined));
  return [...roots].map((r) => join(r, path));
}

/** Runs `fn` as operation `op` on the cgroup at `path`; a failure surfaces as a {@link CgroupError}. */
export async function cgroupOp<T>(op: string, path: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    if (e instanceof CgroupError) throw e;
    const code = errnoCode(e);
    throw new CgroupError(`cgroup ${op} on '${path}' failed: ${(e as Error).message}`, {
      op,
      path,
      code,
      cause: e,
    });
  }
}
