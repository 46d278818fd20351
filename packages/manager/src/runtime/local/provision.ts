import { stat } from 'node:fs/promises';
import path from 'node:path';
import { FailedPreconditionError } from '@workbay/api';
import type { RuntimeWorkspaceSpec } from '@workbay/api';
import type { Cgroup } from '@workbay/nsinsider';
import type { LocalRuntimeConfig } from './config.js';
import { createWorkspaceCgroup, workspaceCgroupName } from './isolation.js';
import type { LocalIsolation } from './isolation.js';
import { hostnameFor, planLaunch } from './launch.js';
import type { LaunchPlan } from './launch.js';
import type { WorkspaceNet, WorkspaceNetworks } from './network.js';
import type { Prelaunched } from './prelaunch.js';
import type { PortAllocator } from './ports.js';
import { wrapperInvocation } from './wrapper.js';
import type { WrapperInvocation } from './wrapper.js';

/**
 * What a workspace holds on the host that does not depend on its content: the IDE host port when not isolated, its
 * cgroup and its network. `release` gives all of it back.
 */
export interface HostResources {
  readonly idePort?: number;
  readonly cgroup?: Cgroup;
  readonly net?: WorkspaceNet;
  /** The wrapper spawned ahead, waiting at its gate (prelaunch.ts); `release` abandons it. */
  readonly prelaunched?: Prelaunched;
  release(): Promise<void>;
}

/** What a workspace holds on the host before its process runs; `undo` gives all of it back. */
export interface Provisioned {
  readonly contentDir: string;
  readonly plan: LaunchPlan;
  readonly cgroup?: Cgroup;
  readonly net?: WorkspaceNet;
  readonly prelaunched?: Prelaunched;
  undo(): Promise<void>;
}

interface HostOptions {
  readonly spec: RuntimeWorkspaceSpec;
  /** The runtime's tag (of its state dir), part of the cgroup's name so that its leftovers are known. */
  readonly tag: string;
  readonly isolation: LocalIsolation;
  readonly networks?: WorkspaceNetworks;
  readonly ports: PortAllocator;
}

/**
 * Creates the host resources in order (IDE host port when not isolated, cgroup, network), giving back what was made
 * when a later step fails. Needs no content: it may run while the daemon still produces it.
 */
export async function reserveHost(options: HostOptions): Promise<HostResources> {
  const { spec, isolation, networks, ports } = options;
  const id = spec.instanceId;
  const idePort = isolation.namespaces ? undefined : await ports.allocate(id, spec.ports[0] ?? 0);
  let cgroup: Cgroup | undefined;
  let net: WorkspaceNet | undefined;
  const release = async (): Promise<void> => {
    ports.release(id);
    // Deliberate: release runs while a start is already failing with its own error (or for a start that never
    // came), which is what the caller must see; leftovers of a failed release are swept by the next runtime start
    // (cgroups and networks are named with the runtime's tag).
    if (cgroup) await cgroup.remove().catch(() => undefined);
    if (net) await networks?.release(net).catch(() => undefined);
  };
  try {
    try {
      if (isolation.cgroups) {
        cgroup = await createWorkspaceCgroup(
          isolation.cgroups,
          isolation.cgroupParent ?? 'workbay',
          workspaceCgroupName(options.tag, id),
          spec.resources,
          isolation,
        );
      }
    } catch (cause) {
      throw new FailedPreconditionError(`could not set up the cgroup for workspace instance '${id}'`, { cause });
    }
    try {
      if (networks) net = await networks.allocate(id);
    } catch (cause) {
      if (cause instanceof Error && cause.name === 'ResourceExhaustedError') throw cause;
      throw new FailedPreconditionError(`could not set up the network of workspace instance '${id}'`, { cause });
    }
    return { idePort, cgroup, net, release };
  } catch (error) {
    await release();
    throw error;
  }
}

/**
 * Checks the content directory, takes the host resources (`host`, reserved ahead by the runtime's prepare, or
 * reserved here) and plans the launch, giving the resources back when a step fails.
 */
export async function provision(
  options: HostOptions & { readonly config: LocalRuntimeConfig; readonly host?: HostResources },
): Promise<Provisioned> {
  const { spec, config, isolation } = options;
  const contentDir = path.resolve(spec.contentDir);
  // A missing or unreadable content directory is answered just below with FAILED_PRECONDITION naming it.
  const contentStat = await stat(contentDir).catch(() => undefined);
  if (!contentStat?.isDirectory()) {
    await options.host?.release();
    throw new FailedPreconditionError(`workspace content directory '${contentDir}' does not exist`);
  }
  const host = options.host ?? (await reserveHost(options));
  try {
    const plan = await planLaunch({
      spec,
      config,
      contentDir,
      contentStat,
      isolated: isolation.namespaces,
      allocatedIdePort: host.idePort,
    });
    return {
      contentDir,
      plan,
      cgroup: host.cgroup,
      net: host.net,
      ...(host.prelaunched ? { prelaunched: host.prelaunched } : {}),
      undo: host.release,
    };
  } catch (error) {
    await host.release();
    throw error;
  }
}

/** Where a workspace's wrapper writes: the exit status and the log, and the log's cap. */
export interface WrapperFiles {
  readonly exitFile: string;
  readonly logFile: string;
  /** The cap the log writer keeps an isolated workspace's log under; absent: `cat` appends (see wrapper.ts). */
  readonly logWriterMaxBytes?: number;
}

/** The wrapper's invocation for a workspace, and whether its log writer caps the log itself. */
export function workspaceWrapper(
  p: Pick<Provisioned, 'contentDir' | 'plan' | 'cgroup' | 'net'>,
  spec: RuntimeWorkspaceSpec,
  networks: WorkspaceNetworks | undefined,
  files: WrapperFiles,
  gated = false,
): { readonly invocation: WrapperInvocation; readonly logWriter: boolean } {
  const identity = p.plan.identity;
  const isolated = p.net !== undefined && identity !== undefined && networks !== undefined;
  const logWriter = isolated && files.logWriterMaxBytes !== undefined;
  const invocation = wrapperInvocation({
    exitFile: files.exitFile,
    cgroupProcsFiles: p.cgroup ? p.cgroup.dirs().map((d) => path.join(d, 'cgroup.procs')) : [],
    sandbox: isolated
      ? {
          netnsPath: networks.netnsPath(p.net),
          hostname: hostnameFor(spec.workspaceId),
          contentDir: p.contentDir,
          iwsDir: p.plan.iwsDir,
          hideDirs: p.plan.hideDirs,
          privateDirs: p.plan.privateDirs,
          detachDirs: p.plan.detachDirs,
          nestedNamespaces: p.plan.nestedNamespaces,
          syscallFilter: p.plan.syscallFilter,
          uid: identity.uid,
          gid: identity.gid,
        }
      : undefined,
    ...(logWriter ? { log: { file: files.logFile, maxBytes: files.logWriterMaxBytes! } } : {}),
    command: p.plan.command,
    env: p.plan.env,
    ...(gated ? { gated: { contentDir: p.contentDir } } : {}),
  });
  return { invocation, logWriter };
}
