/**
 * `createDaemon(config)`: the whole daemon as a library: plugins, storage, quotas, disk guard, the content
 * service, its gRPC server (health and reflection included) and the HTTP side (/metrics, /live, /ready).
 */
import { parseUpstreamProxy } from './initializer/upstream-proxy.js';
import type { UpstreamProxy } from './initializer/upstream-proxy.js';
import type { Subscription } from 'rxjs';
import type { BucketLayout, PluginLogger, RemoteStorage, WorkbayPlugin } from '@workbay/api';
import { PluginHost } from '@workbay/api';
import type { StartedGrpcServer } from '@workbay/api';
import type { NamespaceOps } from '@workbay/nsinsider';
import { CgroupController, createNsinsiderOps } from '@workbay/nsinsider';
import type { DaemonConfig, DaemonConfigInput } from './config.js';
import { parseDaemonConfig, storageBackendSection, workingAreaPaths } from './config.js';
import { WorkspaceContentService } from './content-service.js';
import { FailedPreconditionError } from './errors.js';
import { createContentServiceImplementation, startContentServer } from './grpc/server.js';
import { DiskGuard } from './health/disk-guard.js';
import type { StartedHttpServer } from './health/http-server.js';
import { startHttpServer } from './health/http-server.js';
import { sharedWorkerPool } from './backup/worker-pool.js';
import { createLogger } from './health/logger.js';
import { DaemonMetrics } from './health/metrics.js';
import type { HostOps } from './host-ops/host-ops.js';
import { createHostOps } from './host-ops/host-ops.js';
import type { IwsConfig } from './iws/context.js';
import { IwsHost } from './iws/host.js';
import type { QuotaSupport } from './quota/disk-quota.js';
import { createDiskQuota } from './quota/quotas.js';
import { fsStoragePlugin } from './storage/fs-plugin.js';
import { prepareWorkingArea } from './content/host-modes.js';

/** Parts an embedder (or a test) can supply instead of the defaults. */
export interface DaemonOverrides {
  readonly logger?: PluginLogger;
  readonly hostOps?: HostOps;
  /** Use this storage instead of creating one from `config.storage`. */
  readonly storage?: RemoteStorage;
  /** Plugins registered in addition to those named in `config.plugins`. */
  readonly plugins?: readonly WorkbayPlugin[];
  readonly pluginHost?: PluginHost;
  /** The per-workspace in-workspace service (served by default; `false` turns it off). */
  readonly iws?:
    false | { readonly ops?: NamespaceOps; readonly config?: Partial<IwsConfig>; readonly now?: () => number };
}

export type DaemonState = 'created' | 'starting' | 'running' | 'stopping' | 'stopped';

export interface Daemon {
  readonly config: DaemonConfig;
  /** The gRPC address (`host:port`) once started. */
  readonly address: string;
  /** The HTTP address (`host:port`) once started, undefined when disabled. */
  readonly httpAddress: string | undefined;
  readonly state: DaemonState;
  readonly metrics: DaemonMetrics;
  /** Available once started. */
  readonly service: WorkspaceContentService;
  readonly storage: RemoteStorage | undefined;
  readonly quotaSupport: readonly QuotaSupport[];
  /** The per-workspace in-workspace service sockets, once started (undefined when turned off). */
  readonly iws: IwsHost | undefined;
  /** Running and enough disk space. */
  isReady(): boolean;
  start(): Promise<Daemon>;
  stop(): Promise<void>;
}

class WorkbayDaemon implements Daemon {
  readonly config: DaemonConfig;
  readonly metrics = new DaemonMetrics({ backupWorkers: sharedWorkerPool() });
  state: DaemonState = 'created';
  storage: RemoteStorage | undefined;
  quotaSupport: readonly QuotaSupport[] = [];
  private grpc: StartedGrpcServer | undefined;
  private http: StartedHttpServer | undefined;
  private contentService: WorkspaceContentService | undefined;
  iws: IwsHost | undefined;
  private guard: DiskGuard | undefined;
  private subscriptions: Subscription[] = [];
  private ownsStorage = false;
  private logger: PluginLogger;

  constructor(
    config: DaemonConfigInput | DaemonConfig,
    private readonly overrides: DaemonOverrides,
  ) {
    this.config = parseDaemonConfig(config);
    this.logger = overrides.logger ?? createLogger({ level: this.config.log.level });
  }

  get address(): string {
    if (!this.grpc) throw new FailedPreconditionError('the daemon is not started');
    return this.grpc.address;
  }

  get httpAddress(): string | undefined {
    return this.http?.address;
  }

  get service(): WorkspaceContentService {
    if (!this.contentService) throw new FailedPreconditionError('the daemon is not started');
    return this.contentService;
  }

  isReady(): boolean {
    return this.state === 'running' && (this.guard?.getStatus().ok ?? false);
  }

