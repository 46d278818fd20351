import { readFile } from 'node:fs/promises';
import { availableParallelism, totalmem } from 'node:os';
import {
  FailedPreconditionError,
  InvalidArgumentError,
  isWorkbayError,
  NotFoundError,
  ResourceExhaustedError,
  silentLogger,
  UnimplementedError,
} from '@workbay/api';
import type { PluginLogger } from '@workbay/api';
import type { IdMapping, NamespaceOps } from '@workbay/nsinsider';
import { isNsinsiderError, validateIdMappings } from '@workbay/nsinsider';
import type { CgroupAccess, IdRange, InWorkspaceServiceDeps, IwsConfig, IwsWorkspaceContext } from './context.js';
import { defaultIwsConfig } from './context.js';
import { toIwsError } from './error-mapping.js';
import type { RateLimitRule } from './rate-limit.js';
import { InFlightLimit, onceOnly, RateLimiter } from './rate-limit.js';

/** Domain result of PrepareForUserNS. */
export interface PrepareForUserNsResult {
  /** How ids are shifted on the root filesystem; this daemon reports the wire default. */
  readonly fsShift: 'shiftfs';
  readonly persistentVolumeClaim: boolean;
}

/** CPU in millicores, memory in bytes. */
export interface WorkspaceResources {
  readonly cpu: { readonly usedMillicores: number; readonly limitMillicores: number };
  readonly memory: { readonly usedBytes: number; readonly limitBytes: number };
}

/** The rate limits of the original service, per workspace. */
export const iwsRateLimits: Readonly<Record<string, RateLimitRule>> = Object.freeze({
  PrepareForUserNS: onceOnly,
  EvacuateCGroup: onceOnly,
  Teardown: onceOnly,
  WriteIDMapping: { burst: 4, intervalMs: 2500 },
  WipingTeardown: { burst: 4, intervalMs: 2500 },
  WorkspaceInfo: { burst: 4, intervalMs: 1500 },
});

type MountKind = 'proc' | 'sysfs';

interface TrackedMount {
  kind: MountKind;
  hostPid: number;
  /** The mount namespace it was made in (the workspace's own). */
  mountNs: string;
  target: string;
}

/** PATH_MAX: longer targets cannot be mounted anyway. */
const MAX_TARGET_LENGTH = 4096;
/** Mounts one workspace may hold through this service at once (each is tracked until Teardown). */
const MAX_TRACKED_MOUNTS = 64;

/** Where the workspace's own processes end up after PrepareForUserNS / EvacuateCGroup. */
export const WORKSPACE_CGROUP = 'workspace';
export const USER_CGROUP = 'user';

/**
 * The in-workspace operations for one workspace, in domain terms. It validates every request (errors
 * name the wire field), confines pids to the workspace's pid namespace, and does the work through
 * {@link NamespaceOps}; it never spawns anything itself.
 */
/** Top-level directories a mount must not cover (the system the workspace's own programs run from). */
const systemTops = new Set(['bin', 'sbin', 'lib', 'lib32', 'lib64', 'libx32', 'usr', 'etc', 'dev']);

export class InWorkspaceOperations {
  private readonly ops: NamespaceOps;
  private readonly workspace: IwsWorkspaceContext;
  private readonly cgroups: CgroupAccess | undefined;
  private readonly config: IwsConfig;
  private readonly logger: PluginLogger;
  private readonly limiter: RateLimiter;
  private readonly deps: InWorkspaceServiceDeps;
  private readonly mounts = new Map<string, TrackedMount>();
  /** Calls of this workspace running at once (both services share it); the gRPC edge enforces it. */
  readonly inFlight: InFlightLimit;

  constructor(deps: InWorkspaceServiceDeps) {
    this.deps = deps;
    this.ops = deps.ops;
    this.workspace = deps.workspace;
    this.cgroups = deps.cgroups;
    this.config = { ...defaultIwsConfig, ...deps.config };
    this.logger = (deps.logger ?? silentLogger).child({ component: 'iws', workspaceId: deps.workspace.workspaceId });
    this.limiter = new RateLimiter(iwsRateLimits, deps.now ?? Date.now, this.config.rateLimits);
    this.inFlight = new InFlightLimit(this.config.maxInFlight);
  }

  /** Mounts made through this service and not yet unmounted (a snapshot). */
  get activeMounts(): ReadonlyArray<Readonly<TrackedMount>> {
    return [...this.mounts.values()].map((m) => ({ ...m }));
  }

