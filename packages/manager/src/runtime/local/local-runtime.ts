import path from 'node:path';
import { Subject } from 'rxjs';
import type { Observable } from 'rxjs';
import { AlreadyExistsError, FailedPreconditionError, silentLogger } from '@workbay/api';
import { routeCommands } from '@workbay/nsinsider';
import type {
  PluginLogger,
  RuntimeEvent,
  RuntimeStatus,
  RuntimeWorkspaceSpec,
  StopOptions,
  WorkspaceRuntime,
} from '@workbay/api';
import { parseLocalRuntimeConfig } from './config.js';
import type { LocalRuntimeConfig, LocalRuntimeConfigInput } from './config.js';
import { decideIsolation, sweepWorkspaceCgroups } from './isolation.js';
import type { LocalIsolation } from './isolation.js';
import { WorkspaceNetworks } from './network.js';
import { PortAllocator } from './ports.js';
import { assertInstanceId, newInstance } from './instance.js';
import type { Instance } from './instance.js';
import { LogCap } from './log-cap.js';
import { confineManagerTcp } from './manager-tcp.js';
import type { ManagerTcpBudget } from './manager-tcp.js';
import { InstanceSupervisor } from './supervisor.js';
import { isSameProcessAlive, readProcStat } from './proc.js';
import { PreparedHosts } from './prepared-hosts.js';
import { provision, reserveHost, workspaceWrapper } from './provision.js';
import type { WrapperFiles } from './provision.js';
import { withPrelaunch } from './prelaunch.js';
import { WrapperSpawner } from './spawner.js';
import type { SpawnedWrapper } from './spawner.js';
import { newRecord, stateOfRecord } from './state.js';
import type { LocalWorkspaceState } from './state.js';
import { InstanceStore } from './store.js';
import type { InstanceRecord } from './store.js';

export type { LocalIsolation } from './isolation.js';
export type { LocalWorkspaceState } from './state.js';
export { defaultWorkspaceScript } from './launch.js';

export interface LocalRuntimeOptions {
  /** Raw or parsed config; raw input is validated (errors name the bad key). */
  readonly config?: LocalRuntimeConfigInput | LocalRuntimeConfig;
  readonly logger?: PluginLogger;
}

/**
 * Runs each workspace as a process tree on this machine (the embedded default runtime).
 *
 * - cwd is the content directory the daemon initialized; env is the spec's plus `PORT`/`WORKBAY_IDE_PORT`.
 * - As root (unless config says otherwise) each workspace is isolated: it runs as uid 33333 in its own user
 *   namespace (mapped to the content directory's owner on the host), with its own network namespace (a veth pair,
 *   an address of its own, host firewall), pid, mount (content at /workspace, private /tmp) and uts namespaces,
 *   and a cgroup with the class's CPU, memory and pids limits, joined before the workspace execs. Not root: plain
 *   processes of the manager's user, and every state says so (`notice`).
 * - Stop sends SIGTERM to the process group, waits the grace period, then SIGKILLs the group and the cgroup.
 * - A record per instance in `stateDir` lets a new runtime instance (after a manager restart) find processes that
 *   still run, watch them for exit, and tell a reused pid from the original process.
 *
 * An instance that exits on its own stays in `list()` (status `exited`, with the reason) until `stop()` is called
 * for it; `stop()` returns once the processes are gone and then forgets the instance.
 */
export class LocalRuntime implements WorkspaceRuntime {
  readonly kind = 'local';
  readonly config: LocalRuntimeConfig;
  readonly isolation: LocalIsolation;
  private readonly logger: PluginLogger;
  private readonly store: InstanceStore;
  private readonly ports = new PortAllocator();
  private readonly networks?: WorkspaceNetworks;
  private readonly instances = new Map<string, Instance>();
  private readonly starting = new Set<string>();
  private readonly prepared: PreparedHosts;
  private readonly spawner: WrapperSpawner;
  /** Keeps the logs of running workspaces (on the host's disk, outside their limits) under `logs.maxBytes`. */
  private readonly logCap: LogCap;
  private readonly supervisor: InstanceSupervisor;
  /** Names this runtime's netns and cgroups (from its state dir), so that its leftovers are known. */
  private readonly tag: string;
  private readonly eventsSubject = new Subject<RuntimeEvent>();
  private closed = false;
  private stopFirewallWatch: (() => void) | undefined;
  private unrouteCommands: (() => void) | undefined;

