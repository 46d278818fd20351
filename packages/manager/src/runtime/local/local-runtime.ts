import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { access, constants, open, stat } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { constants as osConstants } from 'node:os';
import { Subject } from 'rxjs';
import type { Observable } from 'rxjs';
import {
  AlreadyExistsError,
  FailedPreconditionError,
  InvalidArgumentError,
  UnavailableError,
  silentLogger,
} from '@workbay/api';
import type {
  PluginLogger,
  RuntimeEvent,
  RuntimeStatus,
  RuntimeWorkspaceSpec,
  RuntimeWorkspaceState,
  StopOptions,
  WorkspaceRuntime,
} from '@workbay/api';
import { CgroupManager, mountCgroupsIfMissing, readCgroupLayout } from './cgroups.js';
import type { CgroupLayout } from './cgroups.js';
import { parseLocalRuntimeConfig } from './config.js';
import type { LocalRuntimeConfig, LocalRuntimeConfigInput, ReadinessConfig } from './config.js';
import { expandCommand, resolveImage } from './images.js';
import { PortAllocator } from './ports.js';
import { groupAlive, isSameProcessAlive, readProcStat, signal, sleep } from './proc.js';
import { waitReady } from './readiness.js';
import { InstanceStore } from './store.js';
import type { InstanceRecord } from './store.js';
import { wrapperInvocation } from './wrapper.js';

/**
 * The local runtime's view of an instance: the SPI state plus where its ports ended up on this machine.
 * (`portMap` and friends are a local extension; the SPI has no field for them.)
 */
export interface LocalWorkspaceState extends RuntimeWorkspaceState {
  /** Spec port → host port. The IDE port maps to another port when the requested one was taken or 0. */
  readonly portMap: Readonly<Record<number, number>>;
  /** The host port the IDE (first spec port) listens on; also `PORT` and `WORKBAY_IDE_PORT` in its env. */
  readonly idePort: number;
  /** Runs in its own pid/mount/uts namespaces. */
  readonly namespaced: boolean;
  /** The cgroup directories limiting it, when any. */
  readonly cgroupDirs: readonly string[];
  /** Where its stdout and stderr go while it runs. */
  readonly logFile: string;
}

/** How the runtime isolates workspaces, decided once at creation from config and privileges. */
export interface LocalIsolation {
  readonly namespaces: boolean;
  readonly cgroups?: CgroupLayout;
}

export interface LocalRuntimeOptions {
  /** Raw or parsed config; raw input is validated (errors name the bad key). */
  readonly config?: LocalRuntimeConfigInput | LocalRuntimeConfig;
  readonly logger?: PluginLogger;
}

const instanceIdPattern = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
const defaultPath = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

interface Instance {
  record: InstanceRecord;
  status: RuntimeStatus;
  /** Set while the wrapper is our own child; adopted instances are polled instead. */
  child?: ChildProcess;
  childExit?: { code: number | null; signal: NodeJS.Signals | null };
  readonly readyAbort: AbortController;
  pollTimer?: NodeJS.Timeout;
  finalizing?: Promise<void>;
  readonly exited: Promise<void>;
  markExited: () => void;
  killTimer?: NodeJS.Timeout;
  killDeadline?: number;
  killed?: boolean;
}

