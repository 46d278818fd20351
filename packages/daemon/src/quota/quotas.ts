import { EMPTY, Subject } from 'rxjs';
import type { Observable } from 'rxjs';
import type { PluginLogger } from '@workbay/api';
import { silentLogger } from '@workbay/api';
import { FailedPreconditionError } from '../errors.js';
import type { HostOps } from '../host-ops/host-ops.js';
import { treeBytes } from '../util/du.js';
import type { LoopAdmissionSettings } from './admission.js';
import type { DiskQuota, QuotaExceeded, QuotaHandle, QuotaMode, QuotaSupport, QuotaUsage } from './disk-quota.js';
import { BlkioThrottle, hasIoLimits, probeIoThrottle } from './io-throttle.js';
import type { IoLimits } from './io-throttle.js';
import { LoopDiskQuota } from './loop-quota.js';

export { LoopDiskQuota, minimumLoopImageBytes } from './loop-quota.js';
export { ImageAdmission, loopAdmissionDefaults } from './admission.js';
export type { AdmissionSnapshot, LoopAdmissionSettings } from './admission.js';

/** No quota at all. */
export class NoDiskQuota implements DiskQuota {
  readonly mode = 'none';
  readonly exceeded$: Observable<QuotaExceeded> = EMPTY;
  async apply(_id: string, _dir: string, bytes: number): Promise<QuotaHandle> {
    return { mode: 'none', bytes };
  }
  async restore(): Promise<void> {}
  async release(): Promise<void> {}
  async usage(_id: string, dir: string, handle: QuotaHandle): Promise<QuotaUsage> {
    return { usedBytes: await treeBytes(dir), limitBytes: handle.bytes };
  }
  async close(): Promise<void> {}
}

/**
 * XFS project quotas. Kept small on purpose: Workbay's CI kernels have no quota support, so this path is
 * probed and reported as unavailable there. Project ids are allocated from [1000, 10000) and persisted in the
 * session state; a soft limit is set first (so extraction cannot fail half-way) and replaced by the hard
 * limit once the content is in place.
 */
export class XfsDiskQuota implements DiskQuota {
  readonly mode = 'xfs';
  readonly exceeded$: Observable<QuotaExceeded> = EMPTY;
  private readonly used = new Set<number>();

  constructor(
    private readonly ops: HostOps,
    private readonly mountPoint: string,
  ) {}

  private allocate(): number {
    for (let id = 1000; id < 10000; id++) {
      if (!this.used.has(id)) {
        this.used.add(id);
        return id;
      }
    }
    throw new FailedPreconditionError('no free XFS project id in [1000, 10000)');
  }

  async apply(_instanceId: string, dir: string, bytes: number): Promise<QuotaHandle> {
    const projectId = this.allocate();
    try {
      await this.ops.xfsQuota(`project -s -d 1 -p ${dir} ${projectId}`, this.mountPoint);
      await this.ops.xfsQuota(`limit -p bhard=${bytes} ${projectId}`, this.mountPoint);
    } catch (error) {
      this.used.delete(projectId);
      throw error;
    }
    return { mode: 'xfs', bytes, projectId };
  }

  async restore(_instanceId: string, _dir: string, handle: QuotaHandle): Promise<void> {
    if (handle.projectId !== undefined) this.used.add(handle.projectId);
  }

  async release(_instanceId: string, _dir: string, handle: QuotaHandle): Promise<void> {
    if (handle.projectId === undefined) return;
    await this.ops.xfsQuota(`limit -p bsoft=0 bhard=0 ${handle.projectId}`, this.mountPoint);
    this.used.delete(handle.projectId);
  }

  async usage(_instanceId: string, dir: string, handle: QuotaHandle): Promise<QuotaUsage> {
    return { usedBytes: await treeBytes(dir), limitBytes: handle.bytes };
  }

  async close(): Promise<void> {}
}

/**
 * The last fallback: polls each workspace's usage and reports those over their limit on `exceeded$`
 * (once per crossing). Nothing is enforced by the kernel.
 */
export class WatchDiskQuota implements DiskQuota {
  readonly mode = 'watch';
  private readonly exceeded = new Subject<QuotaExceeded>();
  readonly exceeded$: Observable<QuotaExceeded> = this.exceeded.asObservable();
  private readonly watched = new Map<
    string,
    { dir: string; limit: number; timer: NodeJS.Timeout; over: boolean; running: boolean }
  >();

  constructor(
    private readonly intervalMs: number,
    private readonly logger: PluginLogger = silentLogger,
  ) {}

  /** Workspaces currently over their limit. */
  overLimit(): string[] {
    return [...this.watched.entries()].filter(([, w]) => w.over).map(([id]) => id);
  }

  private watch(instanceId: string, dir: string, limit: number): void {
    this.unwatch(instanceId);
    const state = {
      dir,
      limit,
      over: false,
      running: false,
      timer: setInterval(() => void this.check(instanceId), this.intervalMs),
    };
    state.timer.unref();
    this.watched.set(instanceId, state);
  }

  private unwatch(instanceId: string): void {
    const state = this.watched.get(instanceId);
    if (state) clearInterval(state.timer);
    this.watched.delete(instanceId);
  }