  /** Ready and exit events of all instances. */
  readonly events$: Observable<RuntimeEvent> = this.eventsSubject.asObservable();

  private constructor(config: LocalRuntimeConfig, isolation: LocalIsolation, logger: PluginLogger) {
    this.config = config;
    this.isolation = isolation;
    this.logger = logger;
    this.store = new InstanceStore(config.stateDir);
    this.prepared = new PreparedHosts(logger);
    this.spawner = new WrapperSpawner(logger);
    this.logCap = new LogCap({ ...config.logs, logger });
    this.tag = WorkspaceNetworks.tagFor(path.resolve(config.stateDir));
    if (isolation.namespaces) {
      this.networks = new WorkspaceNetworks(config.network.pool, this.tag, logger, {
        maxFlowsPerWorkspace: config.network.maxFlowsPerWorkspace,
        maxConnectionsPerWorkspace: config.network.maxConnectionsPerWorkspace,
        maxWorkspaces: config.network.maxWorkspaces,
        egress: config.network.egress,
      });
    }
    this.supervisor = new InstanceSupervisor({
      config,
      isolation,
      store: this.store,
      logCap: this.logCap,
      networks: this.networks,
      ports: this.ports,
      logger,
      closed: () => this.closed,
      emit: (event) => this.emit(event),
      stateOf: (instance) => this.stateOf(instance),
    });
  }

  /** Validates the config, decides the isolation, and re-adopts the instances recorded in `stateDir`. */
  static async create(options: LocalRuntimeOptions = {}): Promise<LocalRuntime> {
    // Parsing is idempotent, so an already parsed config (from the plugin factory) goes through it again.
    const config = parseLocalRuntimeConfig(options.config ?? {});
    const logger = options.logger ?? silentLogger;
    const isolation = await decideIsolation(config, logger);
    const runtime = new LocalRuntime(config, isolation, logger);
    await runtime.store.init();
    await runtime.networks?.ensureFirewall();
    await runtime.recover();
    const live = new Set(
      [...runtime.instances.values()].filter((i) => i.status !== 'exited').map((i) => i.record.instanceId),
    );
    await runtime.networks?.cleanupLeftovers(live);
    // Every recorded instance keeps its cgroup, an exited one too: its stop() still reads the OOM count and removes it.
    await sweepWorkspaceCgroups(isolation, runtime.tag, new Set(runtime.instances.keys()), logger);
    runtime.stopFirewallWatch = runtime.networks?.watchFirewall(config.network.firewallCheckIntervalMs);
    runtime.spawner.warm();
    // From here on, the tools of the workspaces' networks (ip, nft, nsenter) are forked by the spawner too.
    runtime.unrouteCommands = routeCommands((file, args, options) => runtime.spawner.run(file, args, options));
    logger.info(
      {
        stateDir: config.stateDir,
        isolated: isolation.namespaces,
        cgroups: isolation.cgroups ? isolation.cgroups.version : 'off',
        adopted: runtime.instances.size,
      },
      'local runtime ready',
    );
    return runtime;
  }

  /**
   * Caps the TCP buffers of this process, the manager's, and of `alsoPids` (its daemon) together (cgroup v1;
   * `cgroupLimits.managerTcpMemoryBytes`): for a process that runs the manager, such as `workbay up` (see
   * manager-tcp.ts). Returns the budget, or undefined when none was set.
   */
  async confineManagerTcp(alsoPids: readonly number[] = []): Promise<ManagerTcpBudget | undefined> {
    return confineManagerTcp(
      this.isolation.cgroups,
      this.tag,
      this.config.cgroupLimits.managerTcpMemoryBytes,
      this.logger,
      alsoPids,
    );
  }

  /** A synchronous snapshot of every instance the runtime knows. */
  snapshot(): LocalWorkspaceState[] {
    return [...this.instances.values()].map((i) => this.stateOf(i));
  }

