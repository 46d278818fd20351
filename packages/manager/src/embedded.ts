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
import { resolve } from 'node:path';
import { startManager } from './app.js';
import type { RunningManager } from './app.js';
import { loadManagerConfig } from './config.js';
import { checkControlPlaneExposure, loadTokens } from './grpc/auth.js';
import type { ManagerConfigInput } from './config.js';
import { DaemonSupervisor } from './daemon-supervisor.js';
import { createLogger } from './logger.js';
import type { Logger } from './logger.js';

export { DaemonSupervisor, resolveDaemonBin } from './daemon-supervisor.js';

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
  /** The daemon child's process id while it runs (undefined: not spawned here, or between restarts). */
  readonly daemonPid: number | undefined;
  /** Stops the manager, then the daemon. Workspaces keep running and are re-adopted by the next start. */
  stop(): Promise<void>;
}

/** Starts the daemon (child process) and the manager; see the module docs. */
export async function startEmbedded(options: EmbeddedOptions = {}): Promise<EmbeddedHandle> {
  const loaded = await loadManagerConfig(options.configPath, options.overrides);
  // Refuse an open control plane before the daemon is even started (startManager checks again).
  checkControlPlaneExposure(loaded, loadTokens(loaded));
  const logger = options.logger ?? createLogger({ level: loaded.log.level });
  let config = loaded;
  let supervisor: DaemonSupervisor | undefined;
  if (config.daemon.spawn) {
    supervisor = new DaemonSupervisor(
      config,
      logger.child({ component: 'daemon-supervisor' }),
      options.configPath ? resolve(options.configPath) : undefined,
    );
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
    get daemonPid() {
      return supervisor?.pid;
    },
    stop: () => {
      stopped ??= (async () => {
        await manager.stop();
        await supervisor?.stop();
      })();
      return stopped;
    },
  };
}
