import { chown, mkdir, readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { CgroupLayout, V1Controller } from './cgroup-layout.js';
import {
  cgroupDir,
  cgroupDirs,
  cgroupOp,
  detectCgroupLayout,
  normalizeCgroupPath,
  V2_CONTROLLERS,
} from './cgroup-layout.js';
import type { CgroupLimits, CgroupUsage, CpuLimit, IoDeviceLimit } from './cgroup-resources.js';
import {
  inheritFlatLimits,
  readLimits,
  readUsage,
  writeCpuLimit,
  writeIoLimits,
  writeMemoryLimit,
  writePidsLimit,
  writeTcpMemoryLimit,
} from './cgroup-resources.js';
import { killCgroupTree, removeCgroupTree } from './cgroup-teardown.js';
import { CgroupError } from './errors.js';

/**
 * Cgroup resource control for the daemon: find the layout (v1 per-controller hierarchies or the v2
 * unified one), create a workspace cgroup, set CPU/memory/pids limits, read usage, move, kill and
 * remove. Plain file I/O on cgroupfs; no namespace needs entering.
 */

export type CgroupVersion = 'v1' | 'v2';

/**
 * The part of a cgroup that the daemon's in-workspace service needs; {@link Cgroup} implements it and
 * tests may fake it.
 */
export interface WorkspaceCgroup {
  readonly path: string;
  usage(): Promise<CgroupUsage>;
  limits(): Promise<CgroupLimits>;
  processes(): Promise<number[]>;
  /**
   * Moves this cgroup's own processes into the child `name` (created when missing), which first gets the limits v1
   * does not apply hierarchically (TCP buffers, IO throttling; see inheritFlatLimits).
   */
  evacuateTo(name: string, options?: { chownUid?: number; chownGid?: number }): Promise<number>;
}

export interface CgroupControllerOptions {
  /** How long kill() waits for the cgroup to empty (default 5 s). */
  killTimeoutMs?: number;
}

/** Entry point: one per daemon, created with {@link CgroupController.detect} or an explicit layout. */
export class CgroupController {
  readonly layout: CgroupLayout;
  private readonly options: Required<CgroupControllerOptions>;

  constructor(layout: CgroupLayout, options: CgroupControllerOptions = {}) {
    this.layout = layout;
    this.options = { killTimeoutMs: options.killTimeoutMs ?? 5000 };
  }

  static async detect(options: CgroupControllerOptions & { mountinfoPath?: string } = {}): Promise<CgroupController> {
    return new CgroupController(await detectCgroupLayout(options.mountinfoPath), options);
  }

  get version(): CgroupVersion {
    return this.layout.version;
  }

  /** A handle on the cgroup at `path` (relative to the hierarchy roots); nothing is created yet. */
  cgroup(path: string): Cgroup {
    return new Cgroup(this.layout, normalizeCgroupPath(path), this.options.killTimeoutMs);
  }
}

/** One cgroup. Methods fail with {@link CgroupError}. */
export class Cgroup implements WorkspaceCgroup {
  constructor(
    private readonly layout: CgroupLayout,
    /** Relative to the hierarchy roots, no leading slash. */
    readonly path: string,
    private readonly killTimeoutMs: number,
  ) {}

  get version(): CgroupVersion {
    return this.layout.version;
  }

  /** Directory of this cgroup in the hierarchy that holds `controller` (v2: the one directory). */
  dir(controller?: V1Controller): string {
    return cgroupDir(this.layout, this.path, controller);
  }

  /** Every distinct directory of this cgroup (v1: one per mounted hierarchy). */
  dirs(): string[] {
    return cgroupDirs(this.layout, this.path);
  }

  child(name: string): Cgroup {
    return new Cgroup(this.layout, normalizeCgroupPath(join(this.path, name)), this.killTimeoutMs);
  }

  async exists(): Promise<boolean> {
    try {
      return (await stat(this.dir())).isDirectory();
    } catch {
      // A probe: a cgroup we cannot stat (or a hierarchy not mounted) is not one we can use.
      return false;
    }
  }

  /** Creates the cgroup (and its parents); in v2 it enables cpu/memory/pids for it on the way down. */
  async create(): Promise<void> {
    await cgroupOp('create', this.path, async () => {
      if (this.layout.version === 'v2') {
        const segments = this.path.split('/').filter(Boolean);
        let cur = this.layout.root;
        for (const s of segments) {
          await this.enableSubtreeControllers(cur);
          cur = join(cur, s);
          await mkdir(cur, { recursive: true });
        }
        return;
      }
      for (const d of this.dirs()) {
        await mkdir(d, { recursive: true });
      }
    });
  }

  private async enableSubtreeControllers(dir: string): Promise<void> {
    const available = (await readFile(join(dir, 'cgroup.controllers'), 'utf8')).trim().split(/\s+/);
    // Unreadable counts as nothing enabled: the write below enables them, and reports its own failure.
    const enabled = (await readFile(join(dir, 'cgroup.subtree_control'), 'utf8').catch(() => '')).trim().split(/\s+/);
    const wanted = V2_CONTROLLERS.filter((c) => available.includes(c) && !enabled.includes(c));
    if (wanted.length > 0) {
      await writeFile(join(dir, 'cgroup.subtree_control'), wanted.map((c) => `+${c}`).join(' '));
    }
  }

  async setCpuLimit(limit: CpuLimit | null): Promise<void> {
    await writeCpuLimit(this.layout, this.path, limit);
  }

  async setMemoryLimit(bytes: number | null): Promise<void> {
    await writeMemoryLimit(this.layout, this.path, bytes);
  }

  async setPidsLimit(max: number | null): Promise<void> {
    await writePidsLimit(this.layout, this.path, max);
  }

  /**
   * v1: caps the TCP socket buffers of the cgroup's tasks (`memory.kmem.tcp.limit_in_bytes`), which v1 does not count
   * against the memory limit; set it before any task joins (only sockets created afterwards are charged). v2: does
   * nothing, socket memory already counts against `memory.max`.
   */
  async setTcpMemoryLimit(bytes: number | null): Promise<void> {
    await writeTcpMemoryLimit(this.layout, this.path, bytes);
  }

  /**
   * v1: throttles the IO the cgroup's tasks submit to each listed device (see {@link writeIoLimits}: reads and direct
   * writes, not buffered writes). Returns false where it cannot (v2, or no blkio hierarchy).
   */
  async setIoLimits(limits: readonly IoDeviceLimit[]): Promise<boolean> {
    return writeIoLimits(this.layout, this.path, limits);
  }

  async addProcess(pid: number): Promise<void> {
    if (!Number.isSafeInteger(pid) || pid <= 0) {
      throw new CgroupError(`invalid pid ${pid}`, { op: 'add-process', path: this.path, code: 'EINVAL' });
    }
    await cgroupOp('add-process', this.path, async () => {
      for (const d of this.dirs()) {
        await writeFile(join(d, 'cgroup.procs'), String(pid));
      }
    });
  }

  /** Processes directly in this cgroup (not in its children). */
  async processes(): Promise<number[]> {
    return cgroupOp('processes', this.path, async () => {
      const text = await readFile(join(this.dir('pids'), 'cgroup.procs'), 'utf8');
      return text.split('\n').filter(Boolean).map(Number);
    });
  }

  /** Child cgroups, depth-first (deepest last), relative to the hierarchy roots. */
  async descendants(): Promise<Cgroup[]> {
    const out: Cgroup[] = [];
    const walk = async (cg: Cgroup): Promise<void> => {
      let entries: Array<{ name: string; isDirectory(): boolean }> = [];
      try {
        entries = await readdir(cg.dir(), { withFileTypes: true });
      } catch (error) {
        // Removed meanwhile (ENOENT) or no hierarchy to list (dir(): ENOTSUP): no children. Anything else would
        // leave children, and their processes, out of kill/delete unseen: the caller gets it.
        const code = (error as { code?: unknown }).code;
        if (code === 'ENOENT' || code === 'ENOTDIR' || code === 'ENOTSUP') return;
        throw error;
      }
      for (const e of entries) {
        if (e.isDirectory()) {
          const c = cg.child(e.name);
          out.push(c);
          await walk(c);
        }
      }
    };
    await walk(this);
    return out;
  }

  async limits(): Promise<CgroupLimits> {
    return readLimits(this.layout, this.path);
  }

  async usage(): Promise<CgroupUsage> {
    return readUsage(this.layout, this.path);
  }

  async evacuateTo(name: string, options: { chownUid?: number; chownGid?: number } = {}): Promise<number> {
    const target = this.child(name);
    await target.create();
    // Before any process moves: on v1 a child would otherwise hold sockets and IO outside this cgroup's caps.
    await inheritFlatLimits(this.layout, this.path, target.path);
    let moved = 0;
    // Processes may fork while we move them; a few passes catch the children.
    for (let pass = 0; pass < 10; pass++) {
      const pids = await this.processes();
      if (pids.length === 0) break;
      for (const pid of pids) {
        try {
          await target.addProcess(pid);
          moved++;
        } catch (e) {
          // A process that exited in between is not an error.
          if (!(await processExists(pid))) continue;
          throw e;
        }
      }
    }
    if (this.layout.version === 'v2') {
      // Only now, with no processes left in it, may this cgroup hand controllers to its children.
      await cgroupOp('evacuate', this.path, () => this.enableSubtreeControllers(this.dir()));
    }
    if (options.chownUid !== undefined || options.chownGid !== undefined) {
      await cgroupOp('evacuate', this.path, async () => {
        for (const d of target.dirs()) {
          await chown(d, options.chownUid ?? -1, options.chownGid ?? -1);
        }
      });
    }
    return moved;
  }

  /** Kills every process in this cgroup and its children and waits until they are gone. */
  async kill(): Promise<void> {
    await killCgroupTree(this, this.layout, this.killTimeoutMs);
  }

  /** Removes the cgroup and its children; they must be empty (see {@link kill}). Absent is fine. */
  async remove(): Promise<void> {
    await removeCgroupTree(this);
  }
}

async function processExists(pid: number): Promise<boolean> {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    // ESRCH: gone. (We run as root, so EPERM does not occur.)
    return false;
  }
}
