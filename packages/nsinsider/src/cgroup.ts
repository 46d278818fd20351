import { chown, mkdir, readdir, readFile, rmdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { CgroupError, errnoCode } from './errors.js';

/**
 * Cgroup resource control for the daemon: find the layout (v1 per-controller hierarchies or the v2
 * unified one), create a workspace cgroup, set CPU/memory/pids limits, read usage, move, kill and
 * remove. Plain file I/O on cgroupfs; no namespace needs entering.
 */

export type CgroupVersion = 'v1' | 'v2';
/** The v1 controllers this helper manages. */
export type V1Controller = 'cpu' | 'cpuacct' | 'memory' | 'pids' | 'freezer';
const V1_CONTROLLERS: readonly V1Controller[] = ['cpu', 'cpuacct', 'memory', 'pids', 'freezer'];
const V2_CONTROLLERS = ['cpu', 'memory', 'pids'] as const;

export type CgroupLayout =
  { version: 'v2'; root: string } | { version: 'v1'; roots: Partial<Record<V1Controller, string>> };

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

/**
 * The part of a cgroup that the daemon's in-workspace service needs; {@link Cgroup} implements it and
 * tests may fake it.
 */
export interface WorkspaceCgroup {
  readonly path: string;
  usage(): Promise<CgroupUsage>;
  limits(): Promise<CgroupLimits>;
  processes(): Promise<number[]>;
  /** Moves this cgroup's own processes into the child `name` (created when missing). */
  evacuateTo(name: string, options?: { chownUid?: number; chownGid?: number }): Promise<number>;
}

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

function normalizeCgroupPath(path: string): string {
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

const V1_UNLIMITED_THRESHOLD = 2 ** 53;

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
    if (this.layout.version === 'v2') {
      return join(this.layout.root, this.path);
    }
    const root = this.layout.roots[controller ?? 'memory'] ?? this.layout.roots.cpu ?? this.layout.roots.memory;
    if (!root) {
      throw new CgroupError(`cgroup v1 controller '${controller}' is not mounted`, {
        op: 'dir',
        path: this.path,
        code: 'ENOTSUP',
      });
    }
    return join(root, this.path);
  }

  /** Every distinct directory of this cgroup (v1: one per mounted hierarchy). */
  dirs(): string[] {
    if (this.layout.version === 'v2') {
      return [this.dir()];
    }
    const roots = new Set(Object.values(this.layout.roots).filter((r): r is string => r !== undefined));
    return [...roots].map((r) => join(r, this.path));
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
    await this.wrap('create', async () => {
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
    const period = limit?.periodUs ?? 100_000;
    if (
      limit &&
      (!Number.isSafeInteger(limit.quotaUs) || limit.quotaUs < 1000 || period < 1000 || period > 1_000_000)
    ) {
      throw new CgroupError('cpu limit: quotaUs must be >= 1000 and periodUs within [1000, 1000000]', {
        op: 'set-cpu',
        path: this.path,
        code: 'EINVAL',
      });
    }
    await this.wrap('set-cpu', async () => {
      if (this.layout.version === 'v2') {
        await writeFile(join(this.dir(), 'cpu.max'), `${limit ? limit.quotaUs : 'max'} ${period}`);
        return;
      }
      const d = this.dir('cpu');
      await writeFile(join(d, 'cpu.cfs_period_us'), String(period));
      await writeFile(join(d, 'cpu.cfs_quota_us'), String(limit ? limit.quotaUs : -1));
    });
  }

  async setMemoryLimit(bytes: number | null): Promise<void> {
    if (bytes !== null && (!Number.isSafeInteger(bytes) || bytes < 4096)) {
      throw new CgroupError('memory limit must be at least 4096 bytes', {
        op: 'set-memory',
        path: this.path,
        code: 'EINVAL',
      });
    }
    await this.wrap('set-memory', async () => {
      if (this.layout.version === 'v2') {
        await writeFile(join(this.dir(), 'memory.max'), bytes === null ? 'max' : String(bytes));
      } else {
        await writeFile(join(this.dir('memory'), 'memory.limit_in_bytes'), bytes === null ? '-1' : String(bytes));
      }
    });
  }

  async setPidsLimit(max: number | null): Promise<void> {
    if (max !== null && (!Number.isSafeInteger(max) || max < 1)) {
      throw new CgroupError('pids limit must be a positive integer', {
        op: 'set-pids',
        path: this.path,
        code: 'EINVAL',
      });
    }
    await this.wrap('set-pids', () =>
      writeFile(join(this.dir('pids'), 'pids.max'), max === null ? 'max' : String(max)),
    );
  }

  async addProcess(pid: number): Promise<void> {
    if (!Number.isSafeInteger(pid) || pid <= 0) {
      throw new CgroupError(`invalid pid ${pid}`, { op: 'add-process', path: this.path, code: 'EINVAL' });
    }
    await this.wrap('add-process', async () => {
      for (const d of this.dirs()) {
        await writeFile(join(d, 'cgroup.procs'), String(pid));
      }
    });
  }

  /** Processes directly in this cgroup (not in its children). */
  async processes(): Promise<number[]> {
    return this.wrap('processes', async () => {
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
    return this.wrap('limits', async () => {
      if (this.layout.version === 'v2') {
        const [quota, period] = (await this.readText('cpu.max')).split(/\s+/);
        return {
          cpu:
            quota === 'max' || quota === undefined
              ? null
              : { quotaUs: Number(quota), periodUs: Number(period ?? 100_000) },
          memoryBytes: parseMax(await this.readText('memory.max')),
          // No pids.max file: the pids controller is not enabled here, so there is no limit.
          pids: parseMax(await this.readText('pids.max', 'pids').catch(() => 'max')),
        };
      }
      const quota = Number(await this.readText('cpu.cfs_quota_us', 'cpu'));
      const period = Number(await this.readText('cpu.cfs_period_us', 'cpu'));
      const mem = BigInt(await this.readText('memory.limit_in_bytes', 'memory'));
      return {
        cpu: quota > 0 ? { quotaUs: quota, periodUs: period } : null,
        memoryBytes: mem >= BigInt(V1_UNLIMITED_THRESHOLD) ? null : Number(mem),
        pids: this.layout.roots.pids ? parseMax(await this.readText('pids.max', 'pids')) : null,
      };
    });
  }

  async usage(): Promise<CgroupUsage> {
    return this.wrap('usage', async () => {
      if (this.layout.version === 'v2') {
        const cpuStat = parseKeyed(await this.readText('cpu.stat'));
        const memory = Number(await this.readText('memory.current'));
        const memStat = parseKeyed(await this.readText('memory.stat'));
        return {
          cpuUsageNs: (cpuStat.get('usage_usec') ?? 0) * 1000,
          memoryBytes: memory,
          memoryWorkingSetBytes: Math.max(0, memory - (memStat.get('inactive_file') ?? 0)),
          // No pids.current file: the pids controller is not enabled here; the count is unknown and reported as 0.
          pids: Number(await this.readText('pids.current').catch(() => '0')),
        };
      }
      const memory = Number(await this.readText('memory.usage_in_bytes', 'memory'));
      const memStat = parseKeyed(await this.readText('memory.stat', 'memory'));
      return {
        cpuUsageNs: Number(await this.readText('cpuacct.usage', 'cpuacct')),
        memoryBytes: memory,
        memoryWorkingSetBytes: Math.max(0, memory - (memStat.get('total_inactive_file') ?? 0)),
        pids: this.layout.roots.pids ? Number(await this.readText('pids.current', 'pids')) : 0,
      };
    });
  }

  async evacuateTo(name: string, options: { chownUid?: number; chownGid?: number } = {}): Promise<number> {
    const target = this.child(name);
    await target.create();
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
      await this.wrap('evacuate', () => this.enableSubtreeControllers(this.dir()));
    }
    if (options.chownUid !== undefined || options.chownGid !== undefined) {
      await this.wrap('evacuate', async () => {
        for (const d of target.dirs()) {
          await chown(d, options.chownUid ?? -1, options.chownGid ?? -1);
        }
      });
    }
    return moved;
  }

  /** Kills every process in this cgroup and its children and waits until they are gone. */
  async kill(): Promise<void> {
    const all = [this, ...(await this.descendants())];
    // A cgroup removed meanwhile (ENOENT/ENODEV) or without a pids hierarchy (ENOTSUP) has no processes to kill;
    // any other failure to list them fails the kill rather than count a possibly live process as gone.
    const listAll = async (): Promise<number[]> =>
      (
        await Promise.all(
          all.map((c) =>
            c.processes().catch((error: unknown) => {
              const code = (error as { code?: unknown }).code;
              if (code === 'ENOENT' || code === 'ENODEV' || code === 'ENOTSUP') return [] as number[];
              throw error;
            }),
          ),
        )
      ).flat();
    const deadline = Date.now() + this.killTimeoutMs;
    if (this.layout.version === 'v2' && (await fileExists(join(this.dir(), 'cgroup.kill')))) {
      await this.wrap('kill', () => writeFile(join(this.dir(), 'cgroup.kill'), '1'));
    } else {
      await this.freeze(true);
      try {
        for (const pid of await listAll()) {
          try {
            process.kill(pid, 'SIGKILL');
          } catch {
            // Already gone.
          }
        }
      } finally {
        await this.freeze(false);
      }
    }
    for (;;) {
      const left = await listAll();
      if (left.length === 0) return;
      if (Date.now() > deadline) {
        throw new CgroupError(`processes ${left.join(', ')} survived the kill`, {
          op: 'kill',
          path: this.path,
          code: 'EBUSY',
        });
      }
      for (const pid of left) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // Already gone.
        }
      }
      await sleep(20);
    }
  }

  private async freeze(frozen: boolean): Promise<void> {
    if (this.layout.version === 'v2') {
      const f = join(this.dir(), 'cgroup.freeze');
      if (await fileExists(f)) await this.wrap('freeze', () => writeFile(f, frozen ? '1' : '0'));
      return;
    }
    if (!this.layout.roots.freezer) return;
    const f = join(this.dir('freezer'), 'freezer.state');
    if (await fileExists(f)) await this.wrap('freeze', () => writeFile(f, frozen ? 'FROZEN' : 'THAWED'));
  }

  /** Removes the cgroup and its children; they must be empty (see {@link kill}). Absent is fine. */
  async remove(): Promise<void> {
    const order = [...(await this.descendants()).reverse(), this];
    for (const cg of order) {
      for (const d of cg.dirs()) {
        for (let attempt = 0; ; attempt++) {
          try {
            await rmdir(d);
            break;
          } catch (e) {
            const code = errnoCode(e);
            if (code === 'ENOENT') break;
            // Exiting tasks may keep a cgroup busy for a moment.
            if (code === 'EBUSY' && attempt < 50) {
              await sleep(20);
              continue;
            }
            throw new CgroupError(`cannot remove ${d}: ${(e as Error).message}`, {
              op: 'remove',
              path: cg.path,
              code,
              cause: e,
            });
          }
        }
      }
    }
  }

  private async readText(file: string, controller?: V1Controller): Promise<string> {
    return (await readFile(join(this.dir(controller), file), 'utf8')).trim();
  }

  private async wrap<T>(op: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (e) {
      if (e instanceof CgroupError) throw e;
      const code = errnoCode(e);
      throw new CgroupError(`cgroup ${op} on '${this.path}' failed: ${(e as Error).message}`, {
        op,
        path: this.path,
        code,
        cause: e,
      });
    }
  }
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

async function fileExists(p: string): Promise<boolean> {
  try {
    await stat(p);
    return true;
  } catch {
    // A probe: any failure means "not there" to the callers (optional cgroup files).
    return false;
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

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