  /**
   * Reserves the instance's cgroup, network and (when not isolated) IDE host port ahead of its start, while the
   * daemon still produces the content: an isolated start spends 20–50 ms there. Nothing runs until start().
   */
  async prepare(spec: RuntimeWorkspaceSpec): Promise<void> {
    this.assertOpen();
    const id = spec.instanceId;
    assertInstanceId(id);
    if (this.starting.has(id) || (this.instances.has(id) && this.instances.get(id)!.status !== 'exited')) return;
    await this.prepared.reserve(id, async () => {
      const host = await reserveHost({
        spec,
        tag: this.tag,
        isolation: this.isolation,
        networks: this.networks,
        ports: this.ports,
      });
      // Not over an earlier run's files, which the start reads before it forgets that run.
      if (this.isolation.namespaces || this.instances.has(id)) return host;
      return withPrelaunch({
        spec,
        host,
        config: this.config,
        networks: this.networks,
        files: this.wrapperFiles(id),
        clear: () => this.store.remove(id),
        spawner: this.spawner,
        logger: this.logger,
      });
    });
  }

  private wrapperFiles(id: string): WrapperFiles {
    return {
      exitFile: this.store.exitFile(id),
      logFile: this.store.logFile(id),
      ...(this.isolation.logWriter ? { logWriterMaxBytes: this.config.logs.maxBytes } : {}),
    };
  }

  async start(spec: RuntimeWorkspaceSpec): Promise<LocalWorkspaceState> {
    this.assertOpen();
    const id = spec.instanceId;
    assertInstanceId(id);
    if (this.starting.has(id) || (this.instances.has(id) && this.instances.get(id)!.status !== 'exited')) {
      throw new AlreadyExistsError(`workspace instance '${id}' is already running`);
    }
    this.starting.add(id);
    try {
      const previous = this.instances.get(id);
      if (previous) await this.forget(previous);
      return await this.launch(spec);
    } finally {
      this.starting.delete(id);
    }
  }

  private async launch(spec: RuntimeWorkspaceSpec): Promise<LocalWorkspaceState> {
    const id = spec.instanceId;
    const p = await provision({
      spec,
      config: this.config,
      isolation: this.isolation,
      networks: this.networks,
      ports: this.ports,
      tag: this.tag,
      host: await this.prepared.take(id),
    });
    const { plan, net, cgroup } = p;
    let child: SpawnedWrapper;
    let logWriter: boolean;
    try {
      const files = this.wrapperFiles(id);
      const wrapper = workspaceWrapper(p, spec, this.networks, files);
      logWriter = wrapper.logWriter;
      const prelaunched = p.prelaunched?.open(wrapper.invocation);
      if (prelaunched) child = prelaunched;
      else {
        await p.prelaunched?.abandon();
        await this.store.remove(id); // leftovers of an earlier run of the same id
        child = await this.spawner.spawn(wrapper.invocation, { cwd: p.contentDir, logFile: files.logFile });
      }
      // Capped from its first write: a workspace can fill hundreds of MB while the record below is fsynced. A log
      // its writer caps is not watched: the watch would cost the manager a check at every write it sees (~14% of a
      // core per workspace writing without pause) for nothing.
      if (!logWriter) await this.logCap.watch(id, this.store.logFile(id));
    } catch (cause) {
      await this.logCap.unwatch(id);
      await p.undo();
      throw new FailedPreconditionError(`could not launch workspace instance '${id}'`, { cause });
    }
    const pid = child.pid;
    const procStat = await readProcStat(pid);
    const isolated = this.isolation.namespaces;

    const record = newRecord({
      spec,
      plan,
      pid,
      startTime: procStat?.startTime,
      isolated,
      net,
      cgroup: cgroup ? { path: cgroup.path, dirs: cgroup.dirs() } : undefined,
      notice: plan.identity?.notice ?? this.isolation.notice,
      logWriter,
      config: this.config,
    });
    const instance = this.track(record, 'starting');
    instance.child = child;
    child.once('exit', (code, sig) => {
      instance.childExit = { code, signal: sig };
      void this.supervisor.finalize(instance);
    });
    // The spawner died first: the wrapper runs on, watched like one adopted after a restart.
    child.once('detached', () => this.watchDetached(instance, child));
    if (child.exitCode !== null || child.signalCode !== null) {
      instance.childExit = { code: child.exitCode, signal: child.signalCode };
      void this.supervisor.finalize(instance);
    } else if (child.detached) {
      this.watchDetached(instance, child);
    }
    await this.store.save(record);
    this.logger.info(
      {
        instanceId: id,
        pid,
        host: record.host,
        idePort: plan.idePort,
        image: spec.image,
        mapped: plan.mappedPattern ?? 'default-workspace',
        isolated,
      },
      'workspace process started',
    );
    this.supervisor.watchReadiness(instance);
    return this.stateOf(instance);
  }

