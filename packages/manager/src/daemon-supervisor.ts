/**
 * The workspace daemon as a child process of the embedded setup (`workbay up`): finding its bin, starting it with
 * the manager config's storage and plugins, restarting it, and stopping a daemon a killed manager left behind.
 * The manager never imports daemon code; it talks to the daemon over gRPC only.
 *
 * @module
 */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { Client, credentials } from '@grpc/grpc-js';
import { FailedPreconditionError, UnavailableError } from '@workbay/api';
import { ManagerConfigError } from './config.js';
import type { ManagerConfig } from './config.js';
import type { Logger } from './logger.js';
import { LivenessWatch } from './daemon-liveness.js';

/** Where the installed `@workbay/daemon` keeps its `workbay-daemon` bin; throws with what to do if it is missing. */
export function resolveDaemonBin(): string {
  let manifestPath: string;
  try {
    manifestPath = createRequire(import.meta.url).resolve('@workbay/daemon/package.json');
  } catch (cause) {
    throw new FailedPreconditionError(
      'the workspace daemon is not installed: run `npm install @workbay/daemon`, or set daemon.command in the config, ' +
        'or start a daemon yourself and set daemon.spawn: false and daemon.address',
      { cause },
    );
  }
  const manifest = JSON.parse(readFileSync(manifestPath, 'utf8')) as { bin?: string | Record<string, string> };
  const bin = typeof manifest.bin === 'string' ? manifest.bin : manifest.bin?.['workbay-daemon'];
  if (!bin) throw new FailedPreconditionError(`${manifestPath} declares no workbay-daemon bin`);
  return join(dirname(manifestPath), bin);
}

/** gRPC health (`grpc.health.v1.Health/Check` for the whole server): true when SERVING. */
async function isServing(address: string): Promise<boolean> {
  const client = new Client(address, credentials.createInsecure());
  try {
    const response = await new Promise<Buffer>((resolve, reject) => {
      client.makeUnaryRequest(
        '/grpc.health.v1.Health/Check',
        (value: Buffer) => value,
        (value: Buffer) => value,
        Buffer.alloc(0), // HealthCheckRequest{service: ""}
        { deadline: Date.now() + 2_000 },
        (error, value) => (error ? reject(error) : resolve(value!)),
      );
    });
    // HealthCheckResponse{status = 1 (SERVING)} is the two bytes 08 01.
    return response.length >= 2 && response[0] === 0x08 && response[1] === 0x01;
  } catch {
    // A probe: no answer (refused, deadline, not a health service) is "not serving"; the caller polls again.
    return false;
  } finally {
    client.close();
  }
}

/** util-linux's setpriv, which sets a parent-death signal (Node has no prctl) and then execs the daemon. */
function findSetpriv(): string | undefined {
  return ['/usr/bin/setpriv', '/bin/setpriv', '/usr/sbin/setpriv'].find((p) => existsSync(p));
}

/** Whether `pid` runs (a zombie waiting for its reaper does not). */
function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    // Deliberate: without /proc the zombie check is skipped; kill(pid, 0) above already said it exists.
    return true;
  }
}

/** What a running daemon child leaves in `<stateDir>/daemon.pid`. */
interface PidFile {
  readonly pid: number;
  /** The manager process that started it. */
  readonly manager?: number;
  readonly address: string;
  readonly workingArea: string;
}

interface DaemonProcess {
  readonly child: ChildProcess;
  readonly address: string;
  /** Its `/live` probes, when it has an HTTP address and is restarted on exit. */
  readonly liveness?: LivenessWatch;
}

/**
 * Runs the workspace daemon as a child process (from `config.daemon`) and keeps it running: it is started again
 * on the same address when it exits unexpectedly (`daemon.restart`), after a pause that grows while it keeps exiting.
 */
export class DaemonSupervisor {
  private current: DaemonProcess | undefined;
  private stopping = false;
  private restarts: number[] = [];
  /** Whether an unexpected exit is followed by a restart (initially `daemon.restart`). */
  restartOnExit: boolean;

  constructor(
    private readonly config: ManagerConfig,
    private readonly logger: Logger,
    /** The manager's config file, named in errors about its `storage` and `plugins` (which the daemon gets too). */
    private readonly configSource = 'the manager config',
  ) {
    this.restartOnExit = config.daemon.restart;
  }