  async prepareForUserNs(req: { usernsPid: number }): Promise<PrepareForUserNsResult> {
    if (!Number.isSafeInteger(req.usernsPid) || req.usernsPid < 0) {
      throw new InvalidArgumentError('userns_pid', 'must be a pid (or 0)');
    }
    this.assertNamespaceOps('PrepareForUserNS');
    this.limiter.take('PrepareForUserNS');
    const init = await this.initPid();
    if (req.usernsPid > 0) {
      await this.confinedPid(req.usernsPid, 'userns_pid');
    }
    await this.run('prepare /dev', () =>
      this.ops.prepareDev({
        pid: init,
        devDir: this.config.devDir,
        uid: this.config.devOwner.uid,
        gid: this.config.devOwner.gid,
      }),
    );
    const cgroupPath = await this.cgroupPath();
    if (cgroupPath !== undefined && this.cgroups) {
      // The workspace's processes move one level down so that the cgroup can later be delegated.
      const cg = this.cgroups.cgroup(cgroupPath);
      await this.run('create workspace cgroup', () => cg.evacuateTo(WORKSPACE_CGROUP));
    }
    this.logger.info({ usernsPid: req.usernsPid }, 'prepared for user namespace');
    return { fsShift: 'shiftfs', persistentVolumeClaim: false };
  }

  async writeIdMapping(req: { pid: number; gid: boolean; mappings: readonly IdMapping[] }): Promise<void> {
    this.assertPid(req.pid, 'pid');
    if (req.mappings.length === 0) {
      throw new InvalidArgumentError('mapping', 'must contain at least one mapping');
    }
    req.mappings.forEach((m, i) => this.assertAllowedHostRange(m, i));
    try {
      validateIdMappings('WriteIDMapping', req.mappings);
    } catch (e) {
      throw toIwsError(e, 'WriteIDMapping');
    }
    this.assertNamespaceOps('WriteIDMapping');
    this.limiter.take('WriteIDMapping');
    const hostPid = await this.confinedPid(req.pid, 'pid');
    await this.run('WriteIDMapping', () =>
      this.ops.writeIdMapping({ pid: hostPid, kind: req.gid ? 'gid' : 'uid', mappings: req.mappings }),
    );
    this.logger.info({ pid: req.pid, hostPid, gid: req.gid, lines: req.mappings.length }, 'wrote id mapping');
  }

  async evacuateCgroup(): Promise<void> {
    this.limiter.take('EvacuateCGroup');
    const cg = await this.requireCgroup('EvacuateCGroup');
    const delegate = this.config.cgroupDelegateTo;
    await this.run('EvacuateCGroup', async () => {
      // Stragglers still at the top go down first, then everything moves into the delegated leaf.
      await cg.evacuateTo(WORKSPACE_CGROUP);
      await cg
        .child(WORKSPACE_CGROUP)
        .evacuateTo(USER_CGROUP, delegate ? { chownUid: delegate.uid, chownGid: delegate.gid } : {});
    });
  }

  mountProc(req: { target: string; pid: number }): Promise<void> {
    return this.mount('proc', req);
  }

  umountProc(req: { target: string; pid: number }): Promise<void> {
    return this.umount('proc', req);
  }

  mountSysfs(req: { target: string; pid: number }): Promise<void> {
    return this.mount('sysfs', req);
  }

  umountSysfs(req: { target: string; pid: number }): Promise<void> {
    return this.umount('sysfs', req);
  }

  async mountNfs(req: { source: string; target: string; args: string; pid: number }): Promise<void> {
    if (!/^[^\s:/][^\s:]*:\/\S*$/.test(req.source)) {
      throw new InvalidArgumentError('source', "must look like 'server:/export'");
    }
    this.assertTarget(req.target);
    this.assertPid(req.pid, 'pid');
    await this.nfsUnsupported('MountNfs');
  }

  async umountNfs(req: { target: string; pid: number }): Promise<void> {
    this.assertTarget(req.target);
    this.assertPid(req.pid, 'pid');
    await this.nfsUnsupported('UmountNfs');
  }

  /** Unmounts what this service mounted. Fails on the first error. */
  async teardown(): Promise<boolean> {
    this.limiter.take('Teardown');
    const failures = await this.unmountAll();
    if (failures.length > 0) {
      throw failures[0]!;
    }
    return true;
  }