  /** Measures one workspace now (also used by tests and on demand). */
  async check(instanceId: string): Promise<QuotaUsage | undefined> {
    const state = this.watched.get(instanceId);
    if (!state || state.running) return undefined;
    state.running = true;
    try {
      const used = await treeBytes(state.dir);
      const over = used > state.limit;
      if (over && !state.over) {
        this.logger.warn({ instanceId, usedBytes: used, limitBytes: state.limit }, 'workspace is over its disk quota');
        this.exceeded.next({ workspaceId: instanceId, usedBytes: used, limitBytes: state.limit });
      }
      state.over = over;
      return { usedBytes: used, limitBytes: state.limit };
    } finally {
      state.running = false;
    }
  }

  async apply(instanceId: string, dir: string, bytes: number): Promise<QuotaHandle> {
    this.watch(instanceId, dir, bytes);
    return { mode: 'watch', bytes };
  }

  async restore(instanceId: string, dir: string, handle: QuotaHandle): Promise<void> {
    this.watch(instanceId, dir, handle.bytes);
  }

  async release(instanceId: string): Promise<void> {
    this.unwatch(instanceId);
  }

  async usage(_instanceId: string, dir: string, handle: QuotaHandle): Promise<QuotaUsage> {
    return { usedBytes: await treeBytes(dir), limitBytes: handle.bytes };
  }

  async close(): Promise<void> {
    for (const id of [...this.watched.keys()]) this.unwatch(id);
    this.exceeded.complete();
  }
}

/** Says which quota modes work on this host for a working area. */
export async function probeQuotaSupport(ops: HostOps, workingArea: string): Promise<QuotaSupport[]> {
  const caps = await ops.capabilities();
  const mount = await ops.mountOf(workingArea);
  const xfsReason = !caps.root
    ? 'needs root'
    : !caps.xfsQuota
      ? 'xfs_quota is not installed'
      : mount?.fsType !== 'xfs'
        ? `the working area is on ${mount?.fsType ?? 'an unknown filesystem'}, not XFS`
        : !/(^|,)(prjquota|pquota|prjjquota)(,|$)/.test(mount.options)
          ? 'the XFS working area is not mounted with prjquota (or the kernel has no quota support)'
          : undefined;
  return [
    { mode: 'xfs', available: xfsReason === undefined, ...(xfsReason ? { reason: xfsReason } : {}) },
    {
      mode: 'loop',
      available: caps.loopMount,
      ...(caps.loopMount
        ? {}
        : { reason: caps.root ? 'mkfs.ext4, mount or /dev/loop-control is missing' : 'needs root' }),
    },
    { mode: 'watch', available: true },
    { mode: 'none', available: true },
  ];
}

export interface QuotaSelection {
  readonly quota: DiskQuota;
  readonly support: readonly QuotaSupport[];
}

/** Creates the quota implementation for `mode` (`auto`: xfs, else loop, else watch). */
export async function createDiskQuota(
  mode: QuotaMode | 'auto',
  options: {
    ops: HostOps;
    workingArea: string;
    imageDir: string;
    watchIntervalMs: number;
    logger?: PluginLogger;
    /** loop: admission and preallocation (the daemon config's `quota` section fits); defaults otherwise. */
    loop?: Partial<LoopAdmissionSettings>;
    /** loop: each workspace's disk IO limits (quota/io-throttle.ts); none or all 0: not limited. */
    io?: IoLimits;
  },
): Promise<QuotaSelection> {
  const support = await probeQuotaSupport(options.ops, options.workingArea);
  const throttle = async (): Promise<BlkioThrottle | undefined> => {
    if (!options.io || !hasIoLimits(options.io)) return undefined;
    const probe = await probeIoThrottle();
    if (probe.available) {
      const limits = new BlkioThrottle(options.io);
      const lifted = await limits.liftDetachedLoops().catch((error: unknown) => {
        // Deliberate: a stale rule slows one loop device, it does not stop the daemon; the operator is told.
        options.logger?.warn({ err: error }, 'cannot check the blkio rules of detached loop devices');
        return [];
      });
      if (lifted.length > 0)
        options.logger?.info({ devices: lifted }, 'lifted IO limits left on detached loop devices');
      return limits;
    }
    // Deliberate: the disk quota still holds without them; the operator learns at start that IO is not limited.
    options.logger?.warn({ reason: probe.reason }, 'workspace disk IO limits (quota.io) are not enforced on this node');
    return undefined;
  };
  const pick = async (m: QuotaMode): Promise<DiskQuota> => {
    switch (m) {
      case 'xfs':
        return new XfsDiskQuota(options.ops, options.workingArea);
      case 'loop':
        return new LoopDiskQuota(options.ops, options.imageDir, options.logger, options.loop, await throttle());
      case 'watch':
        return new WatchDiskQuota(options.watchIntervalMs, options.logger);
      case 'none':
        return new NoDiskQuota();
    }
  };
  if (mode === 'auto') {
    const chosen = support.find((s) => s.available && s.mode !== 'none') as QuotaSupport;
    return { quota: await pick(chosen.mode), support };
  }
  const wanted = support.find((s) => s.mode === mode) as QuotaSupport;
  if (!wanted.available)
    throw new FailedPreconditionError(`quota mode '${mode}' is not available here: ${wanted.reason ?? 'unsupported'}`);
  return { quota: await pick(mode), support };
}
