import { access, constants, mkdir } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { FailedPreconditionError } from '@workbay/api';
import type { ClassResources, PluginLogger } from '@workbay/api';
import { CgroupController, mountCgroupsIfMissing, ownCgroupPath } from '@workbay/nsinsider';
import type { Cgroup, IoDeviceLimit } from '@workbay/nsinsider';
import type { TcpMemoryPolicy } from './cgroup-limits.js';
import { limitWorkspaceParent, tcpMemoryLimitFor, workspaceIoLimits } from './cgroup-limits.js';
import type { LocalRuntimeConfig } from './config.js';
import { raiseNodeTunables } from './node-tunables.js';

/** How the runtime isolates workspaces, decided once at creation from config and privileges. */
export interface LocalIsolation {
  /**
   * Workspaces run isolated: as an unprivileged uid (33333 inside, the content directory's owner on the host) in
   * their own user, network, pid, mount and uts namespaces. False: trusted processes of the manager's user.
   */
  readonly namespaces: boolean;
  /** Per-workspace cgroups, below `cgroupParent` (relative to the hierarchy root). */
  readonly cgroups?: CgroupController;
  readonly cgroupParent?: string;
  /** cgroup v1: how each workspace's TCP buffers are capped (undefined: v2, which counts them in memory.max). */
  readonly tcpMemory?: TcpMemoryPolicy;
  /** The cores all workspaces together may use (the parent's cap): a class asking for more gets this. */
  readonly cpuCores?: number;
  /** cgroup v1: each workspace's IO limits on the node's disks (`cgroupLimits.io`). */
  readonly ioLimits?: readonly IoDeviceLimit[];
  /** Said plainly wherever workspaces are not isolated: `workbay up`'s banner and each workspace's status. */
  readonly notice?: string;
  /**
   * Isolated workspaces' logs go through the log writer (log-writer.ts), which caps them itself: Perl is on the
   * PATH. Without it `cat` appends and the LogCap caps them from outside.
   */
  readonly logWriter?: boolean;
}

/** The host tools isolation needs (util-linux and iproute2, nftables). */
const isolationTools = ['unshare', 'nsenter', 'setpriv', 'ip', 'nft'];
const defaultPath = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/** The mount points every isolated workspace binds its content and service dir to (created once, as root). */
export const sandboxMountPoints = ['/workspace', '/.workbay'];

export async function decideIsolation(config: LocalRuntimeConfig, logger: PluginLogger): Promise<LocalIsolation> {
  const root = process.getuid?.() === 0;
  const user = os.userInfo().username;
  const missing: string[] = [];
  for (const tool of isolationTools) if (!(await findOnPath(tool))) missing.push(tool);
  let namespaces = false;
  let notice: string | undefined;
  if (config.isolation === 'namespaces') {
    if (!root) throw new FailedPreconditionError('runtime.local.isolation: isolation needs the manager to run as root');
    if (missing.length > 0) {
      throw new FailedPreconditionError(
        `runtime.local.isolation: isolation needs ${missing.join(', ')} (util-linux, iproute2, nftables)`,
      );
    }
    namespaces = true;
  } else if (config.isolation === 'auto') {
    namespaces = root && missing.length === 0;
    if (!root) {
      notice = `the manager does not run as root, so workspaces run as trusted processes of user '${user}' without isolation`;
    } else if (missing.length > 0) {
      notice = `${missing.join(', ')} not found, so workspaces run as trusted processes of root without isolation`;
    }
  } else {
    notice = `runtime.local.isolation is 'none', so workspaces run as trusted processes of user '${user}' without isolation`;
  }
  if (notice) logger.warn({}, notice);
  let logWriter = false;
  if (namespaces) {
    for (const dir of sandboxMountPoints) await mkdir(dir, { recursive: true, mode: 0o755 });
    if (config.nodeTunables) await raiseNodeTunables(logger);
    logWriter = (await findOnPath('perl')) !== undefined;
    if (!logWriter) {
      // Capped all the same, from outside: a workspace writing without pause then costs the manager CPU (a check at
      // every write it sees, ~14% of a core per flooding workspace measured) and the cap is overshot meanwhile.
      logger.warn(
        {},
        'perl not found: isolated workspaces’ logs are capped by the manager’s watch, not as they are written',
      );
    }
  }

  if (config.cgroups === 'off' || (config.cgroups === 'auto' && !root)) return { namespaces, notice, logWriter };
  if (!root) {
    throw new FailedPreconditionError(`runtime.local.cgroups: '${config.cgroups}' needs the manager to run as root`);
  }
  await mountCgroupsIfMissing().catch((error: unknown) =>
    logger.warn({ error: String(error) }, 'could not mount the cgroup controllers'),
  );
  const wanted = config.cgroups === 'v1' ? 'v1' : config.cgroups === 'v2' ? 'v2' : undefined;
  // A failed detection is "no usable hierarchy", handled below; its reason goes into the warning or the error.
  let detectError: string | undefined;
  const controller = await CgroupController.detect().catch((error: unknown) => {
    detectError = String(error).slice(0, 200);
    return undefined;
  });
  if (!controller || (wanted !== undefined && controller.version !== wanted)) {
    const message =
      `runtime.local.cgroups: no usable cgroup ${wanted ? `${wanted} ` : ''}hierarchy with cpu or memory controllers` +
      (detectError ? ` (${detectError})` : '');
    if (config.cgroups === 'auto') {
      logger.warn({}, `${message}; workspaces run without resource limits`);
      return { namespaces, notice, logWriter };
    }
    throw new FailedPreconditionError(message);
  }
  const parentPath = await cgroupParent(config, controller);
  const { tcpMemory, cpuCores } = await limitWorkspaceParent(controller, parentPath, config, logger);
  const ioLimits = await workspaceIoLimits(controller, config, logger);
  return {
    namespaces,
    notice,
    logWriter,
    cgroups: controller,
    cgroupParent: parentPath,
    tcpMemory,
    cpuCores,
    ...(ioLimits ? { ioLimits } : {}),
  };
}

