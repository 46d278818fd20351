import { execFile } from 'node:child_process';
import { mkdir, readFile, rmdir, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import type { ClassResources, PluginLogger } from '@workbay/api';
import { isErrno, signal, sleep } from './proc.js';

const execFileAsync = promisify(execFile);

/** The controllers a workspace cgroup limits. */
export type CgroupController = 'cpu' | 'memory' | 'pids';
export const cgroupControllers: readonly CgroupController[] = ['cpu', 'memory', 'pids'];

/** Where the cgroup hierarchies are on this machine, and where this process sits in them. */
export type CgroupLayout =
  | {
      readonly version: 1;
      /** Per controller: the directory of this process's own cgroup in that hierarchy. */
      readonly own: Readonly<Partial<Record<CgroupController, string>>>;
      /** Per controller: the hierarchy's mount point (the root of the hierarchy as we see it). */
      readonly roots: Readonly<Partial<Record<CgroupController, string>>>;
    }
  | {
      readonly version: 2;
      readonly own: string;
      readonly root: string;
      readonly controllers: readonly CgroupController[];
    };

/** One workspace's cgroup: what is persisted so that a new runtime instance can find and remove it. */
export interface WorkspaceCgroup {
  readonly version: 1 | 2;
  /** Directories created for this workspace: one per controller on v1, one on v2. */
  readonly dirs: readonly string[];
  /** The directory whose memory files say whether the OOM killer struck. */
  readonly memoryDir?: string;
}

interface MountInfo {
  readonly root: string;
  readonly mountPoint: string;
  readonly fsType: string;
  readonly superOptions: readonly string[];
}

export function parseMountInfo(text: string): MountInfo[] {
  const mounts: MountInfo[] = [];
  for (const line of text.split('\n')) {
    if (!line.trim()) continue;
    const [left, right] = line.split(' - ');
    if (!left || !right) continue;
    const l = left.split(' ');
    const r = right.split(' ');
    mounts.push({
      root: unescapeMount(l[3] ?? '/'),
      mountPoint: unescapeMount(l[4] ?? ''),
      fsType: r[0] ?? '',
      superOptions: (r[2] ?? '').split(','),
    });
  }
  return mounts;
}

// mountinfo escapes space, tab, newline and backslash as octal.
const unescapeMount = (s: string): string =>
  s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));

/** `/proc/self/cgroup`: hierarchy id → controllers → path. The v2 entry has id 0 and no controllers. */
export function parseProcCgroup(text: string): { controllers: string[]; path: string }[] {
  return text
    .split('\n')
    .filter((l) => l.trim())
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
}

/** Maps a cgroup path (as /proc/self/cgroup shows it) to a directory under the mount, honouring the mount's root. */
function dirUnderMount(mount: MountInfo, cgroupPath: string): string {
  const rel =
    mount.root !== '/' && cgroupPath.startsWith(mount.root) ? cgroupPath.slice(mount.root.length) : cgroupPath;
  return path.join(mount.mountPoint, rel).replace(/(.)\/+$/, '$1');
}

/**
 * Works out which cgroup version to use. v1 wins when any of cpu/memory/pids is mounted as a v1 hierarchy (the
 * controllers then cannot be enabled on v2); otherwise v2 when a cgroup2 mount offers controllers.
 */
export function detectCgroupLayout(mountInfo: string, procCgroup: string): CgroupLayout | undefined {
  const mounts = parseMountInfo(mountInfo);
  const membership = parseProcCgroup(procCgroup);
  const own: Partial<Record<CgroupController, string>> = {};
  const roots: Partial<Record<CgroupController, string>> = {};
  for (const controller of cgroupControllers) {
    const mount = mounts.find((m) => m.fsType === 'cgroup' && m.superOptions.includes(controller));
    if (!mount) continue;
    const entry = membership.find((m) => m.controllers.includes(controller));
    roots[controller] = mount.mountPoint;
    own[controller] = dirUnderMount(mount, entry?.path ?? '/');
  }
  if (Object.keys(roots).length > 0) return { version: 1, own, roots };
  const v2 = mounts.find((m) => m.fsType === 'cgroup2');
  if (!v2) return undefined;
  const entry = membership.find((m) => m.controllers.length === 0 && m.path !== undefined);
  return { version: 2, root: v2.mountPoint, own: dirUnderMount(v2, entry?.path ?? '/'), controllers: [] };
}