  /** Like {@link teardown} but carries on past errors (reported as `false`); optionally wipes the content. */
  async wipingTeardown(req: { doWipe: boolean }): Promise<boolean> {
    this.limiter.take('WipingTeardown');
    const failures = await this.unmountAll();
    if (req.doWipe) {
      if (this.deps.wipeContent) {
        try {
          await this.deps.wipeContent();
        } catch (e) {
          failures.push(e);
          this.logger.warn({ err: e }, 'wiping the workspace content failed');
        }
      } else {
        // Reported as a failure: a caller that asked for a wipe must not believe it happened.
        failures.push(new FailedPreconditionError('do_wipe: this daemon has no content wiper'));
        this.logger.warn({}, 'do_wipe requested but this daemon has no content wiper');
      }
    }
    return failures.length === 0;
  }

  async setupPairVeths(req: { pid: number }): Promise<void> {
    this.assertPid(req.pid, 'pid');
    this.assertNamespaceOps('SetupPairVeths');
    const init = await this.initPid();
    const hostPid = await this.confinedPid(req.pid, 'pid');
    const [outerNs, innerNs] = await Promise.all([
      this.run('SetupPairVeths', () => this.ops.namespaceId({ pid: init, kind: 'net' })),
      this.run('SetupPairVeths', () => this.ops.namespaceId({ pid: hostPid, kind: 'net' })),
    ]);
    if (outerNs === innerNs) {
      throw new FailedPreconditionError(`pid ${req.pid} shares the workspace's network namespace; it needs its own`);
    }
    const pair = await this.run('SetupPairVeths', () =>
      this.ops.setupPairVeths({ outerPid: init, targetPid: hostPid, cidr: this.config.vethCidr }),
    );
    this.logger.info({ pid: req.pid, hostPid, ...pair }, 'veth pair set up');
  }

  async workspaceInfo(): Promise<WorkspaceResources> {
    this.limiter.take('WorkspaceInfo');
    const cg = await this.requireCgroup('WorkspaceInfo');
    return this.run('WorkspaceInfo', async () => {
      const t0 = performance.now();
      const before = await cg.usage();
      await new Promise((r) => setTimeout(r, this.config.cpuSampleMs));
      const after = await cg.usage();
      const elapsedNs = (performance.now() - t0) * 1e6;
      const limits = await cg.limits();
      const machine = this.deps.machine ?? { cpus: availableParallelism(), memoryBytes: totalmem() };
      const usedMillicores =
        elapsedNs > 0 ? Math.max(0, Math.round(((after.cpuUsageNs - before.cpuUsageNs) / elapsedNs) * 1000)) : 0;
      return {
        cpu: {
          usedMillicores,
          limitMillicores: limits.cpu
            ? Math.round((limits.cpu.quotaUs / limits.cpu.periodUs) * 1000)
            : machine.cpus * 1000,
        },
        memory: {
          usedBytes: after.memoryWorkingSetBytes,
          limitBytes: limits.memoryBytes ?? machine.memoryBytes,
        },
      };
    });
  }

  private async mount(kind: MountKind, req: { target: string; pid: number }): Promise<void> {
    const rpc = kind === 'proc' ? 'MountProc' : 'MountSysfs';
    this.assertTarget(req.target);
    this.assertPid(req.pid, 'pid');
    this.assertNamespaceOps(rpc);
    const hostPid = await this.confinedPid(req.pid, 'pid');
    const key = await this.mountKey(hostPid, req.target);
    if (this.mounts.has(key)) {
      throw new FailedPreconditionError(`${rpc}: the target is already mounted by this service`);
    }
    if (this.mounts.size >= MAX_TRACKED_MOUNTS) {
      throw new ResourceExhaustedError(`${rpc}: this workspace has ${MAX_TRACKED_MOUNTS} mounts made by this service`);
    }
    await this.run(rpc, () =>
      kind === 'proc'
        ? // The workspace names the target: an existing directory only, never a `mkdir -p` by root along its links.
          this.ops.mountProc({ pid: hostPid, target: req.target, createTarget: false })
        : this.ops.mountSysfs({ pid: hostPid, target: req.target, createTarget: false }),
    );
    this.mounts.set(key, { kind, hostPid, mountNs: await this.mountNsOf(hostPid), target: req.target });
    this.logger.info({ pid: req.pid, hostPid, target: req.target }, `mounted ${kind}`);
  }