/** v1: below the manager's own cgroup unless absolute; v2: from the root (the manager's own cgroup has processes). */
async function cgroupParent(config: LocalRuntimeConfig, controller: CgroupController): Promise<string> {
  const configured = config.cgroupParent ?? (controller.version === 'v1' ? 'workbay' : '/workbay');
  if (configured.startsWith('/')) return configured.slice(1);
  return path.posix.join(await ownCgroupPath(controller.layout), configured);
}

const cfsPeriodUs = 100_000;

/**
 * Creates the workspace's cgroup with the class limits, its IO limits on the node's disks and, with `tcpMemory`
 * (cgroup v1), its TCP buffer cap; the
 * wrapper joins it before it execs anything. A CPU limit above `cpuCores` (the parent's cap) is lowered to it: v1
 * refuses a child quota above its parent's, and no workspace could use more anyway.
 */
export async function createWorkspaceCgroup(
  controller: CgroupController,
  parent: string,
  name: string,
  resources: ClassResources,
  limits: Pick<LocalIsolation, 'tcpMemory' | 'cpuCores' | 'ioLimits'> = {},
): Promise<Cgroup> {
  const { tcpMemory, cpuCores, ioLimits } = limits;
  const cg = controller.cgroup(path.posix.join(parent, name));
  await cg.create();
  try {
    // v1 charges a socket to the cgroup only when the cap was written before the socket was made: here, before the
    // wrapper joins, so that every socket of the workspace is charged.
    if (tcpMemory) await cg.setTcpMemoryLimit(tcpMemoryLimitFor(tcpMemory, resources.memoryBytes));
    if (resources.cpu !== undefined) await setCpuWithin(cg, controller.cgroup(parent), resources.cpu, cpuCores);
    if (resources.memoryBytes !== undefined) await cg.setMemoryLimit(resources.memoryBytes);
    if (resources.pids !== undefined) await cg.setPidsLimit(resources.pids);
    if (ioLimits) await cg.setIoLimits(ioLimits);
  } catch (error) {
    await cg.remove().catch(() => undefined);
    throw error;
  }
  return cg;
}

/**
 * Sets `cores` on the workspace's cgroup, no more than the parent's cap. The cap this runtime set at its start is the
 * first bound; another runtime on the same parent (a restart with another reserve, specs in parallel) may have set
 * another since, so a refusal is retried once at the parent's current quota, if it is below what was asked.
 */
async function setCpuWithin(cg: Cgroup, parent: Cgroup, cores: number, cap: number | undefined): Promise<void> {
  const quotaOf = (n: number): number => Math.max(1000, Math.floor(n * cfsPeriodUs));
  try {
    await cg.setCpuLimit({ quotaUs: quotaOf(Math.min(cores, cap ?? Infinity)), periodUs: cfsPeriodUs });
  } catch (error) {
    const current = (await parent.limits()).cpu;
    const parentCores = current ? current.quotaUs / current.periodUs : Infinity;
    if (parentCores >= Math.min(cores, cap ?? Infinity)) throw error;
    await cg.setCpuLimit({ quotaUs: quotaOf(parentCores), periodUs: cfsPeriodUs });
  }
}

async function findOnPath(name: string): Promise<string | undefined> {
  for (const dir of (process.env['PATH'] ?? defaultPath).split(':')) {
    const candidate = path.join(dir, name);
    if (
      await access(candidate, constants.X_OK).then(
        () => true,
        () => false,
      )
    )
      return candidate;
  }
  return undefined;
}

/** A workspace cgroup's name below the parent: the runtime's tag (its state dir) and the instance id. */
export function workspaceCgroupName(tag: string, instanceId: string): string {
  return `${tag}-${instanceId}`;
}

/**
 * Removes this runtime's workspace cgroups (named with its `tag`) that belong to no recorded instance: left by a
 * runtime killed between reserving them and recording the start. Processes still in one were never recorded (a
 * workspace nobody manages) and are killed first. Other runtimes' cgroups (another tag) are not touched.
 */
export async function sweepWorkspaceCgroups(
  isolation: LocalIsolation,
  tag: string,
  recorded: ReadonlySet<string>,
  logger: PluginLogger,
): Promise<void> {
  if (!isolation.cgroups || !isolation.cgroupParent) return;
  const parent = isolation.cgroups.cgroup(isolation.cgroupParent);
  const depth = isolation.cgroupParent.split('/').length + 1;
  const prefix = workspaceCgroupName(tag, '');
  for (const cg of await parent.descendants()) {
    const name = path.posix.basename(cg.path);
    if (cg.path.split('/').length !== depth || !name.startsWith(prefix) || recorded.has(name.slice(prefix.length)))
      continue;
    logger.warn({ cgroup: cg.path }, 'removing a leftover workspace cgroup');
    // Deliberate: one that cannot go is logged and left; it holds no running workspace of ours either way.
    await cg
      .kill()
      .then(() => cg.remove())
      .catch((error: unknown) => logger.warn({ cgroup: cg.path, err: error }, 'could not remove a leftover cgroup'));
  }
}