/** Reads the live layout; on v2 also reads which controllers the root offers. */
export async function readCgroupLayout(): Promise<CgroupLayout | undefined> {
  const [mountInfo, procCgroup] = await Promise.all([
    readFile('/proc/self/mountinfo', 'utf8'),
    readFile('/proc/self/cgroup', 'utf8'),
  ]);
  const layout = detectCgroupLayout(mountInfo, procCgroup);
  if (layout?.version !== 2) return layout;
  const available = (await readFile(path.join(layout.root, 'cgroup.controllers'), 'utf8').catch(() => ''))
    .trim()
    .split(/\s+/);
  const controllers = cgroupControllers.filter((c) => available.includes(c));
  return controllers.length > 0 ? { ...layout, controllers } : undefined;
}

/**
 * Mounts the v1 controller hierarchies when a machine has none mounted (e.g. a bare container with a writable
 * /sys/fs/cgroup). Does nothing when any cgroup filesystem is already there.
 */
export async function mountCgroupsIfMissing(logger: PluginLogger, base = '/sys/fs/cgroup'): Promise<void> {
  const mounts = parseMountInfo(await readFile('/proc/self/mountinfo', 'utf8'));
  if (mounts.some((m) => m.fsType === 'cgroup' || m.fsType === 'cgroup2')) return;
  await mkdir(base, { recursive: true });
  if (!mounts.some((m) => m.mountPoint === base)) {
    await execFileAsync('mount', ['-t', 'tmpfs', '-o', 'mode=755', 'cgroup_root', base]);
  }
  for (const controller of cgroupControllers) {
    const dir = path.join(base, controller);
    await mkdir(dir, { recursive: true });
    try {
      await execFileAsync('mount', ['-t', 'cgroup', '-o', controller, 'cgroup', dir]);
      logger.info({ controller, dir }, 'mounted cgroup v1 controller');
    } catch (error) {
      logger.warn({ controller, dir, error: String(error) }, 'could not mount cgroup controller');
    }
  }
}

const cfsPeriodUs = 100_000;

/**
 * Creates, limits, empties and removes per-workspace cgroups. `parent` is a path relative to this process's own
 * cgroup, or absolute (from the hierarchy root) when it starts with '/'.
 */
export class CgroupManager {
  constructor(
    readonly layout: CgroupLayout,
    private readonly parent: string,
    private readonly logger: PluginLogger,
  ) {}

  private base(ownDir: string, root: string): string {
    return this.parent.startsWith('/') ? path.join(root, this.parent) : path.join(ownDir, this.parent);
  }

  async create(name: string, resources: ClassResources): Promise<WorkspaceCgroup> {
    if (this.layout.version === 1) {
      const dirs: string[] = [];
      let memoryDir: string | undefined;
      for (const controller of cgroupControllers) {
        const root = this.layout.roots[controller];
        const own = this.layout.own[controller];
        if (!root || !own) continue;
        const dir = path.join(this.base(own, root), name);
        await mkdir(dir, { recursive: true });
        dirs.push(dir);
        if (controller === 'memory') memoryDir = dir;
        await this.applyV1(controller, dir, resources);
      }
      return { version: 1, dirs, memoryDir };
    }
    const base = this.base(this.layout.own, this.layout.root);
    await this.enableV2Controllers(base);
    const dir = path.join(base, name);
    await mkdir(dir, { recursive: true });
    const has = (c: CgroupController): boolean => this.layout.version === 2 && this.layout.controllers.includes(c);
    if (resources.cpu !== undefined && has('cpu')) {
      await writeFile(path.join(dir, 'cpu.max'), `${quotaUs(resources.cpu)} ${cfsPeriodUs}`);
    }
    if (resources.memoryBytes !== undefined && has('memory')) {
      await writeFile(path.join(dir, 'memory.max'), String(resources.memoryBytes));
    }
    if (resources.pids !== undefined && has('pids')) {
      await writeFile(path.join(dir, 'pids.max'), String(resources.pids));
    }
    return { version: 2, dirs: [dir], memoryDir: has('memory') ? dir : undefined };
  }

