import { FailedPreconditionError, ResourceExhaustedError } from '@workbay/api';
import type { PluginLogger } from '@workbay/api';
import type { NamespaceOps } from '@workbay/nsinsider';
import { isNsinsiderError } from '@workbay/nsinsider';
import type { IwsConfig } from './context.js';
import { toIwsError } from './error-mapping.js';
import type { WorkspacePids } from './request-checks.js';
import { assertNamespaceOps, assertPid, assertTarget, run } from './request-checks.js';

export type MountKind = 'proc' | 'sysfs';

export interface TrackedMount {
  kind: MountKind;
  hostPid: number;
  /** The mount namespace it was made in (the workspace's own). */
  mountNs: string;
  target: string;
}

/** Mounts one workspace may hold through this service at once (each is tracked until Teardown). */
const MAX_TRACKED_MOUNTS = 64;

/** The proc and sysfs mounts one workspace made through this service, tracked until they are unmounted. */
export class TrackedMounts {
  private readonly mounts = new Map<string, TrackedMount>();

  constructor(
    private readonly ops: NamespaceOps,
    private readonly pids: WorkspacePids,
    private readonly config: IwsConfig,
    private readonly logger: PluginLogger,
  ) {}

  /** Mounts made through this service and not yet unmounted (a snapshot). */
  get active(): ReadonlyArray<Readonly<TrackedMount>> {
    return [...this.mounts.values()].map((m) => ({ ...m }));
  }

  async mount(kind: MountKind, req: { target: string; pid: number }): Promise<void> {
    const rpc = kind === 'proc' ? 'MountProc' : 'MountSysfs';
    const { hostPid, init, key } = await this.checked(rpc, req);
    if (this.mounts.has(key)) {
      throw new FailedPreconditionError(`${rpc}: the target is already mounted by this service`);
    }
    if (this.mounts.size >= MAX_TRACKED_MOUNTS) {
      throw new ResourceExhaustedError(`${rpc}: this workspace has ${MAX_TRACKED_MOUNTS} mounts made by this service`);
    }
    await run(rpc, () =>
      kind === 'proc'
        ? // The workspace names the target: an existing directory only, never a `mkdir -p` by root along its links.
          this.ops.mountProc({ pid: init, target: req.target, createTarget: false })
        : this.ops.mountSysfs({ pid: init, target: req.target, createTarget: false }),
    );
    this.mounts.set(key, { kind, hostPid, mountNs: await this.pids.mountNsOf(init), target: req.target });
    this.logger.info({ pid: req.pid, hostPid, target: req.target }, `mounted ${kind}`);
  }

  /**
   * A mount request's checks, and where it acts: the tools enter the sandbox init's namespaces, never the named
   * process's (see WorkspacePids.sandboxInit): the same mount namespace, as confinedPid checked, but one the
   * workspace cannot swap meanwhile.
   */
  private async checked(
    rpc: string,
    req: { target: string; pid: number },
  ): Promise<{ hostPid: number; init: number; key: string }> {
    assertTarget(req.target);
    assertPid(req.pid, 'pid');
    assertNamespaceOps(this.config, rpc);
    const { hostPid, init } = await this.pids.confinedPid(req.pid, 'pid');
    return { hostPid, init, key: await this.mountKey(init, req.target) };
  }

  async umount(kind: MountKind, req: { target: string; pid: number }): Promise<void> {
    const rpc = kind === 'proc' ? 'UmountProc' : 'UmountSysfs';
    const { hostPid, init, key } = await this.checked(rpc, req);
    // Only what this service mounted, of this kind: any other target would be one of the sandbox's own mounts
    // (its /tmp, the tmpfs hiding other workspaces, /proc), and unmounting it bared the host's (red-team round 2).
    if (this.mounts.get(key)?.kind !== kind) {
      throw new FailedPreconditionError(`${rpc}: the target is not a ${kind} mount made by this service`);
    }
    await run(rpc, () => this.ops.unmount({ pid: init, target: req.target }));
    this.mounts.delete(key);
    this.logger.info({ pid: req.pid, hostPid, target: req.target }, `unmounted ${kind}`);
  }

  async unmountAll(): Promise<unknown[]> {
    const failures: unknown[] = [];
    for (const [key, m] of [...this.mounts.entries()].reverse()) {
      try {
        // Through the sandbox init, never the pid recorded at mount time: that pid may belong to a host process by
        // now (pid reuse), and an unmount in its namespace would take the host's mounts. Every tracked mount is in
        // the workspace's own mount namespace, the init's (see WorkspacePids.sandboxInit).
        const pid = await this.pids.sandboxInit();
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

  private async mountKey(hostPid: number, target: string): Promise<string> {
    return `${await this.pids.mountNsOf(hostPid)}:${target}`;
  }
}