  async stop(instanceId: string, options: StopOptions): Promise<void> {
    // A start that never came (the content failed, or the workspace was stopped first) leaves its reservation.
    await this.prepared.release(instanceId);
    const instance = this.instances.get(instanceId);
    if (!instance) return;
    if (instance.status !== 'exited') {
      await this.supervisor.terminate(instance, Math.max(0, options.gracePeriodMs));
    }
    await this.forget(instance);
  }

  async inspect(instanceId: string): Promise<LocalWorkspaceState | undefined> {
    const instance = this.instances.get(instanceId);
    return instance ? this.stateOf(instance) : undefined;
  }

  async list(): Promise<LocalWorkspaceState[]> {
    return this.snapshot();
  }

  /**
   * Stops watching. Workspace processes keep running and stay recorded, so that the next runtime instance on the
   * same `stateDir` adopts them.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.stopFirewallWatch?.();
    await this.logCap.close();
    // Running instances stay (a new runtime re-adopts them); resources reserved for starts to come go back.
    await this.prepared.releaseAll();
    for (const instance of this.instances.values()) {
      instance.readyAbort.abort();
      if (instance.pollTimer) clearTimeout(instance.pollTimer);
      if (instance.killTimer) clearTimeout(instance.killTimer);
      instance.child?.removeAllListeners();
    }
    this.unrouteCommands?.();
    this.spawner.close();
    this.eventsSubject.complete();
  }

  // ---------------------------------------------------------------------------------------------------------------

  private track(record: InstanceRecord, status: RuntimeStatus): Instance {
    const instance = newInstance(record, status);
    this.instances.set(record.instanceId, instance);
    return instance;
  }

  private stateOf(i: Instance): LocalWorkspaceState {
    return stateOfRecord(i.record, i.status, this.store.logFile(i.record.instanceId));
  }

  private async forget(instance: Instance): Promise<void> {
    const id = instance.record.instanceId;
    if (this.instances.get(id) === instance) this.instances.delete(id);
    this.ports.release(id);
    if (instance.pollTimer) clearTimeout(instance.pollTimer);
    await this.logCap.unwatch(id);
    await this.store.remove(id);
  }

  /** Adopts what the previous runtime instance left in `stateDir`. */
  private async recover(): Promise<void> {
    const { records, broken } = await this.store.loadAll();
    for (const file of broken) this.logger.warn({ file }, 'ignoring unreadable instance record');
    for (const record of records) {
      const instance = this.track(record, 'starting');
      if (record.exit) {
        instance.status = 'exited';
        instance.markExited();
        if (Date.now() - Date.parse(record.exit.at) > this.config.exitedRetentionMs) await this.forget(instance);
        continue;
      }
      if (record.net) this.networks?.hold(record.net);
      else this.ports.reserve(record.instanceId, record.idePort);
      const alive = await isSameProcessAlive(record.pid, record.startTime);
      if (!alive) {
        const current = await readProcStat(record.pid);
        if (current && current.startTime !== record.startTime) {
          this.logger.warn(
            { instanceId: record.instanceId, pid: record.pid },
            'the recorded pid now belongs to another process; treating the workspace as gone',
          );
        }
        await this.supervisor.finalize(instance);
        continue;
      }
      instance.status = record.stopRequested ? 'stopping' : record.ready ? 'running' : 'starting';
      this.logger.info({ instanceId: record.instanceId, pid: record.pid }, 're-adopted running workspace');
      if (!record.logWriter) await this.logCap.watch(record.instanceId, this.store.logFile(record.instanceId));
      this.supervisor.watchAdopted(instance);
      if (!record.ready && !record.stopRequested) this.supervisor.watchReadiness(instance);
    }
  }

  /** The spawner of `child` died while it ran: its exit is found by polling, as for an adopted wrapper. */
  private watchDetached(instance: Instance, child: SpawnedWrapper): void {
    if (instance.child !== child || this.closed) return;
    instance.child = undefined;
    this.logger.warn({ instanceId: instance.record.instanceId }, 'watching the workspace process by polling');
    this.supervisor.watchAdopted(instance);
  }

  private emit(event: RuntimeEvent): void {
    if (!this.closed) this.eventsSubject.next(event);
  }

  private assertOpen(): void {
    if (this.closed) throw new FailedPreconditionError('the local runtime is closed');
  }
}