/**
 * Runs each workspace as a process tree on this machine (the embedded default runtime).
 *
 * - cwd is the content directory the daemon initialized; env is the spec's plus `PORT`/`WORKBAY_IDE_PORT`.
 * - As root (unless config says otherwise) each workspace gets its own pid/mount/uts namespaces (hostname = the
 *   workspace id) and a cgroup with the class's CPU, memory and pids limits, joined before the workspace execs.
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
  private readonly cgroups?: CgroupManager;
  private readonly instances = new Map<string, Instance>();
  private readonly starting = new Set<string>();
  private readonly eventsSubject = new Subject<RuntimeEvent>();
  private closed = false;

  /** Ready and exit events of all instances. */
  readonly events$: Observable<RuntimeEvent> = this.eventsSubject.asObservable();

  private constructor(config: LocalRuntimeConfig, isolation: LocalIsolation, logger: PluginLogger) {
    this.config = config;
    this.isolation = isolation;
    this.logger = logger;
    this.store = new InstanceStore(config.stateDir);
    if (isolation.cgroups) {
      const parent = config.cgroupParent ?? (isolation.cgroups.version === 1 ? 'workbay' : '/workbay');
      this.cgroups = new CgroupManager(isolation.cgroups, parent, logger);
    }
  }

  /** Validates the config, decides the isolation, and re-adopts the instances recorded in `stateDir`. */
  static async create(options: LocalRuntimeOptions = {}): Promise<LocalRuntime> {
    // Parsing is idempotent, so an already parsed config (from the plugin factory) goes through it again.
    const config = parseLocalRuntimeConfig(options.config ?? {});
    const logger = options.logger ?? silentLogger;
    const isolation = await decideIsolation(config, logger);
    const runtime = new LocalRuntime(config, isolation, logger);
    await runtime.store.init();
    await runtime.recover();
    logger.info(
      {
        stateDir: config.stateDir,
        namespaces: isolation.namespaces,
        cgroups: isolation.cgroups ? `v${isolation.cgroups.version}` : 'off',
        adopted: runtime.instances.size,
      },
      'local runtime ready',
    );
    return runtime;
  }

  /** A synchronous snapshot of every instance the runtime knows. */
  snapshot(): LocalWorkspaceState[] {
    return [...this.instances.values()].map((i) => this.stateOf(i));
  }

  async start(spec: RuntimeWorkspaceSpec): Promise<LocalWorkspaceState> {
    this.assertOpen();
    const id = spec.instanceId;
    if (!instanceIdPattern.test(id)) {
      throw new InvalidArgumentError('instanceId', `'${id}' may only contain letters, digits, '.', '_' and '-'`);
    }
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
    const contentDir = path.resolve(spec.contentDir);
    const dirStat = await stat(contentDir).catch(() => undefined);
    if (!dirStat?.isDirectory()) {
      throw new FailedPreconditionError(`workspace content directory '${contentDir}' does not exist`);
    }

    const mapped = resolveImage(this.config.images, spec.image);
    const readiness: ReadinessConfig = { ...this.config.readiness, ...(mapped?.config.readiness ?? {}) };
    const requestedIdePort = spec.ports[0] ?? 0;
    const idePort = await this.ports.allocate(id, requestedIdePort);
    const portMap: Record<string, number> = {};
    spec.ports.forEach((p, index) => (portMap[String(p)] = index === 0 ? idePort : p));

    const env: Record<string, string> = {
      PATH: process.env['PATH'] ?? defaultPath,
      ...(mapped?.config.env ?? {}),
      ...spec.env,
      PORT: String(idePort),
      WORKBAY_IDE_PORT: String(idePort),
    };
    const command = mapped
      ? expandCommand(mapped.config.command, env)
      : [
          process.execPath,
          defaultWorkspaceScript(),
          '--port',
          String(idePort),
          '--host',
          this.config.host,
          '--workspace-id',
          spec.workspaceId,
          '--instance-id',
          id,
          '--owner',
          spec.owner,
        ];

    let cgroup;
    try {
      cgroup = this.cgroups ? await this.cgroups.create(id, spec.resources) : undefined;
    } catch (cause) {
      this.ports.release(id);
      throw new FailedPreconditionError(`could not set up the cgroup for workspace instance '${id}'`, { cause });
    }

    const exitFile = this.store.exitFile(id);
    const invocation = wrapperInvocation({
      exitFile,
      cgroupProcsFiles: cgroup ? CgroupManager.procsFiles(cgroup) : [],
      namespaced: this.isolation.namespaces,
      hostname: hostnameFor(spec.workspaceId),
      command,
    });

    let child: ChildProcess;
    await this.store.remove(id); // leftovers of an earlier run of the same id
    const log = await open(this.store.logFile(id), 'a');
    try {
      child = spawn(invocation.file, invocation.args, {
        cwd: contentDir,
        env,
        detached: true, // own session and process group: the group is what stop() signals
        stdio: ['ignore', log.fd, log.fd],
      });
      await new Promise<void>((resolve, reject) => {
        child.once('spawn', resolve);
        child.once('error', reject);
      });
    } catch (cause) {
      this.ports.release(id);
      if (cgroup) await CgroupManager.remove(cgroup, this.logger);
      throw new FailedPreconditionError(`could not launch workspace instance '${id}'`, { cause });
    } finally {
      await log.close();
    }
    child.unref();
    const pid = child.pid!;
    const procStat = await readProcStat(pid);

    const record: InstanceRecord = {
      version: 1,
      instanceId: id,
      workspaceId: spec.workspaceId,
      owner: spec.owner,
      image: spec.image,
      className: spec.className,
      command,
      pid,
      pgid: pid,
      startTime: procStat?.startTime,
      namespaced: this.isolation.namespaces,
      cgroup,
      memoryLimitBytes: spec.resources.memoryBytes,
      host: this.config.host,
      idePort,
      portMap,
      nodeName: this.config.nodeName,
      startedAt: new Date().toISOString(),
      readiness,
      ready: false,
      stopRequested: false,
    };
    const instance = this.track(record, 'starting');
    instance.child = child;
    child.once('exit', (code, sig) => {
      instance.childExit = { code, signal: sig };
      void this.finalize(instance);
    });
    if (child.exitCode !== null || child.signalCode !== null) {
      instance.childExit = { code: child.exitCode, signal: child.signalCode as NodeJS.Signals | null };
      void this.finalize(instance);
    }
    await this.store.save(record);
    this.logger.info(
      { instanceId: id, pid, idePort, image: spec.image, mapped: mapped?.pattern ?? 'default-workspace' },
      'workspace process started',
    );
    this.watchReadiness(instance);
    return this.stateOf(instance);
  }

  async stop(instanceId: string, options: StopOptions): Promise<void> {
    const instance = this.instances.get(instanceId);
    if (!instance) return;
    if (instance.status !== 'exited') {
      await this.terminate(instance, Math.max(0, options.gracePeriodMs));
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
    for (const instance of this.instances.values()) {
      instance.readyAbort.abort();
      if (instance.pollTimer) clearTimeout(instance.pollTimer);
      if (instance.killTimer) clearTimeout(instance.killTimer);
      instance.child?.removeAllListeners('exit');
    }
    this.eventsSubject.complete();
  }

  // ---------------------------------------------------------------------------------------------------------------

  private track(record: InstanceRecord, status: RuntimeStatus): Instance {
    let markExited!: () => void;
    const exited = new Promise<void>((resolve) => (markExited = resolve));
    const instance: Instance = { record, status, readyAbort: new AbortController(), exited, markExited };
    this.instances.set(record.instanceId, instance);
    return instance;
  }

  private stateOf(i: Instance): LocalWorkspaceState {
    const r = i.record;
    const portMap: Record<number, number> = {};
    for (const [k, v] of Object.entries(r.portMap)) portMap[Number(k)] = v;
    return {
      instanceId: r.instanceId,
      status: i.status,
      ready: r.ready,
      pid: r.pid,
      exitCode: r.exit?.exitCode,
      failure: r.exit?.failure,
      nodeName: r.nodeName,
      host: r.host,
      startedAt: new Date(r.startedAt),
      portMap,
      idePort: r.idePort,
      namespaced: r.namespaced,
      cgroupDirs: r.cgroup?.dirs ?? [],
      logFile: this.store.logFile(r.instanceId),
    };
  }

  private watchReadiness(instance: Instance): void {
    const r = instance.record;
    void waitReady(r.readiness, r.host, r.idePort, instance.readyAbort.signal).then(async (ok) => {
      if (!ok || instance.finalizing || instance.status === 'exited' || instance.status === 'stopping' || this.closed) {
        return;
      }
      r.ready = true;
      instance.status = 'running';
      await this.store.save(r).catch((error: unknown) => this.logger.warn({ error: String(error) }, 'save failed'));
      this.logger.info({ instanceId: r.instanceId, port: r.idePort }, 'workspace ready');
      this.emit({ type: 'ready', instanceId: r.instanceId, state: this.stateOf(instance) });
    });
  }

  /** Polls an adopted (not our child) wrapper for exit; faster while it is being stopped. */
  private watchAdopted(instance: Instance): void {
    const tick = async (): Promise<void> => {
      instance.pollTimer = undefined;
      if (this.closed || instance.finalizing) return;
      if (await isSameProcessAlive(instance.record.pid, instance.record.startTime)) {
        const delay = instance.status === 'stopping' ? 50 : this.config.exitPollIntervalMs;
        instance.pollTimer = setTimeout(() => void tick(), delay);
        return;
      }
      await this.finalize(instance);
    };
    instance.pollTimer = setTimeout(() => void tick(), 0);
  }

  /** SIGTERM to the group now; SIGKILL to the group and cgroup at the deadline (a later, shorter stop wins). */
  private async terminate(instance: Instance, gracePeriodMs: number): Promise<void> {
    const r = instance.record;
    if (!r.stopRequested) {
      r.stopRequested = true;
      instance.status = 'stopping';
      instance.readyAbort.abort();
      await this.store.save(r);
      this.logger.info({ instanceId: r.instanceId, gracePeriodMs }, 'stopping workspace');
      if (await this.groupIsOurs(r)) signal(-r.pgid, 'SIGTERM');
    }
    const deadline = Date.now() + gracePeriodMs;
    if (!instance.killed && (instance.killDeadline === undefined || deadline < instance.killDeadline)) {
      instance.killDeadline = deadline;
      if (instance.killTimer) clearTimeout(instance.killTimer);
      instance.killTimer = setTimeout(() => void this.kill(instance), gracePeriodMs);
    }
    await instance.exited;
  }

  private async kill(instance: Instance): Promise<void> {
    if (instance.finalizing || instance.killed) return;
    instance.killed = true;
    const r = instance.record;
    this.logger.warn({ instanceId: r.instanceId }, 'grace period over; killing workspace');
    if (await this.groupIsOurs(r)) signal(-r.pgid, 'SIGKILL');
    if (r.cgroup) await CgroupManager.signalAll(r.cgroup, 'SIGKILL');
    // A process stuck in uninterruptible sleep can outlive SIGKILL; do not wait forever for it.
    instance.killTimer = setTimeout(() => {
      if (instance.status === 'exited') return;
      this.logger.error({ instanceId: r.instanceId }, 'workspace did not exit after SIGKILL');
      void this.finalize(instance, new UnavailableError(`workspace '${r.instanceId}' did not exit after SIGKILL`));
    }, this.config.killTimeoutMs);
  }

  /**
   * The process group may be signalled when its leader is still the recorded process, or when no process has
   * that pid any more (a group with that id can then only hold our leftovers, since the kernel does not reuse the
   * id of a live group). A different process with the pid means the pid was reused: the group is not ours.
   */
  private async groupIsOurs(r: InstanceRecord): Promise<boolean> {
    const leader = await readProcStat(r.pgid);
    if (!leader) return true;
    return r.startTime !== undefined && leader.startTime === r.startTime;
  }

  /** The leader is gone: take the rest of the tree down, collect the verdict, clean up, tell everyone. Idempotent. */
  private finalize(instance: Instance, stuck?: Error): Promise<void> {
    instance.finalizing ??= (async () => {
      const r = instance.record;
      instance.readyAbort.abort();
      if (instance.pollTimer) clearTimeout(instance.pollTimer);
      if (instance.killTimer) clearTimeout(instance.killTimer);
      if (!stuck && (await this.groupIsOurs(r))) {
        signal(-r.pgid, 'SIGKILL');
        const until = Date.now() + this.config.killTimeoutMs;
        while ((await groupAlive(r.pgid)) && Date.now() < until) await sleep(20);
      }
      let oomKills = 0;
      if (r.cgroup) {
        oomKills = await CgroupManager.oomKills(r.cgroup);
        await CgroupManager.remove(r.cgroup, this.logger);
      }
      const exitCode = (await this.store.readExitCode(r.instanceId)) ?? childExitCode(instance.childExit);
      const failure = r.stopRequested
        ? undefined
        : stuck
          ? stuck.message
          : await this.describeExit(r, exitCode, oomKills);
      r.exit = { exitCode, failure, at: new Date().toISOString() };
      instance.status = 'exited';
      this.ports.release(r.instanceId);
      await this.store.save(r).catch((error: unknown) => this.logger.warn({ error: String(error) }, 'save failed'));
      this.logger.info({ instanceId: r.instanceId, exitCode, failure }, 'workspace process exited');
      instance.markExited();
      this.emit({ type: 'exited', instanceId: r.instanceId, state: this.stateOf(instance) });
    })();
    return instance.finalizing;
  }

  private async describeExit(
    r: InstanceRecord,
    exitCode: number | undefined,
    oomKills: number,
  ): Promise<string | undefined> {
    if (oomKills > 0) {
      const limit = r.memoryLimitBytes !== undefined ? ` of ${formatBytes(r.memoryLimitBytes)}` : '';
      return `out of memory: the workspace exceeded its memory limit${limit} and the kernel's OOM killer ended it (exit code ${exitCode ?? 'unknown'})`;
    }
    if (exitCode === undefined) {
      return 'the workspace process ended while nobody watched it; its exit status is unknown';
    }
    if (exitCode === 0) return undefined;
    const last = await this.store.lastLogLine(r.instanceId);
    const tail = last ? `: ${last}` : '';
    if (exitCode === 125) return `the workspace sandbox could not be set up${tail}`;
    if (exitCode === 126 || exitCode === 127) {
      return `the workspace command '${r.command[0] ?? ''}' could not be run (exit code ${exitCode})${tail}`;
    }
    if (exitCode > 128) {
      const name = signalName(exitCode - 128);
      return `the workspace process was killed by ${name} (exit code ${exitCode})${tail}`;
    }
    return `the workspace process exited with code ${exitCode}${tail}`;
  }

  private async forget(instance: Instance): Promise<void> {
    const id = instance.record.instanceId;
    if (this.instances.get(id) === instance) this.instances.delete(id);
    this.ports.release(id);
    if (instance.pollTimer) clearTimeout(instance.pollTimer);
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
      this.ports.reserve(record.instanceId, record.idePort);
      const alive = await isSameProcessAlive(record.pid, record.startTime);
      if (!alive) {
        const current = await readProcStat(record.pid);
        if (current && current.startTime !== record.startTime) {
          this.logger.warn(
            { instanceId: record.instanceId, pid: record.pid },
            'the recorded pid now belongs to another process; treating the workspace as gone',
          );
        }
        await this.finalize(instance);
        continue;
      }
      instance.status = record.stopRequested ? 'stopping' : record.ready ? 'running' : 'starting';
      this.logger.info({ instanceId: record.instanceId, pid: record.pid }, 're-adopted running workspace');
      this.watchAdopted(instance);
      if (!record.ready && !record.stopRequested) this.watchReadiness(instance);
    }
  }

  private emit(event: RuntimeEvent): void {
    if (!this.closed) this.eventsSubject.next(event);
  }

  private assertOpen(): void {
    if (this.closed) throw new FailedPreconditionError('the local runtime is closed');
  }
}

