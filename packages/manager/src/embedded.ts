/**
 * The embedded setup (`workbay up`, root `npm start`): the workspace daemon as a child process, then the
 * manager (gRPC on 127.0.0.1:7720, port proxy on :7780, metrics on :9501) using it. No config file is needed;
 * one switches on anything else.
 *
 * The manager never imports daemon code: the daemon's bin is resolved at run time from the installed
 * `@workbay/daemon` package (or `daemon.command` in the config) and talked to over gRPC only.
 *
 * @module
 */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { Client, credentials } from '@grpc/grpc-js';
import { FailedPreconditionError, UnavailableError } from '@workbay/api';
import { startManager } from './app.js';
import type { RunningManager } from './app.js';
import { loadManagerConfig } from './config.js';
import type { ManagerConfig, ManagerConfigInput } from './config.js';
import { createLogger } from './logger.js';
import type { Logger } from './logger.js';

export interface EmbeddedOptions {
  /** Config file (YAML or JSON); the defaults when absent. */
  readonly configPath?: string;
  /** Top-level keys merged over the file (tests, the CLI). */
  readonly overrides?: ManagerConfigInput;
  readonly logger?: Logger;
}

export interface EmbeddedHandle {
  /** host:port of the manager's gRPC server. */
  readonly managerAddress: string;
  readonly proxyAddress: string;
  readonly metricsAddress: string;
  /** host:port of the daemon's gRPC server. */
  readonly daemonAddress: string;
  readonly manager: RunningManager;
  /** Stops the manager, then the daemon. Workspaces keep running and are re-adopted by the next start. */
  stop(): Promise<void>;
}

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
    return false;
  } finally {
    client.close();
  }
}

interface DaemonProcess {
  readonly child: ChildProcess;
  readonly address: string;
}

/**
 * Runs the workspace daemon as a child process (from `config.daemon`) and keeps it running: it is started again
 * on the same address when it exits unexpectedly (`daemon.restart`), at most five times a minute.
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
  ) {
    this.restartOnExit = config.daemon.restart;
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

  private command(address: string): { file: string; args: string[] } {
    const base = this.config.daemon.command ? [...this.config.daemon.command] : [process.execPath, resolveDaemonBin()];
    const args = base.slice(1);
    args.push('--grpc-address', address, '--working-area', this.config.workingArea);
    if (this.config.daemon.configPath) args.push('--config', this.config.daemon.configPath);
    if (this.config.daemon.httpAddress) args.push('--http-address', this.config.daemon.httpAddress);
    if (this.config.daemon.storageRoot) args.push('--storage-root', this.config.daemon.storageRoot);
    return { file: base[0]!, args };
  }

  async start(address = this.config.daemon.address): Promise<string> {
    const { file, args } = this.command(address);
    this.logger.info({ command: [file, ...args].join(' ') }, 'starting the workspace daemon');
    const child = spawn(file, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    const stderrTail: string[] = [];
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
          const event = JSON.parse(line) as { event?: string; grpc?: string };
          if (event.event === 'listening' && typeof event.grpc === 'string') {
            clearTimeout(timer);
            resolve(event.grpc);
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
      child.once('exit', (code, signal) => {
        clearTimeout(timer);
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
    this.current = { child, address: bound };
    child.once('exit', (code, signal) => this.onExit(child, code, signal));
    this.logger.info({ address: bound, pid: child.pid }, 'workspace daemon is serving');
    return bound;
  }

  private onExit(child: ChildProcess, code: number | null, signal: NodeJS.Signals | null): void {
    if (this.stopping || this.current?.child !== child) return;
    this.logger.error({ code, signal }, 'the workspace daemon exited unexpectedly');
    if (!this.restartOnExit) return;
    const now = Date.now();
    this.restarts = this.restarts.filter((t) => now - t < 60_000);
    if (this.restarts.length >= 5) {
      this.logger.error('the workspace daemon keeps exiting; not restarting it again');
      return;
    }
    this.restarts.push(now);
    // Same address, so that the manager's client reconnects by itself.
    const address = this.current.address;
    setTimeout(() => {
      if (this.stopping) return;
      this.start(address).catch((error: unknown) =>
        this.logger.error({ err: error }, 'cannot restart the workspace daemon'),
      );
    }, 1_000).unref();
  }

  async stop(): Promise<void> {
    this.stopping = true;
    const child = this.current?.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 35_000);
    await exited;
    clearTimeout(timer);
  }
}

/** Starts the daemon (child process) and the manager; see the module docs. */
export async function startEmbedded(options: EmbeddedOptions = {}): Promise<EmbeddedHandle> {
  const loaded = await loadManagerConfig(options.configPath, options.overrides);
  const logger = options.logger ?? createLogger({ level: loaded.log.level });
  let config = loaded;
  let supervisor: DaemonSupervisor | undefined;
  if (config.daemon.spawn) {
    supervisor = new DaemonSupervisor(config, logger.child({ component: 'daemon-supervisor' }));
    const address = await supervisor.start();
    config = { ...config, daemon: { ...config.daemon, address } };
  }
  let manager: RunningManager;
  try {
    manager = await startManager({ config, logger });
  } catch (error) {
    await supervisor?.stop();
    throw error;
  }
  let stopped: Promise<void> | undefined;
  return {
    managerAddress: manager.grpcAddress,
    proxyAddress: manager.proxyAddress,
    metricsAddress: manager.metricsAddress,
    daemonAddress: config.daemon.address,
    manager,
    stop: () => {
      stopped ??= (async () => {
        await manager.stop();
        await supervisor?.stop();
      })();
      return stopped;
    },
  };
}
