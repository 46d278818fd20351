/**
 * Assembles a manager from its config: runtime (through the plugin host), daemon client, store, core, gRPC
 * server, port proxy and the metrics server. {@link startManager} expects a daemon at `config.daemon.address`;
 * `startEmbedded` (./embedded.ts) also starts the daemon.
 *
 * @module
 */
import { join } from 'node:path';
import { FailedPreconditionError, PluginHost } from '@workbay/api';
import type { PluginLogger, WorkspaceRuntime } from '@workbay/api';
import type { ManagerConfig } from './config.js';
import type { ContentService } from './content/content-service.js';
import { DaemonContentService } from './content/daemon-content-service.js';
import { RemoteStorageSnapshotStore } from './content/snapshot-store.js';
import type { SnapshotStore } from './content/snapshot-store.js';
import { MaintenanceMode } from './core/maintenance.js';
import { WorkspaceManagerCore } from './core/manager.js';
import { checkControlPlaneExposure, loadTokens } from './grpc/auth.js';
import { OpsServer } from './http/ops-server.js';
import { createLogger } from './logger.js';
import type { Logger } from './logger.js';
import { ManagerMetrics } from './metrics.js';
import { ReservedEndpoints } from './proxy/exposure.js';
import { PortProxy } from './proxy/port-proxy.js';
import { observeChange } from './core/observer.js';
// Types only (erased): the module itself is loaded on demand, with its optional peer dependency.
import type * as KubernetesModule from './runtime/kubernetes/index.js';
import { localRuntimePlugin } from './runtime/local/index.js';
import { startManagerServer } from './server.js';
import type { ManagerServer } from './server.js';
import { FileWorkspaceStore } from './store/file-store.js';
import { SealingWorkspaceStore, SecretBox } from './store/secrets.js';

export interface StartManagerOptions {
  readonly config: ManagerConfig;
  readonly logger?: Logger;
  /** Use this runtime instead of creating `config.runtime.kind` (the caller closes it). */
  readonly runtime?: WorkspaceRuntime;
  /** Use this content service instead of the daemon at `config.daemon.address` (the caller closes it). */
  readonly content?: ContentService;
  readonly snapshots?: SnapshotStore;
  /**
   * Called when this replica loses the leader Lease (Kubernetes control plane only). By default the manager stops
   * and the process exits with code 75, as controllers do: the restarted process rejoins as a follower, which is
   * safer than a process that may still be acting on half-finished leader work.
   */
  readonly onLeadershipLost?: () => void;
}

export interface RunningManager {
  readonly config: ManagerConfig;
  readonly core: WorkspaceManagerCore;
  readonly metrics: ManagerMetrics;
  readonly maintenance: MaintenanceMode;
  readonly runtime: WorkspaceRuntime;
  /** host:port of the gRPC server. */
  readonly grpcAddress: string;
  /** host:port of the port proxy ('' when disabled). */
  readonly proxyAddress: string;
  /** The port proxy, when enabled. */
  readonly proxy?: PortProxy;
  /** host:port of the metrics server ('' when disabled). */
  readonly metricsAddress: string;
  /** Stops serving and closes everything; running workspaces keep running and are re-adopted next time. */
  stop(): Promise<void>;
}

/** The runtime section as the runtime's factory expects it: without `kind`, with a state dir under ours. */
function runtimeSection(config: ManagerConfig): Record<string, unknown> {
  const { kind, ...rest } = config.runtime;
  const section: Record<string, unknown> = { ...rest };
  if (kind === 'local' && section.stateDir === undefined) section.stateDir = join(config.stateDir, 'runtime-local');
  return section;
}

/**
 * A plugin host with the built-in runtimes and the configured plugins. The `kubernetes` runtime is loaded only
 * when the config asks for it (its client library is large).
 */
async function createPluginHost(config: ManagerConfig, logger: Logger): Promise<PluginHost> {
  const host = new PluginHost({ logger: logger as unknown as PluginLogger });
  host.use(localRuntimePlugin);
  if (config.runtime.kind === 'kubernetes') {
    host.use((await loadKubernetesModule()).kubernetesRuntimePlugin);
  }
  await host.load(config.plugins);
  return host;
}