  /** `<stateDir>/daemon-manager-config.json`: the manager config's storage and plugins, for the daemon. */
  get managerSectionFile(): string {
    return join(this.config.stateDir, 'daemon-manager-config.json');
  }

  /**
   * One config file configures everything `workbay up` starts: its `storage` and `plugins` go to the daemon too
   * (backups and snapshots land where the config says). A file (0600: storage sections hold credentials), not
   * flags, which `ps` would show.
   */
  private async writeManagerSection(): Promise<boolean> {
    const { storage, plugins } = this.config;
    if (!storage && plugins.length === 0) return false;
    if (storage && this.config.daemon.storageRoot) {
      // Two roots for one storage: backups would go to one and snapshot deletions to the other.
      throw new ManagerConfigError(
        this.configSource,
        'daemon.storageRoot',
        'conflicts with storage: set the root there',
      );
    }
    await mkdir(this.config.stateDir, { recursive: true, mode: 0o700 });
    const section = { source: this.configSource, ...(storage ? { storage } : {}), plugins };
    await rm(this.managerSectionFile, { force: true });
    await writeFile(this.managerSectionFile, `${JSON.stringify(section)}\n`, { mode: 0o600, flag: 'wx' });
    return true;
  }

  /** The daemon's gRPC address (the bound one once started). */
  get address(): string {
    return this.current?.address ?? this.config.daemon.address;
  }

  get pid(): number | undefined {
    return this.current?.child.pid;
  }

  /** Sends a signal to the daemon (tests use it to simulate crashes). */
  kill(signal: NodeJS.Signals): void {
    this.current?.child.kill(signal);
  }

  /** Resolves once the daemon serves again after a restart (or now, if it serves). */
  async waitUntilServing(timeoutMs = 30_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!(this.current && this.current.child.exitCode === null && (await isServing(this.current.address)))) {
      if (Date.now() > deadline) throw new UnavailableError('the workspace daemon is not serving');
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }

  private command(address: string, managerSection: boolean): { file: string; args: string[] } {
    const base = this.config.daemon.command ? [...this.config.daemon.command] : [process.execPath, resolveDaemonBin()];
    const args = base.slice(1);
    args.push('--grpc-address', address, '--working-area', this.config.workingArea);
    if (this.config.daemon.configPath) args.push('--config', this.config.daemon.configPath);
    if (this.config.daemon.httpAddress) args.push('--http-address', this.config.daemon.httpAddress);
    if (this.config.daemon.storageRoot) args.push('--storage-root', this.config.daemon.storageRoot);
    if (managerSection) args.push('--manager-config', this.managerSectionFile);
    if (this.config.daemon.dieWithManager) {
      // The daemon gets SIGTERM when this process dies, even by SIGKILL (PR_SET_PDEATHSIG, kept across exec).
      const setpriv = findSetpriv();
      if (setpriv) {
        // setpriv would report a missing command only as an exit code: say it the way spawn would.
        const command = base[0]!;
        if (command.includes('/') && !existsSync(command)) {
          throw new UnavailableError(`cannot start the workspace daemon (${command}): no such file`);
        }
        return { file: setpriv, args: ['--pdeathsig', 'SIGTERM', '--', command, ...args] };
      }
      this.logger.warn(
        'setpriv (util-linux) is not installed: a killed manager leaves its daemon running until the next start stops it',
      );
    }
    return { file: base[0]!, args };
  }

  /** `<stateDir>/daemon.pid`: the daemon child of the manager using this state dir. */
  get pidFile(): string {
    return join(this.config.stateDir, 'daemon.pid');
  }

