import { readFile } from 'node:fs/promises';
import { availableParallelism, totalmem } from 'node:os';
import { FailedPreconditionError, InvalidArgumentError, silentLogger, UnimplementedError } from '@workbay/api';
import type { PluginLogger, ResourceExhaustedError } from '@workbay/api';
import type { IdMapping, NamespaceOps } from '@workbay/nsinsider';
import { validateIdMappings } from '@workbay/nsinsider';
import type { CgroupAccess, InWorkspaceServiceDeps, IwsConfig, IwsWorkspaceContext } from './context.js';
import { defaultIwsConfig } from './context.js';
import { toIwsError } from './error-mapping.js';
import { FloodGuard } from './flood-guard.js';
import type { RateLimitRule } from './rate-limit.js';
import { InFlightLimit, onceOnly, RateLimiter } from './rate-limit.js';
import {
  assertAllowedHostRange,
  assertNamespaceOps,
  assertPid,
  assertTarget,
  run,
  WorkspacePids,
} from './request-checks.js';
import type { TrackedMount } from './tracked-mounts.js';
import { TrackedMounts } from './tracked-mounts.js';

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

/** Where the workspace's own processes end up after PrepareForUserNS / EvacuateCGroup. */
export const WORKSPACE_CGROUP = 'workspace';
export const USER_CGROUP = 'user';

/**
 * The in-workspace operations for one workspace, in domain terms. It validates every request (errors
 * name the wire field), confines pids to the workspace's pid namespace, and does the work through
 * {@link NamespaceOps}; it never spawns anything itself.
 */
export class InWorkspaceOperations {
  private readonly ops: NamespaceOps;
  private readonly workspace: IwsWorkspaceContext;
  private readonly cgroups: CgroupAccess | undefined;
  private readonly config: IwsConfig;
  private readonly logger: PluginLogger;
  private readonly limiter: RateLimiter;
  private readonly deps: InWorkspaceServiceDeps;
  private readonly pids: WorkspacePids;
  private readonly mounts: TrackedMounts;
  /** Calls of this workspace running at once (both services share it); the gRPC edge enforces it. */
  readonly inFlight: InFlightLimit;
  /** Counts the workspace's refused calls (the gRPC edge reports them) and takes its socket away when it floods. */
  readonly flood: FloodGuard;

  constructor(deps: InWorkspaceServiceDeps) {
    this.deps = deps;
    this.ops = deps.ops;
    this.workspace = deps.workspace;
    this.cgroups = deps.cgroups;
    this.config = { ...defaultIwsConfig, ...deps.config };
    this.logger = (deps.logger ?? silentLogger).child({ component: 'iws', workspaceId: deps.workspace.workspaceId });
    this.limiter = new RateLimiter(iwsRateLimits, deps.now ?? Date.now, this.config.rateLimits);
    this.inFlight = new InFlightLimit(this.config.maxInFlight);
    this.flood = new FloodGuard(this.config, {
      now: deps.now ?? Date.now,
      logger: this.logger,
      ...(deps.onFloodPenalty ? { onPenalty: deps.onFloodPenalty } : {}),
    });
    this.pids = new WorkspacePids(deps.ops, deps.workspace);
    this.mounts = new TrackedMounts(deps.ops, this.pids, this.config, this.logger);
  }

  /**
   * The refusal a call of `rpc` would get from its rate limit now, taking nothing: the gRPC edge refuses a flood
   * before any asynchronous work (see `service.ts`).
   */
  rateLimitRefusal(rpc: string): ResourceExhaustedError | undefined {
    return this.limiter.check(rpc);
  }

  /** Mounts made through this service and not yet unmounted (a snapshot). */
  get activeMounts(): ReadonlyArray<Readonly<TrackedMount>> {
    return this.mounts.active;
  }

  async prepareForUserNs(req: { usernsPid: number }): Promise<PrepareForUserNsResult> {
    if (!Number.isSafeInteger(req.usernsPid) || req.usernsPid < 0) {
      throw new InvalidArgumentError('userns_pid', 'must be a pid (or 0)');
    }
    assertNamespaceOps(this.config, 'PrepareForUserNS');
    this.limiter.take('PrepareForUserNS');
    // /dev is made in the sandbox init's mount namespace (see WorkspacePids.sandboxInit).
    const init = await this.pids.sandboxInit();
    if (req.usernsPid > 0) {
      await this.pids.confinedPid(req.usernsPid, 'userns_pid');
    }
    await run('prepare /dev', () =>
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
      await run('create workspace cgroup', () => cg.evacuateTo(WORKSPACE_CGROUP));
    }
    this.logger.info({ usernsPid: req.usernsPid }, 'prepared for user namespace');
    return { fsShift: 'shiftfs', persistentVolumeClaim: false };
  }