  async start(): Promise<Daemon> {
    if (this.state !== 'created')
      throw new FailedPreconditionError(`the daemon cannot start from state '${this.state}'`);
    this.state = 'starting';
    try {
      await this.startParts();
    } catch (error) {
      await this.stopParts();
      this.state = 'stopped';
      throw error;
    }
    this.state = 'running';
    this.updateHealth();
    this.logger.info(
      { grpc: this.grpc?.address, http: this.http?.address, storage: this.storage?.kind },
      'workbay daemon running',
    );
    return this;
  }

  private async startParts(): Promise<void> {
    const config = this.config;
    const host = this.overrides.pluginHost ?? new PluginHost({ logger: this.logger });
    host.use(fsStoragePlugin);
    for (const plugin of this.overrides.plugins ?? []) host.use(plugin);
    await host.load(config.plugins);
    if (this.overrides.storage) {
      this.storage = this.overrides.storage;
    } else {
      this.storage = await host.createStorage(config.storage.kind, storageBackendSection(config.storage));
      this.ownsStorage = true;
    }
    const hostOps = this.overrides.hostOps ?? createHostOps();
    await prepareWorkingArea(config.workingArea);
    const paths = workingAreaPaths(config);
    const { quota, support } = await createDiskQuota(config.quota.mode, {
      ops: hostOps,
      workingArea: config.workingArea,
      imageDir: paths.images,
      watchIntervalMs: config.quota.watchInterval,
      loop: config.quota,
      io: {
        readBytesPerSecond: config.quota.io.readBandwidth,
        writeBytesPerSecond: config.quota.io.writeBandwidth,
        readIops: config.quota.io.readIops,
        writeIops: config.quota.io.writeIops,
      },
      logger: this.logger,
    });
    this.quotaSupport = support;
    this.logger.info({ mode: quota.mode, support }, 'disk quota mode selected');
    this.guard = new DiskGuard(hostOps, {
      paths: [config.workingArea],
      minFreeBytes: config.diskGuard.minFree,
      intervalMs: config.diskGuard.interval,
      logger: this.logger,
    });
    this.subscriptions.push(
      this.guard.status$.subscribe((status) => {
        for (const p of status.paths) this.metrics.diskFreeBytes.set({ path: p.path }, p.freeBytes);
        this.updateHealth();
      }),
    );
    // Backends expose the layout they were configured with; the config's own key is the fallback.
    const layout: BucketLayout = this.storage?.layout ??
      (config.storage.layout as BucketLayout | undefined) ?? { mode: 'per-owner' };
    this.iws = await this.createIwsHost();
    this.contentService = new WorkspaceContentService({
      workingArea: config.workingArea,
      storage: this.storage,
      layout,
      backup: {
        format: config.backup.format,
        compression: config.backup.compression,
        concurrency: config.backup.concurrency,
        ...(config.backup.concurrencyPerOwner !== undefined
          ? { concurrencyPerOwner: config.backup.concurrencyPerOwner }
          : {}),
        restoreConcurrency: config.backup.restoreConcurrency,
        attempts: config.backup.attempts,
        initialBackoffMs: config.backup.initialBackoff,
        periodMs: config.backup.period,
        packSize: config.backup.packSize,
        uploadConcurrency: config.backup.uploadConcurrency,
        xattrs: config.backup.xattrs,
        maxKeptPerOwner: config.backup.maxKeptPerOwner,
      },
      snapshots: {
        maxPerWorkspace: config.snapshots.maxPerWorkspace,
        maxBytesPerOwner: config.snapshots.maxBytesPerOwner,
        maxTakingPerOwner: config.snapshots.maxTakingPerOwner,
        storageReserveBytes: config.snapshots.storageReserve,
      },
      initializer: {
        gitRetryInitialMs: config.initializer.gitRetryInitial,
        gitRetryMaxMs: config.initializer.gitRetryMax,
        downloadTimeoutMs: config.initializer.downloadTimeout,
        timeoutMs: config.initializer.timeout,
        download: { ...config.initializer.download, upstreamProxy: upstreamProxyOf(config.initializer.download) },
      },
      git: {
        allowLocalRemotes: config.git.allowLocalRemotes,
        localCommandTimeoutMs: config.git.localCommandTimeout,
        maxMemoryBytes: config.git.maxMemory,
        networkCommandTimeoutMs: config.git.networkCommandTimeout,
        lowSpeed: {
          bytesPerSecond: config.git.lowSpeedLimit,
          seconds: Math.max(1, Math.round(config.git.lowSpeedTime / 1000)),
        },
        addresses: {
          allowPrivateAddresses: config.git.allowPrivateAddresses,
          allowedNetworks: config.git.allowedNetworks,
          upstreamProxy: upstreamProxyOf(config.git),
        },
      },
      quota,
      defaultQuotaBytes: config.quota.defaultSize,
      diskGuard: this.guard,
      metrics: this.metrics,
      logger: this.logger,
      hostOps,
      housekeeping: {
        intervalMs: config.housekeeping.interval,
        orphanAgeMs: config.housekeeping.orphanAge,
        tombstoneTtlMs: config.housekeeping.tombstoneTtl,
      },
      shutdownTimeoutMs: config.shutdownTimeout,
      workspaceIds: config.workspaceIds,
      allowSpecialFiles: config.restore.allowSpecialFiles,
      ...(this.iws ? { lifecycle: this.iwsLifecycle(this.iws) } : {}),
    });
    await this.contentService.start();
    // Workspaces that were running before a restart get their socket back (in the directory they have mounted).
    await this.iws?.resume(this.contentService.getWorkspaces().filter((w) => w.phase === 'ready'));
    await this.guard.check();
    const tls = config.grpc.tls;
    this.grpc = await startContentServer(
      config.grpc.address,
      createContentServiceImplementation(this.contentService, this.logger),
      // With a CA every client must present a certificate it signed.
      tls && { cert: tls.certPath, key: tls.keyPath, ca: tls.caPath, requireClientCert: true },
    );
    if (config.http.address !== 'off') {
      this.http = await startHttpServer(
        config.http.address,
        this.metrics.registry,
        [
          { name: 'daemon', check: () => (this.state === 'running' ? undefined : `daemon is ${this.state}`) },
          {
            name: 'disk-space',
            check: () => {
              const status = this.guard?.getStatus();
              if (!status || status.ok) return undefined;
              const low = status.paths.find((p) => p.freeBytes < p.minFreeBytes);
              return `${low?.freeBytes ?? 0} bytes free in ${low?.path ?? '?'}, threshold ${config.diskGuard.minFree}`;
            },
          },
        ],
        [
          // Backup workers replaced for a stall whose threads never came back: no backup can run any more.
          { name: 'backup-workers', check: () => sharedWorkerPool().liveness() },
        ],
      );
    }
  }

