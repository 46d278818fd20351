/**
 * A workspace's wrapper spawned ahead of its start (the runtime's prepare), waiting at its gate (wrapper.ts) while the
 * daemon still produces the content: the spawn (a round trip to the spawner, spawner.ts, and its fork) and the
 * shell's start-up are then off the start's path. Nothing of the workspace runs before the start opens the gate,
 * and a start that asks for anything else than what the wrapper was spawned for gets a wrapper of its own. Only
 * where the workspace is not isolated: an isolated wrapper's arguments name the content's owner, known once the
 * content exists.
 */
import { rm } from 'node:fs/promises';
import path from 'node:path';
import type { PluginLogger, RuntimeWorkspaceSpec } from '@workbay/api';
import type { LocalRuntimeConfig } from './config.js';
import { planLaunch } from './launch.js';
import type { WorkspaceNetworks } from './network.js';
import { workspaceWrapper } from './provision.js';
import type { HostResources, WrapperFiles } from './provision.js';
import type { SpawnedWrapper, WrapperSpawner } from './spawner.js';
import type { WrapperInvocation } from './wrapper.js';

/** What tells two invocations apart: everything the wrapper is given. */
const invocationKey = (invocation: WrapperInvocation): string =>
  JSON.stringify([invocation.file, invocation.args, invocation.env]);

export class Prelaunched {
  private opened = false;
  private abandoned = false;

  private constructor(
    private readonly wrapper: SpawnedWrapper,
    private readonly key: string,
    private readonly logFile: string,
  ) {}

  /**
   * Spawns `gated` (the wrapper with its gate) in `/`, for a start that will run `ungated` (the same wrapper as a start
   * would spawn it): its output goes to `logFile` from the first byte.
   */
  static async spawn(
    spawner: WrapperSpawner,
    ungated: WrapperInvocation,
    gated: WrapperInvocation,
    logFile: string,
  ): Promise<Prelaunched> {
    const wrapper = await spawner.spawn(gated, { cwd: '/', logFile, gate: true });
    return new Prelaunched(wrapper, invocationKey(ungated), logFile);
  }

  /**
   * The wrapper for a start that runs `invocation`, its gate opened: undefined when it was spawned for another
   * invocation, was abandoned, or is no longer waiting (the start then spawns one).
   */
  open(invocation: WrapperInvocation): SpawnedWrapper | undefined {
    if (this.opened || this.abandoned || invocationKey(invocation) !== this.key) return undefined;
    if (!this.wrapper.openGate()) return undefined;
    this.opened = true;
    return this.wrapper;
  }

  /**
   * Ends a wrapper whose gate was never opened, before it ran anything: its gate closes, it exits 125, and its log
   * (empty: the wrapper writes nothing before its gate) goes. An opened one is the workspace's: left alone.
   */
  async abandon(): Promise<void> {
    if (this.opened || this.abandoned) return;
    this.abandoned = true;
    this.wrapper.closeGate();
    await rm(this.logFile, { force: true });
  }
}

/**
 * `host` with the workspace's wrapper spawned ahead, its `release` abandoning that wrapper first; `host` as it is where
 * that fails (the start then spawns one itself, and answers for it). `clear` removes an earlier run's files first.
 */
export async function withPrelaunch(options: {
  readonly spec: RuntimeWorkspaceSpec;
  readonly host: HostResources;
  readonly config: LocalRuntimeConfig;
  readonly networks: WorkspaceNetworks | undefined;
  readonly files: WrapperFiles;
  readonly clear: () => Promise<void>;
  readonly spawner: WrapperSpawner;
  readonly logger: PluginLogger;
}): Promise<HostResources> {
  const { spec, host, files } = options;
  try {
    const contentDir = path.resolve(spec.contentDir);
    const plan = await planLaunch({
      spec,
      config: options.config,
      contentDir,
      isolated: false,
      allocatedIdePort: host.idePort,
    });
    const target = { contentDir, plan, cgroup: host.cgroup, net: host.net };
    await options.clear();
    const prelaunched = await Prelaunched.spawn(
      options.spawner,
      workspaceWrapper(target, spec, options.networks, files).invocation,
      workspaceWrapper(target, spec, options.networks, files, true).invocation,
      files.logFile,
    );
    return {
      ...host,
      prelaunched,
      release: async () => {
        await prelaunched.abandon();
        await host.release();
      },
    };
  } catch (error) {
    // Deliberate: see the function comment.
    options.logger.debug({ instanceId: spec.instanceId, err: error }, 'spawning the wrapper ahead of the start failed');
    return host;
  }
}
