import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createWorkspaceContentClient, createWorkspaceManagerClient } from '@workbay/api';
import type { WorkspaceContentClient, WorkspaceManagerClient } from '@workbay/api';
import type { Daemon, DaemonConfigInput, createDaemon } from '@workbay/daemon';
import type { ManagerConfigInput, RunningManager, resolveManagerConfig, startManager } from '@workbay/manager';

export interface TestEnvironmentOptions {
  /** Extra daemon config, merged over the test defaults (fs storage in the environment's directory). */
  readonly daemon?: DaemonConfigInput;
  /** Extra manager config, merged over the test defaults (local runtime, everything on 127.0.0.1:0). */
  readonly manager?: ManagerConfigInput;
  /** Keep the environment's directory after teardown (for debugging a failed test). */
  readonly keepDirectory?: boolean;
}

/**
 * A whole Workbay in-process: a daemon with filesystem storage and a manager with the local runtime, both
 * serving gRPC on 127.0.0.1 with free ports, every directory under one temporary folder.
 *
 * ```ts
 * const env = await TestEnvironment.createLocal();
 * const { url } = await env.client.startWorkspace({ ... });
 * await env.teardown();
 * ```
 */
export class TestEnvironment {
  private constructor(
    /** The temporary folder holding state, content and storage. */
    readonly directory: string,
    readonly daemon: Daemon,
    readonly manager: RunningManager,
    /** Typed client of the manager's `wsman.WorkspaceManager`. */
    readonly client: WorkspaceManagerClient,
    /** Typed client of the daemon's `wsdaemon.WorkspaceContentService`. */
    readonly contentClient: WorkspaceContentClient,
    private readonly keepDirectory: boolean,
  ) {}

  static async createLocal(options: TestEnvironmentOptions = {}): Promise<TestEnvironment> {
    const directory = await mkdtemp(join(tmpdir(), 'workbay-env-'));
    const workingArea = join(directory, 'workspaces');
    const { createDaemon, resolveManagerConfig, startManager } = await loadServices();
    let daemon: Daemon | undefined;
    try {
      daemon = await createDaemon({
        workingArea,
        grpc: { address: '127.0.0.1:0' },
        http: { address: '127.0.0.1:0' },
        storage: { kind: 'fs', root: join(directory, 'storage') },
        diskGuard: { minFree: 0 },
        housekeeping: { interval: 0 },
        log: { level: 'silent' },
        // Git fixtures are served over file:// as well as http from 127.0.0.1, and downloads from 127.0.0.1: a test
        // environment allows both, which a multi-tenant daemon must not (the daemon's git and initializer.download).
        git: { allowLocalRemotes: true, allowedNetworks: ['127.0.0.1/32'] },
        initializer: { download: { allowPrivateAddresses: true } },
        ...options.daemon,
      }).start();
      const config = resolveManagerConfig({
        stateDir: join(directory, 'manager'),
        workingArea,
        grpc: { address: '127.0.0.1:0' },
        daemon: { address: daemon.address },
        proxy: { address: '127.0.0.1:0' },
        metrics: { address: '127.0.0.1:0' },
        log: { level: 'silent' },
        ...options.manager,
      });
      const manager = await startManager({ config });
      return new TestEnvironment(
        directory,
        daemon,
        manager,
        createWorkspaceManagerClient(manager.grpcAddress),
        createWorkspaceContentClient(daemon.address),
        options.keepDirectory ?? false,
      );
    } catch (error) {
      await daemon?.stop().catch(() => undefined);
      await rm(directory, { recursive: true, force: true });
      throw error;
    }
  }

  /** Stops workspaces still running, then the manager and the daemon, and removes the directory. */
  async teardown(): Promise<void> {
    this.client.close();
    this.contentClient.close();
    const running = await this.manager.runtime.list().catch(() => []);
    await Promise.all(
      running.map((state) =>
        this.manager.runtime.stop(state.instanceId, { gracePeriodMs: 1000 }).catch(() => undefined),
      ),
    );
    await this.manager.stop();
    await this.daemon.stop();
    if (!this.keepDirectory) await rm(this.directory, { recursive: true, force: true });
  }
}

/**
 * The manager and the daemon are optional peer dependencies of the kit (a storage-plugin author needs neither):
 * they are loaded only when a `TestEnvironment` is created, and a missing one is named with the fix.
 */
async function loadServices(): Promise<{
  createDaemon: typeof createDaemon;
  resolveManagerConfig: typeof resolveManagerConfig;
  startManager: typeof startManager;
}> {
  const load = async <T>(name: string, importer: () => Promise<T>): Promise<T> => {
    try {
      return await importer();
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ERR_MODULE_NOT_FOUND' && String(error).includes(name)) {
        throw new Error(`TestEnvironment needs ${name}: npm install -D ${name}`, { cause: error });
      }
      throw error;
    }
  };
  const { createDaemon } = await load('@workbay/daemon', () => import('@workbay/daemon'));
  const { resolveManagerConfig, startManager } = await load('@workbay/manager', () => import('@workbay/manager'));
  return { createDaemon, resolveManagerConfig, startManager };
}