  private async applyV1(controller: CgroupController, dir: string, r: ClassResources): Promise<void> {
    if (controller === 'cpu' && r.cpu !== undefined) {
      await writeFile(path.join(dir, 'cpu.cfs_period_us'), String(cfsPeriodUs));
      await writeFile(path.join(dir, 'cpu.cfs_quota_us'), String(quotaUs(r.cpu)));
    } else if (controller === 'memory' && r.memoryBytes !== undefined) {
      await writeFile(path.join(dir, 'memory.limit_in_bytes'), String(r.memoryBytes));
    } else if (controller === 'pids' && r.pids !== undefined) {
      await writeFile(path.join(dir, 'pids.max'), String(r.pids));
    }
  }

  /** v2 only hands a controller to a child when every ancestor lists it in cgroup.subtree_control. */
  private async enableV2Controllers(base: string): Promise<void> {
    if (this.layout.version !== 2) return;
    const root = this.layout.root;
    const enable = this.layout.controllers.map((c) => `+${c}`).join(' ');
    const chain: string[] = [];
    for (let dir = base; dir.startsWith(root); dir = path.dirname(dir)) {
      chain.unshift(dir);
      if (dir === root) break;
    }
    for (const dir of chain) {
      await mkdir(dir, { recursive: true });
      try {
        await writeFile(path.join(dir, 'cgroup.subtree_control'), enable);
      } catch (error) {
        this.logger.warn({ dir, error: String(error) }, 'could not enable cgroup v2 controllers');
      }
    }
  }

  /** The files the workspace wrapper writes its own pid into before it execs the workspace. */
  static procsFiles(cg: WorkspaceCgroup): string[] {
    return cg.dirs.map((d) => path.join(d, 'cgroup.procs'));
  }

  /** How often the OOM killer struck inside the cgroup. */
  static async oomKills(cg: WorkspaceCgroup): Promise<number> {
    if (!cg.memoryDir) return 0;
    const file = cg.version === 1 ? 'memory.oom_control' : 'memory.events';
    const text = await readFile(path.join(cg.memoryDir, file), 'utf8').catch(() => '');
    const match = /^oom_kill (\d+)$/m.exec(text);
    return match ? Number(match[1]) : 0;
  }

  static async pids(cg: WorkspaceCgroup): Promise<number[]> {
    const all = new Set<number>();
    for (const dir of cg.dirs) {
      const text = await readFile(path.join(dir, 'cgroup.procs'), 'utf8').catch(() => '');
      for (const line of text.split('\n')) if (line.trim()) all.add(Number(line));
    }
    return [...all];
  }

  static async signalAll(cg: WorkspaceCgroup, sig: NodeJS.Signals): Promise<void> {
    for (const pid of await CgroupManager.pids(cg)) signal(pid, sig);
  }

  /** Kills what is left and removes the directories; retries while the kernel still releases the last tasks. */
  static async remove(cg: WorkspaceCgroup, logger: PluginLogger): Promise<void> {
    for (let attempt = 0; attempt < 50; attempt++) {
      const left = await CgroupManager.pids(cg);
      if (left.length > 0) for (const pid of left) signal(pid, 'SIGKILL');
      let busy = false;
      for (const dir of cg.dirs) {
        try {
          await rmdir(dir);
        } catch (e) {
          if (isErrno(e, 'ENOENT')) continue;
          if (isErrno(e, 'EBUSY')) {
            busy = true;
            continue;
          }
          throw e;
        }
      }
      if (!busy) return;
      await sleep(20 + attempt * 10);
    }
    logger.warn({ dirs: cg.dirs }, 'cgroup still busy; left in place');
  }

  static async exists(cg: WorkspaceCgroup): Promise<boolean> {
    for (const dir of cg.dirs) {
      if (
        await stat(dir).then(
          () => true,
          () => false,
        )
      )
        return true;
    }
    return false;
  }
}

const quotaUs = (cpu: number): number => Math.max(1000, Math.round(cpu * cfsPeriodUs));