async function decideIsolation(config: LocalRuntimeConfig, logger: PluginLogger): Promise<LocalIsolation> {
  const root = process.getuid?.() === 0;
  const unshare = await findOnPath('unshare');
  let namespaces = false;
  if (config.isolation === 'namespaces') {
    if (!root) throw new FailedPreconditionError('runtime.local.isolation: namespaces need the manager to run as root');
    if (!unshare) throw new FailedPreconditionError("runtime.local.isolation: namespaces need 'unshare' (util-linux)");
    namespaces = true;
  } else if (config.isolation === 'auto') {
    namespaces = root && unshare !== undefined;
    if (root && !unshare) logger.warn({}, "'unshare' not found: workspaces run without their own namespaces");
  }

  if (config.cgroups === 'off' || (config.cgroups === 'auto' && !root)) return { namespaces };
  if (!root)
    throw new FailedPreconditionError(`runtime.local.cgroups: '${config.cgroups}' needs the manager to run as root`);
  let layout = await readCgroupLayout();
  if (!layout) {
    await mountCgroupsIfMissing(logger).catch((error: unknown) =>
      logger.warn({ error: String(error) }, 'could not mount the cgroup controllers'),
    );
    layout = await readCgroupLayout();
  }
  const wanted = config.cgroups === 'v1' ? 1 : config.cgroups === 'v2' ? 2 : undefined;
  if (!layout || (wanted !== undefined && layout.version !== wanted)) {
    const message = `runtime.local.cgroups: no usable cgroup ${wanted ? `v${wanted} ` : ''}hierarchy with cpu, memory or pids controllers`;
    if (config.cgroups === 'auto') {
      logger.warn({}, `${message}; workspaces run without resource limits`);
      return { namespaces };
    }
    throw new FailedPreconditionError(message);
  }
  return { namespaces, cgroups: layout };
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

/** The built default workspace lives beside this module in dist; from sources (tests) it is taken from dist. */
export function defaultWorkspaceScript(): string {
  const here = path.dirname(fileURLToPath(import.meta.url));
  const beside = path.join(here, 'default-workspace.js');
  if (existsSync(beside)) return beside;
  const fromSource = path.resolve(here, '../../../dist/runtime/local/default-workspace.js');
  if (existsSync(fromSource)) return fromSource;
  throw new FailedPreconditionError(`the default workspace script is missing (${beside}); build @workbay/manager`);
}

/** A UTS hostname is at most 64 bytes; keep it a valid label-ish string. */
function hostnameFor(workspaceId: string): string {
  const cleaned = workspaceId.replace(/[^A-Za-z0-9.-]/g, '-').slice(0, 63);
  return cleaned || 'workspace';
}

function childExitCode(exit: Instance['childExit']): number | undefined {
  if (!exit) return undefined;
  if (exit.code !== null) return exit.code;
  if (exit.signal) return 128 + (osConstants.signals[exit.signal] ?? 0);
  return undefined;
}

function signalName(n: number): string {
  const entry = Object.entries(osConstants.signals).find(([, v]) => v === n);
  return entry ? entry[0] : `signal ${n}`;
}

function formatBytes(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${Number.isInteger(value) ? value : value.toFixed(1)} ${units[unit]}`;
}