/**
 * `@kubernetes/client-node` is an optional peer dependency (54 MB that only this runtime needs): a missing package
 * is a configuration error that names it, not a stack trace from the module loader.
 */
async function loadKubernetesModule(): Promise<typeof KubernetesModule> {
  try {
    return await import('./runtime/kubernetes/index.js');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ERR_MODULE_NOT_FOUND' && String((error as Error).message).includes('@kubernetes/client-node')) {
      throw new FailedPreconditionError(
        "runtime.kind 'kubernetes' needs the optional peer dependency @kubernetes/client-node: npm install @kubernetes/client-node@^1.4",
        { cause: error },
      );
    }
    throw error;
  }
}

/** Creates the runtime named in the config through a plugin host with the built-in `local` runtime. */
export async function createRuntimeFromConfig(
  config: ManagerConfig,
  logger: Logger,
): Promise<{ runtime: WorkspaceRuntime; host: PluginHost }> {
  const host = await createPluginHost(config, logger);
  const runtime = await host.createRuntime(config.runtime.kind, runtimeSection(config));
  return { runtime, host };
}

export async function startManager(options: StartManagerOptions): Promise<RunningManager> {
  const config = options.config;
  const logger = options.logger ?? createLogger({ level: config.log.level });
  const cleanups: Array<() => Promise<void> | void> = [];
  const cleanup = async (): Promise<void> => {
    for (const step of cleanups.splice(0).reverse()) {
      try {
        await step();
      } catch (error) {
        // Deliberate: one part failing to close must not keep the others open; logged, and shutdown goes on.
        logger.error({ err: error }, 'error while shutting down');
      }
    }
  };
  try {
    // Before anything listens: never serve the control plane openly beyond loopback.
    const tokens = loadTokens(config);
    checkControlPlaneExposure(config, tokens);
    const maintenance = new MaintenanceMode(config.maintenance, logger.child({ component: 'maintenance' }));
    await maintenance.start();
    cleanups.push(() => maintenance.stop());

    // Composition is explicit and happens here: the plugin host only supplies the backends the config names.
    const host = await createPluginHost(config, logger);
    let runtime = options.runtime;
    if (!runtime) {
      const owned = await host.createRuntime(config.runtime.kind, runtimeSection(config));
      runtime = owned;
      cleanups.push(() => owned.close());
    }

    let snapshots = options.snapshots;
    if (!snapshots && config.storage) {
      const { kind, ...storageConfig } = config.storage;
      const storage = await host.createStorage(kind, storageConfig);
      const store = new RemoteStorageSnapshotStore(storage);
      snapshots = store;
      cleanups.push(() => store.close());
    }

    let content = options.content;
    // The records, for the node routing below (known once the core exists; nothing asks before it starts).
    const coreRef: { current?: WorkspaceManagerCore } = {};
    if (!content && config.runtime.kind === 'kubernetes') {
      // A daemon per node: each workspace's content lives on (and its pod runs on) one node.
      const routed = await (
        await loadKubernetesModule()
      ).startNodeRoutingContent(runtimeSection(config), {
        tls: config.daemon.tls,
        logger,
        nodeOf: (id) => coreRef.current?.getWorkspace(id)?.progress.nodeName,
      });
      content = routed.content;
      cleanups.push(() => routed.close());
    } else if (!content) {
      const daemon = new DaemonContentService(config.daemon.address, config.daemon.tls);
      content = daemon;
      cleanups.push(() => daemon.close());
    }

    const coreLogger = logger.child({ component: 'core' });
    // On Kubernetes the state lives in Workspace objects and one replica leads (the Lease); else in files.
    let metricsRef: ManagerMetrics | undefined;
    const plane =
      config.runtime.kind === 'kubernetes'
        ? (await loadKubernetesModule()).createKubernetesControlPlane(runtimeSection(config), {
            historySize: config.subscribe.historySize,
            logger,
            onChange: (previous, next) => observeChange(previous, next, coreLogger, metricsRef, Date.now()),
          })
        : undefined;
    if (plane) {
      cleanups.push(() => plane.stop());
      // The runtime's own repairs (re-creating a pod the kubelet rejected) are the leader's alone too.
      const follower = runtime as Partial<{ followLeader(isLeader: () => boolean): void }>;
      follower.followLeader?.(() => plane.elector.isLeader());
    }
    // Records keep credentials (initializer, owner token, env values) only sealed with the operator's key.
    const store = plane
      ? undefined
      : new SealingWorkspaceStore(
          new FileWorkspaceStore(config.stateDir, {
            onError: (error, id) => logger.error({ err: error, workspace: id }, 'cannot persist a workspace record'),
          }),
          await SecretBox.open(config.secrets.keyFile),
        );
    let proxy: PortProxy | undefined;
    // Ports the manager and its daemon listen on: never a workspace port (ControlPort) nor a proxy target.
    const reserved = new ReservedEndpoints()
      .add(config.grpc.address)
      .add(config.proxy.address)
      .add(config.metrics.address)
      .add(config.daemon.address)
      .add(config.daemon.httpAddress);
    let stopped: Promise<void> | undefined;
    const onLeadershipLost =
      options.onLeadershipLost ??
      (() => {
        logger.error('lost the leader lease: stopping, then exiting so that a fresh process rejoins as a follower');
        void (stopped ?? cleanup()).finally(() => process.exit(75));
      });
    const core: WorkspaceManagerCore = new WorkspaceManagerCore({
      config,
      store,
      repository: plane?.repository,
      leadership: plane?.elector,
      onLeadershipLost,
      runtime,
      content,
      snapshots,
      maintenance,
      metrics: (metricsRef = new ManagerMetrics({
        workspaces: () => core.allWorkspaces(),
        shedding: () => proxy?.shedding,
      })),
      logger: coreLogger,
      proxyAddress: () => proxy?.address || config.proxy.address,
      reservedEndpoints: reserved,
    });
    const metrics = metricsRef;
    coreRef.current = core;
    const maintenanceGauge = maintenance.state$.subscribe((s) => metrics.maintenanceEnabled.set(s.enabled ? 1 : 0));
    cleanups.push(() => maintenanceGauge.unsubscribe());

    if (config.proxy.enabled) {
      const started = new PortProxy({
        router: core,
        address: config.proxy.address,
        domain: config.proxy.domain,
        cookieName: config.proxy.cookieName,
        reserved,
        idePorts: config.idePorts,
        secureCookies: config.urlTemplate.startsWith('https:'),
        ...(config.proxy.limits ? { limits: config.proxy.limits } : {}),
        logger: logger.child({ component: 'proxy' }),
      });
      await started.start();
      proxy = started;
      cleanups.push(() => started.stop());
    }

    await core.start();
    cleanups.push(() => core.close());
    plane?.startElection();
    // The proxy closes connections whose admission is revoked (the bus is the core's for its whole life).
    proxy?.follow(core.status$);

    let ready = false;
    let ops: OpsServer | undefined;
    if (config.metrics.enabled) {
      const server = new OpsServer({
        address: config.metrics.address,
        metrics,
        maintenance: config.metrics.admin ? maintenance : undefined,
        isReady: () => ready,
        logger: logger.child({ component: 'metrics' }),
        tokens,
      });
      await server.start();
      reserved.add(server.address);
      ops = server;
      cleanups.push(() => server.stop());
    }

    const grpc: ManagerServer = await startManagerServer({
      core,
      logger: logger.child({ component: 'grpc' }),
      metrics,
      address: config.grpc.address,
      tls: config.grpc.tls,
      tokens,
      subscribeBufferSize: config.subscribe.bufferSize,
      subscribeStallTimeoutMs: config.subscribe.stallTimeoutMs,
      subscribeMaxBacklog: config.subscribe.maxBacklog,
      subscribeMaxStreams: config.subscribe.maxStreams,
    });
    cleanups.push(() => grpc.stop(5_000));
    reserved.add(grpc.address);
    ready = true;

    return {
      config,
      core,
      metrics,
      maintenance,
      runtime,
      grpcAddress: grpc.address,
      proxyAddress: proxy?.address ?? '',
      ...(proxy ? { proxy } : {}),
      metricsAddress: ops?.address ?? '',
      stop: () => {
        stopped ??= (async () => {
          ready = false;
          await cleanup();
          logger.info('manager stopped');
          logger.flush();
        })();
        return stopped;
      },
    };
  } catch (error) {
    await cleanup();
    throw error;
  }
}