  async writeIdMapping(req: { pid: number; gid: boolean; mappings: readonly IdMapping[] }): Promise<void> {
    assertPid(req.pid, 'pid');
    if (req.mappings.length === 0) {
      throw new InvalidArgumentError('mapping', 'must contain at least one mapping');
    }
    req.mappings.forEach((m, i) => assertAllowedHostRange(this.config, m, i));
    try {
      validateIdMappings('WriteIDMapping', req.mappings);
    } catch (e) {
      throw toIwsError(e, 'WriteIDMapping');
    }
    assertNamespaceOps(this.config, 'WriteIDMapping');
    this.limiter.take('WriteIDMapping');
    const { hostPid } = await this.pids.confinedPid(req.pid, 'pid');
    await run('WriteIDMapping', () =>
      this.ops.writeIdMapping({ pid: hostPid, kind: req.gid ? 'gid' : 'uid', mappings: req.mappings }),
    );
    this.logger.info({ pid: req.pid, hostPid, gid: req.gid, lines: req.mappings.length }, 'wrote id mapping');
  }

  async evacuateCgroup(): Promise<void> {
    // Only for nested containers, like the namespace operations: on cgroup v1 whatever the workspace's processes do
    // in a child cgroup that it can create further children in (a delegated one) escapes the caps v1 does not apply
    // hierarchically (TCP socket buffers, IO throttling), red team round 11 T1.
    assertNamespaceOps(this.config, 'EvacuateCGroup');
    this.limiter.take('EvacuateCGroup');
    const cg = await this.requireCgroup('EvacuateCGroup');
    const delegate = this.config.cgroupDelegateTo;
    await run('EvacuateCGroup', async () => {
      // Stragglers still at the top go down first, then everything moves into the delegated leaf.
      await cg.evacuateTo(WORKSPACE_CGROUP);
      await cg
        .child(WORKSPACE_CGROUP)
        .evacuateTo(USER_CGROUP, delegate ? { chownUid: delegate.uid, chownGid: delegate.gid } : {});
    });
  }

  mountProc(req: { target: string; pid: number }): Promise<void> {
    return this.mounts.mount('proc', req);
  }

  umountProc(req: { target: string; pid: number }): Promise<void> {
    return this.mounts.umount('proc', req);
  }

  mountSysfs(req: { target: string; pid: number }): Promise<void> {
    return this.mounts.mount('sysfs', req);
  }

  umountSysfs(req: { target: string; pid: number }): Promise<void> {
    return this.mounts.umount('sysfs', req);
  }

  async mountNfs(req: { source: string; target: string; args: string; pid: number }): Promise<void> {
    if (!/^[^\s:/][^\s:]*:\/\S*$/.test(req.source)) {
      throw new InvalidArgumentError('source', "must look like 'server:/export'");
    }
    assertTarget(req.target);
    assertPid(req.pid, 'pid');
    await this.nfsUnsupported('MountNfs');
  }

  async umountNfs(req: { target: string; pid: number }): Promise<void> {
    assertTarget(req.target);
    assertPid(req.pid, 'pid');
    await this.nfsUnsupported('UmountNfs');
  }

  /** Unmounts what this service mounted. Fails on the first error. */
  async teardown(): Promise<boolean> {
    this.limiter.take('Teardown');
    const failures = await this.mounts.unmountAll();
    if (failures.length > 0) {
      throw failures[0]!;
    }
    return true;
  }

  /** Like {@link teardown} but carries on past errors (reported as `false`); optionally wipes the content. */
  async wipingTeardown(req: { doWipe: boolean }): Promise<boolean> {
    this.limiter.take('WipingTeardown');
    const failures = await this.mounts.unmountAll();
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
    assertPid(req.pid, 'pid');
    assertNamespaceOps(this.config, 'SetupPairVeths');
    const { hostPid, init } = await this.pids.confinedPid(req.pid, 'pid');
    const [outerNs, innerNs] = await Promise.all([
      run('SetupPairVeths', () => this.ops.namespaceId({ pid: init, kind: 'net' })),
      run('SetupPairVeths', () => this.ops.namespaceId({ pid: hostPid, kind: 'net' })),
    ]);
    if (outerNs === innerNs) {
      throw new FailedPreconditionError(`pid ${req.pid} shares the workspace's network namespace; it needs its own`);
    }
    const pair = await run('SetupPairVeths', () =>
      this.ops.setupPairVeths({ outerPid: init, targetPid: hostPid, cidr: this.config.vethCidr }),
    );
    this.logger.info({ pid: req.pid, hostPid, ...pair }, 'veth pair set up');
  }

  async workspaceInfo(): Promise<WorkspaceResources> {
    this.limiter.take('WorkspaceInfo');
    const cg = await this.requireCgroup('WorkspaceInfo');
    return run('WorkspaceInfo', async () => {
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

  private async nfsUnsupported(rpc: string): Promise<never> {
    const supported = await (this.deps.nfsSupported ?? kernelHasNfs)();
    if (!supported) {
      throw new FailedPreconditionError(
        `${rpc}: NFS is not supported on this kernel (no nfs/nfs4 in /proc/filesystems)`,
      );
    }
    throw new UnimplementedError(`${rpc}: NFS mounts are not implemented by this daemon`);
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
}

/** Reads /proc/filesystems: can this kernel mount NFS at all? */
export async function kernelHasNfs(path = '/proc/filesystems'): Promise<boolean> {
  // Deliberate: no /proc/filesystems (not Linux) means no NFS; callers then refuse NFS mounts.
  const text = await readFile(path, 'utf8').catch(() => '');
  return text.split('\n').some((l) => /\bnfs4?$/.test(l.trim()));
}