  /**
   * One in-workspace service socket per workspace (see `iws/host.ts`), opened once the content is ready and
   * removed before the content is deleted. Namespace work runs through nsinsider; without a usable cgroup
   * hierarchy the cgroup RPCs answer FAILED_PRECONDITION.
   */
  private async createIwsHost(): Promise<IwsHost | undefined> {
    const settings = this.overrides.iws;
    if (settings === false) return undefined;
    const cgroups = await CgroupController.detect().catch((error: unknown) => {
      this.logger.warn({ err: String(error) }, 'no cgroup hierarchy for the in-workspace service');
      return undefined;
    });
    if (this.config.iws.namespaceOps) {
      // Said loudly: these run root tools in the workspace's namespaces, and two red-team rounds found ways through
      // them (docs/security.md, "What is not covered yet"); a node turns them on only for nested containers.
      this.logger.warn(
        {},
        'iws.namespaceOps is on: workspaces may ask for mounts and id maps in their namespaces; keep it off unless nested containers need it',
      );
    }
    return new IwsHost({
      workingArea: this.config.workingArea,
      ops: settings?.ops ?? createNsinsiderOps(),
      ...(cgroups ? { cgroups } : {}),
      config: {
        namespaceOps: this.config.iws.namespaceOps,
        maxConnections: this.config.iws.maxConnections,
        connectionIdleMs: this.config.iws.connectionIdle,
        penaltyThreshold: this.config.iws.penalty.threshold,
        penaltyWindowMs: this.config.iws.penalty.window,
        penaltyCooldownMs: this.config.iws.penalty.cooldown,
        penaltyMaxCooldownMs: this.config.iws.penalty.maxCooldown,
        penaltyBytesPerSecond: this.config.iws.penalty.bytesPerSecond,
        ...settings?.config,
      },
      ...(settings?.now ? { now: settings.now } : {}),
      logger: this.logger,
      metrics: this.metrics,
    });
  }

  private iwsLifecycle(iws: IwsHost) {
    return {
      contentReady: (workspace: { instanceId: string; workspaceId: string; contentLocation: string }) =>
        iws.open(workspace),
      deleting: (instanceId: string) => iws.remove(instanceId),
    };
  }

  private updateHealth(): void {
    this.grpc?.setServing(this.isReady());
  }

  async stop(): Promise<void> {
    if (this.state === 'stopped' || this.state === 'stopping') return;
    this.state = 'stopping';
    this.updateHealth();
    await this.stopParts();
    this.state = 'stopped';
    this.logger.info({}, 'workbay daemon stopped');
  }

  private async stopParts(): Promise<void> {
    await this.grpc?.stop(this.config.shutdownTimeout);
    await this.contentService?.stop();
    await this.iws?.stop();
    for (const subscription of this.subscriptions) subscription.unsubscribe();
    this.subscriptions = [];
    await this.http?.close();
    if (this.ownsStorage) await this.storage?.close?.();
  }
}

/** Creates a daemon from a config (validated; defaults filled in). Call `start()` to run it. */
export function createDaemon(config: DaemonConfigInput | DaemonConfig = {}, overrides: DaemonOverrides = {}): Daemon {
  return new WorkbayDaemon(config, overrides);
}

/** The parsed `upstreamProxy` of a config section (validated when the config was read), if it has one. */
function upstreamProxyOf(section: {
  readonly upstreamProxy?: { readonly url: string; readonly direct: readonly string[] } | undefined;
}): UpstreamProxy | undefined {
  return section.upstreamProxy
    ? parseUpstreamProxy(section.upstreamProxy.url, section.upstreamProxy.direct)
    : undefined;
}