  private async umount(kind: MountKind, req: { target: string; pid: number }): Promise<void> {
    const rpc = kind === 'proc' ? 'UmountProc' : 'UmountSysfs';
    this.assertTarget(req.target);
    this.assertPid(req.pid, 'pid');
    this.assertNamespaceOps(rpc);
    const hostPid = await this.confinedPid(req.pid, 'pid');
    await this.run(rpc, () => this.ops.unmount({ pid: hostPid, target: req.target }));
    this.mounts.delete(await this.mountKey(hostPid, req.target));
    this.logger.info({ pid: req.pid, hostPid, target: req.target }, `unmounted ${kind}`);
  }

  private async mountKey(hostPid: number, target: string): Promise<string> {
    return `${await this.mountNsOf(hostPid)}:${target}`;
  }

  private mountNsOf(hostPid: number): Promise<string> {
    return this.run('mount', () => this.ops.namespaceId({ pid: hostPid, kind: 'mount' }));
  }

  private async unmountAll(): Promise<unknown[]> {
    const failures: unknown[] = [];
    for (const [key, m] of [...this.mounts.entries()].reverse()) {
      try {
        // Through the workspace's process as it is now, never the pid recorded at mount time: that pid may belong to
        // a host process by now (pid reuse), and an unmount in its namespace would take the host's mounts. Every
        // tracked mount is in the workspace's own mount namespace (see confinedPid), so its process reaches them all.
        const pid = await this.initPid();
        if ((await this.ops.namespaceId({ pid, kind: 'mount' })) !== m.mountNs) {
          this.mounts.delete(key); // the namespace it was made in is gone, and its mounts with it
          continue;
        }
        await this.ops.unmount({ pid, target: m.target, lazy: true });
        this.mounts.delete(key);
      } catch (e) {
        // A process or namespace that is gone took its mounts with it.
        if (isNsinsiderError(e) && (e.kind === 'not-found' || e.code === 'ENOTMOUNTED')) {
          this.mounts.delete(key);
          continue;
        }
        this.logger.warn({ err: e, target: m.target }, 'unmount during teardown failed');
        failures.push(toIwsError(e, 'Teardown'));
      }
    }
    return failures;
  }

  private async nfsUnsupported(rpc: string): Promise<never> {
    const supported = await (this.deps.nfsSupported ?? kernelHasNfs)();
    if (!supported) {
      throw new FailedPreconditionError(
        `${rpc}: NFS is not supported on this kernel (no nfs/nfs4 in /proc/filesystems)`,
      );
    }
    throw new UnimplementedError(`${rpc}: NFS mounts are not implemented by this daemon`);
  }

  private async initPid(): Promise<number> {
    const p = typeof this.workspace.initPid === 'function' ? await this.workspace.initPid() : this.workspace.initPid;
    if (p === undefined || !Number.isSafeInteger(p) || p <= 0) {
      throw new FailedPreconditionError(`workspace ${this.workspace.workspaceId} has no running process`);
    }
    return p;
  }

  /** Translates a pid of the workspace's pid namespace; pids of other workspaces or the host never match. */
  private async hostPid(nsPid: number, field: string): Promise<number> {
    const anchorPid = await this.initPid();
    try {
      return await this.ops.resolveHostPid({ nsPid, anchorPid });
    } catch (e) {
      if (isNsinsiderError(e) && e.kind === 'not-found') {
        throw new NotFoundError(`${field} ${nsPid} is not a process of workspace ${this.workspace.workspaceId}`, {
          cause: e,
        });
      }
      throw toIwsError(e, 'resolve pid');
    }
  }

  private assertNamespaceOps(rpc: string): void {
    if (!this.config.namespaceOps) {
      throw new FailedPreconditionError(
        `${rpc}: namespace operations are turned off on this node (the in-workspace service's namespaceOps setting)`,
      );
    }
  }