  /**
   * Stops a daemon that a previous manager on the same state dir left running (it was killed before it could
   * stop it): otherwise that orphan keeps the daemon's port and this start fails. Only a live process whose
   * command line names our working area is taken for ours; a reused pid of anything else is left alone.
   */
  async stopOrphan(): Promise<void> {
    let previous: PidFile;
    try {
      previous = JSON.parse(await readFile(this.pidFile, 'utf8')) as PidFile;
    } catch (error) {
      // No pid file: no previous daemon. An unreadable one is logged: an orphan it named keeps running.
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') {
        this.logger.warn(
          { file: this.pidFile, err: String(error).slice(0, 200) },
          'unreadable daemon pid file; ignored',
        );
      }
      return;
    }
    const pid = previous.pid;
    let ours = false;
    if (Number.isSafeInteger(pid) && pid > 1 && pid !== process.pid && isAlive(pid)) {
      try {
        const argv = (await readFile(`/proc/${pid}/cmdline`, 'utf8')).split('\0');
        const i = argv.indexOf('--working-area');
        ours = i >= 0 && argv[i + 1] === this.config.workingArea;
      } catch {
        // Deliberate: the process exited meanwhile (ENOENT) or is not ours to read: never taken for ours.
        ours = false;
      }
    }
    const manager = previous.manager;
    if (ours && manager !== undefined && manager !== process.pid && isAlive(manager)) {
      // Its manager still runs: this is not an orphan but a second manager on the same state dir.
      throw new FailedPreconditionError(
        `another manager (pid ${manager}) runs with this state dir (${this.config.stateDir}) and its daemon ` +
          `(pid ${pid}); stop it first or use another stateDir`,
      );
    }
    if (ours) {
      this.logger.warn({ pid, address: previous.address }, 'stopping the daemon a previous manager left running');
      process.kill(pid, 'SIGTERM');
      const deadline = Date.now() + this.config.daemon.orphanStopTimeoutMs;
      while (isAlive(pid) && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 100));
      if (isAlive(pid)) {
        this.logger.warn({ pid }, 'the orphaned daemon did not stop in time; killing it');
        process.kill(pid, 'SIGKILL');
        while (isAlive(pid)) await new Promise((resolve) => setTimeout(resolve, 50));
      }
    }
    await rm(this.pidFile, { force: true });
  }

  private async writePidFile(pid: number | undefined, address: string): Promise<void> {
    if (pid === undefined) return;
    const content: PidFile = { pid, manager: process.pid, address, workingArea: this.config.workingArea };
    try {
      await mkdir(this.config.stateDir, { recursive: true, mode: 0o700 });
      await writeFile(this.pidFile, `${JSON.stringify(content)}\n`, { mode: 0o600 });
    } catch (error) {
      this.logger.warn({ err: error }, 'cannot write the daemon pid file');
    }
  }

  async start(address = this.config.daemon.address): Promise<string> {
    await this.stopOrphan();
    const { file, args } = this.command(address, await this.writeManagerSection());
    this.logger.info({ command: [file, ...args].join(' ') }, 'starting the workspace daemon');
    const child = spawn(file, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    const stderrTail: string[] = [];
    let configError: ManagerConfigError | undefined;
    let httpAddress: string | undefined;
    const bound = await new Promise<string>((resolve, reject) => {
      const timer = setTimeout(
        () =>
          reject(
            new UnavailableError(`the workspace daemon did not start within ${this.config.daemon.startTimeoutMs} ms`),
          ),
        this.config.daemon.startTimeoutMs,
      );
      const lines = createInterface({ input: child.stdout! });
      lines.on('line', (line) => {
        try {
          const event = JSON.parse(line) as {
            event?: string;
            grpc?: string;
            http?: string | null;
            file?: string;
            field?: string;
            reason?: string;
          };
          if (event.event === 'listening' && typeof event.grpc === 'string') {
            if (typeof event.http === 'string') httpAddress = event.http;
            clearTimeout(timer);
            resolve(event.grpc);
            return;
          }
          if (event.event === 'config-error') {
            // A config error is the user's to fix: say which file and key, not that the daemon "exited".
            configError = new ManagerConfigError(
              String(event.file ?? 'the daemon config'),
              String(event.field ?? '(root)'),
              String(event.reason ?? 'invalid'),
            );
            return;
          }
        } catch {
          // Not JSON: plain output.
        }
        // The daemon's log lines go to stderr so that our stdout stays machine-readable (`workbay --json up`).
        if (this.config.daemon.output === 'inherit') process.stderr.write(`${line}\n`);
      });
      createInterface({ input: child.stderr! }).on('line', (line) => {
        stderrTail.push(line);
        if (stderrTail.length > 20) stderrTail.shift();
        if (this.config.daemon.output === 'inherit') process.stderr.write(`${line}\n`);
      });
      child.once('error', (error) => {
        clearTimeout(timer);
        reject(new UnavailableError(`cannot start the workspace daemon (${file}): ${error.message}`, { cause: error }));
      });
      // 'close', not 'exit': the daemon's last lines (its config error) are read by then.
      child.once('close', (code, signal) => {
        clearTimeout(timer);
        if (configError) return reject(configError);
        reject(
          new UnavailableError(
            `the workspace daemon exited during startup (${signal ?? `exit code ${code}`})${stderrTail.length ? `: ${stderrTail.join(' | ')}` : ''}`,
          ),
        );
      });
    }).catch((error: unknown) => {
      child.kill('SIGKILL');
      throw error;
    });
    const deadline = Date.now() + this.config.daemon.startTimeoutMs;
    while (!(await isServing(bound))) {
      if (Date.now() > deadline || child.exitCode !== null) {
        child.kill('SIGKILL');
        throw new UnavailableError(`the workspace daemon at ${bound} never reported SERVING on gRPC health`);
      }
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    const { livenessIntervalMs, livenessFailures } = this.config.daemon;
    const liveness =
      httpAddress && this.restartOnExit && livenessIntervalMs > 0
        ? new LivenessWatch({
            address: httpAddress,
            intervalMs: livenessIntervalMs,
            failures: livenessFailures,
            onDead: (reason) => this.restartDead(child, reason),
          })
        : undefined;
    this.current = { child, address: bound, ...(liveness ? { liveness } : {}) };
    await this.writePidFile(child.pid, bound);
    child.once('exit', (code, signal) => {
      liveness?.stop();
      this.onExit(child, code, signal);
    });
    this.logger.info({ address: bound, pid: child.pid }, 'workspace daemon is serving');
    return bound;
  }

  /**
   * A daemon whose process runs but which says it cannot work (see daemon-liveness.ts) is stopped, and its exit
   * restarts it like any other.
   */
  private restartDead(child: ChildProcess, reason: string): void {
    if (this.stopping || this.current?.child !== child || child.exitCode !== null) return;
    this.logger.error(
      { reason, failures: this.config.daemon.livenessFailures },
      'the workspace daemon is not live; stopping it to start it again',
    );
    child.kill('SIGTERM');
    // A daemon too stuck to stop (its threads in calls that never return) is killed.
    const timer = setTimeout(() => child.kill('SIGKILL'), 35_000);
    timer.unref();
    child.once('exit', () => clearTimeout(timer));
  }

  private onExit(child: ChildProcess, code: number | null, signal: NodeJS.Signals | null): void {
    if (this.stopping || this.current?.child !== child) return;
    this.logger.error({ code, signal }, 'the workspace daemon exited unexpectedly');
    if (!this.restartOnExit) return;
    // Same address, so that the manager's client reconnects by itself.
    this.scheduleRestart(this.current.address);
  }

  /** Starts the daemon again after {@link nextRestartDelayMs}; a start that fails is tried again the same way. */
  private scheduleRestart(address: string): void {
    const delayMs = this.nextRestartDelayMs(Date.now());
    if (delayMs > 1_000)
      this.logger.error({ delayMs }, 'the workspace daemon keeps exiting; restarting it after a longer pause');
    setTimeout(() => {
      if (this.stopping) return;
      this.start(address).catch((error: unknown) => {
        // Deliberate: retried (a port briefly taken, a start past its timeout on a loaded node), never given up.
        this.logger.error({ err: error }, 'cannot restart the workspace daemon; trying again');
        if (!this.stopping) this.scheduleRestart(address);
      });
    }, delayMs).unref();
  }

  /**
   * The pause before the next restart: a second for the first five within ten minutes, then twice the last, up to a
   * minute. Never given up: the node's workspaces have no content service without it, and a daemon that something
   * keeps killing (a workspace that can crash it, a disk briefly gone) was otherwise down for good after its fifth
   * restart in a minute.
   */
  private nextRestartDelayMs(now: number): number {
    this.restarts = this.restarts.filter((t) => now - t < 10 * 60_000);
    const beyond = this.restarts.length - 4;
    this.restarts.push(now);
    return beyond <= 0 ? 1_000 : Math.min(60_000, 1_000 * 2 ** beyond);
  }

  async stop(): Promise<void> {
    this.stopping = true;
    this.current?.liveness?.stop();
    const child = this.current?.child;
    if (child && child.exitCode === null && child.signalCode === null) {
      const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 35_000);
      await exited;
      clearTimeout(timer);
    }
    if (child) await rm(this.pidFile, { force: true });
  }
}