  /**
   * A pid the namespace operations may act on: a process of the workspace ({@link hostPid}), running as the
   * workspace's uid, in the workspace's own mount namespace. The tools run as root inside the target's mount
   * namespace and are looked up there: in one the workspace made (an unprivileged user namespace may mount anything
   * over /usr/bin in its own mount namespace) they would be the workspace's programs, run as root. The uid keeps
   * out root processes that sit in the workspace's pid namespace for a moment (the daemon's own helpers).
   */
  private async confinedPid(nsPid: number, field: string): Promise<number> {
    const hostPid = await this.hostPid(nsPid, field);
    const [own, workspace] = await Promise.all([this.mountNsOf(hostPid), this.mountNsOf(await this.initPid())]);
    if (own !== workspace) {
      throw new FailedPreconditionError(
        `${field} ${nsPid} is in a mount namespace of its own; namespace operations act only in the workspace's own`,
      );
    }
    const expected = this.workspace.uid;
    if (expected !== undefined) {
      const uid = await processUid(hostPid);
      if (uid !== expected) {
        throw new FailedPreconditionError(`${field} ${nsPid} does not run as the workspace's user`);
      }
    }
    return hostPid;
  }

  private assertPid(pid: number, field: string): void {
    if (!Number.isSafeInteger(pid) || pid <= 0) {
      throw new InvalidArgumentError(field, `must be a positive pid, got ${String(pid)}`);
    }
  }

  private assertTarget(target: string): void {
    if (typeof target !== 'string' || !target.startsWith('/')) {
      throw new InvalidArgumentError('target', 'must be an absolute path');
    }
    if (target.length > MAX_TARGET_LENGTH) {
      throw new InvalidArgumentError('target', `must be at most ${MAX_TARGET_LENGTH} characters`);
    }
    if (target.split('/').includes('..') || target.includes('\0')) {
      throw new InvalidArgumentError('target', "must not contain '..' or NUL");
    }
    // A proc or sysfs over the workspace's own system directories only breaks the workspace (and every later call
    // that must run a program in its namespaces): nested containers mount below a directory of their own.
    const top = target.split('/').filter(Boolean)[0];
    if (top === undefined || systemTops.has(top)) {
      throw new InvalidArgumentError('target', `must not be '/' or under /${top ?? ''} (a system directory)`);
    }
  }

  private assertAllowedHostRange(m: IdMapping, i: number): void {
    if (!Number.isSafeInteger(m.size) || m.size <= 0) {
      throw new InvalidArgumentError(`mapping[${i}].size`, 'must be at least 1');
    }
    const within = (r: IdRange): boolean => m.hostId >= r.start && m.hostId + m.size <= r.start + r.size;
    if (m.containerId === 0 && m.size === 1 && within(this.config.rootIdRange)) return;
    if (this.config.userIdRanges.some(within)) return;
    const allowed = [this.config.rootIdRange, ...this.config.userIdRanges]
      .map((r) => `[${r.start}, ${r.start + r.size})`)
      .join(', ');
    throw new InvalidArgumentError(
      `mapping[${i}].host_id`,
      `host ids ${m.hostId}..${m.hostId + m.size - 1} are outside the allowed ranges ${allowed} (the root range maps container id 0 only)`,
    );
  }

  private requireCgroupAccess(): CgroupAccess {
    if (!this.cgroups) {
      throw new FailedPreconditionError('this daemon has no cgroup access configured');
    }
    return this.cgroups;
  }

  private async cgroupPath(): Promise<string | undefined> {
    const path = this.workspace.cgroupPath;
    return typeof path === 'function' ? await path() : path;
  }

  private async requireCgroup(rpc: string): Promise<ReturnType<CgroupAccess['cgroup']>> {
    const path = await this.cgroupPath();
    if (path === undefined) {
      throw new FailedPreconditionError(`${rpc}: workspace ${this.workspace.workspaceId} has no cgroup of its own`);
    }
    return this.requireCgroupAccess().cgroup(path);
  }

  private async run<T>(what: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (e) {
      if (isWorkbayError(e)) throw e;
      throw toIwsError(e, what);
    }
  }
}

/** Reads /proc/filesystems: can this kernel mount NFS at all? */
/** The real uid of a host process (undefined when it is gone). */
async function processUid(hostPid: number): Promise<number | undefined> {
  try {
    const status = await readFile(`/proc/${hostPid}/status`, 'utf8');
    const line = /^Uid:\s+(\d+)/m.exec(status);
    return line ? Number(line[1]) : undefined;
  } catch {
    return undefined; // gone: refused as not the workspace's
  }
}

export async function kernelHasNfs(path = '/proc/filesystems'): Promise<boolean> {
  // Deliberate: no /proc/filesystems (not Linux) means no NFS; callers then refuse NFS mounts.
  const text = await readFile(path, 'utf8').catch(() => '');
  return text.split('\n').some((l) => /\bnfs4?$/.test(l.trim()));
}
