/**
 * The manager's configuration: one YAML or JSON file, validated with zod. Every key has a default, so no file
 * at all gives a working embedded setup (local runtime, daemon on 127.0.0.1:7721, state under ~/.workbay).
 *
 * Durations are Go duration strings ("30m", "1h30m", "1.5s"); sizes are bytes or strings with a unit
 * ("4Gi", "512Mi", "10G").
 *
 * @module
 */
import { readFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { isAbsolute, join, resolve } from 'node:path';
import { InvalidArgumentError, parseGoDuration } from '@workbay/api';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';

const duration = z.string().superRefine((value, ctx) => {
  try {
    if (parseGoDuration(value) < 0) ctx.addIssue({ code: 'custom', message: `duration '${value}' is negative` });
  } catch (error) {
    ctx.addIssue({ code: 'custom', message: (error as InvalidArgumentError).reason ?? String(error) });
  }
});

const sizeUnits: Readonly<Record<string, number>> = {
  '': 1,
  b: 1,
  k: 1e3,
  m: 1e6,
  g: 1e9,
  t: 1e12,
  ki: 1024,
  mi: 1024 ** 2,
  gi: 1024 ** 3,
  ti: 1024 ** 4,
};

/** Parses `4Gi`, `512Mi`, `10G`, `1000` into bytes. */
export function parseByteSize(value: string | number): number {
  if (typeof value === 'number') {
    if (!Number.isFinite(value) || value < 0) throw new Error(`size ${value} must be a non-negative number`);
    return Math.floor(value);
  }
  const match = /^\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*$/.exec(value);
  const unit = match ? sizeUnits[match[2]!.toLowerCase().replace(/b$/, '') || ''] : undefined;
  if (!match || unit === undefined) throw new Error(`'${value}' is not a size (e.g. 4Gi, 512Mi, 10G)`);
  return Math.floor(Number(match[1]) * unit);
}

const byteSize = z.union([z.number(), z.string()]).superRefine((value, ctx) => {
  try {
    parseByteSize(value);
  } catch (error) {
    ctx.addIssue({ code: 'custom', message: (error as Error).message });
  }
});

const address = z
  .string()
  .regex(/^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):[0-9]{1,5}$/, 'expected host:port, e.g. 127.0.0.1:7720');

const tlsSchema = z
  .object({
    /** PEM certificate chain of this server. */
    cert: z.string(),
    /** PEM private key. */
    key: z.string(),
    /** PEM CA bundle; when set, clients must present a certificate signed by it (mTLS). */
    ca: z.string().optional(),
    /** With `ca`: reject clients without a certificate (default true). */
    requireClientCert: z.boolean().default(true),
  })
  .strict();

const clientTlsSchema = z
  .object({
    /** PEM CA bundle that signed the daemon's certificate. */
    ca: z.string(),
    /** Client certificate and key for mTLS. */
    cert: z.string().optional(),
    key: z.string().optional(),
    /** Expected server name in the daemon's certificate. */
    serverName: z.string().optional(),
  })
  .strict();

const resourcesSchema = z
  .object({
    /** CPU limit in cores. */
    cpu: z.number().positive().default(2),
    memory: byteSize.default('4Gi'),
    pids: z.number().int().positive().default(2048),
    /** Disk quota for the workspace content, sent to the daemon as storage_quota_bytes (0: none). */
    disk: byteSize.default('10Gi'),
  })
  .strict();

const workspaceClassSchema = z
  .object({
    displayName: z.string().optional(),
    /** Default: "<cpu> vCPU, <mem>GB memory, <disk>GB disk" from the resources. */
    description: z.string().optional(),
    creditsPerMinute: z.number().nonnegative().default(0),
    resources: resourcesSchema.prefault({}),
  })
  .strict();

const timeoutsSchema = z
  .object({
    /** Creating/initializing phases, and running without any user activity yet. */
    startup: duration.default('1h'),
    /** Pending phase. */
    initialization: duration.default('30m'),
    /** Inactivity timeout of a regular workspace (spec.timeout overrides). */
    regularWorkspace: duration.default('30m'),
    /** Hard cap on a workspace's lifetime (spec.maximum_lifetime overrides, capped by this). */
    maxLifetime: duration.default('36h'),
    /** Lifetime of a headless workspace (prebuild, image build). */
    headlessWorkspace: duration.default('1h'),
    /** Inactivity timeout after the IDE was closed (spec.closed_timeout overrides; 0 disables). */
    afterClose: duration.default('2m'),
    /** Stopping, until the final backup is complete. */
    contentFinalization: duration.default('1h'),
    /** Stopping, after the final backup is complete. */
    stopping: duration.default('1h'),
    /** Part of the original contract; unused. */
    interrupted: duration.default('5m'),
    /** Expected MarkActive interval of clients; timeouts are checked every heartbeatInterval/2. */
    heartbeatInterval: duration.default('30s'),
    /** Overrides heartbeatInterval/2 as the check period (tests use short values). */
    checkInterval: duration.optional(),
    /** Upper bound for per-workspace inactivity and closed timeouts (spec and SetTimeout); larger values are capped. */
    maxWorkspaceTimeout: duration.default('24h'),
  })
  .strict();

const defaultClasses = {
  'g1-standard': {
    displayName: 'Standard',
    creditsPerMinute: 0.1667,
    resources: { cpu: 2, memory: '4Gi', pids: 2048, disk: '10Gi' },
  },
  'g1-large': {
    displayName: 'Large',
    creditsPerMinute: 0.3333,
    resources: { cpu: 4, memory: '8Gi', pids: 4096, disk: '30Gi' },
  },
};

const runtimeSchema = z
  .object({
    /** Which registered runtime to use: `local` (built in) or one a plugin brings (`kubernetes`). */
    kind: z.string().default('local'),
  })
  .catchall(z.unknown());

const managerConfigSchema = z
  .object({
    /** Where the manager keeps its workspace records (one file per workspace). */
    stateDir: z.string().default('~/.workbay/manager'),
    grpc: z
      .object({
        address: address.default('127.0.0.1:7720'),
        tls: tlsSchema.optional(),
      })
      .strict()
      .prefault({}),
    daemon: z
      .object({
        /** gRPC address of the workspace daemon (wsdaemon.WorkspaceContentService). */
        address: address.default('127.0.0.1:7721'),
        tls: clientTlsSchema.optional(),
        /** Embedded mode: the command that starts the daemon; default: the installed @workbay/daemon's bin. */
        command: z.array(z.string()).min(1).optional(),
        /** Embedded mode: config file passed to the daemon with --config. */
        configPath: z.string().optional(),
        /** Embedded mode: whether startEmbedded starts the daemon (false: use an already running one). */
        spawn: z.boolean().default(true),
        /** Embedded mode: the daemon's metrics/health HTTP address (`off` disables it); default: the daemon's own. */
        httpAddress: z.union([address, z.literal('off')]).optional(),
        /** Embedded mode: root of the daemon's fs storage; default: the daemon's own (~/.workbay/storage). */
        storageRoot: z.string().optional(),
        /** Embedded mode: pass the daemon's output through (`inherit`) or drop it (`ignore`). */
        output: z.enum(['inherit', 'ignore']).default('inherit'),
        /** Embedded mode: start the daemon again when it exits unexpectedly. */
        restart: z.boolean().default(true),
        /** Embedded mode: the daemon gets SIGTERM when the manager dies, even by SIGKILL (through setpriv). */
        dieWithManager: z.boolean().default(true),
        /** Embedded mode: how long a daemon left running by a killed manager gets to stop before SIGKILL. */
        orphanStopTimeout: duration.default('35s'),
        /** How long startEmbedded waits for the daemon's gRPC health. */
        startTimeout: duration.default('30s'),
        /** Attempts for DisposeWorkspace when the daemon is unavailable (invariant 5). */
        disposeAttempts: z.number().int().min(1).default(5),
        /** First backoff between attempts; doubles each time. */
        retryBackoff: duration.default('1s'),
      })
      .strict()
      .prefault({}),
    /** The daemon's working area; the content dir of a workspace is `<workingArea>/<instanceId>` unless the daemon says otherwise. */
    workingArea: z.string().default('~/.workbay/workspaces'),
    runtime: runtimeSchema.prefault({}),
    /** Plugin packages to load (each exports `plugin`), e.g. `@workbay/storage-minio`. */
    plugins: z.array(z.string()).default([]),
    /**
     * The remote storage that holds snapshots, for DeleteVolumeSnapshot: `{kind, ...backend config}`, created
     * through a plugin's storage backend. Without it, the daemon deletes snapshots (its DeleteSnapshot).
     */
    storage: z.object({ kind: z.string() }).catchall(z.unknown()).optional(),
    proxy: z
      .object({
        enabled: z.boolean().default(true),
        address: address.default('127.0.0.1:7780'),
        /** Host-header routing: `<id>.ws.<domain>` and `<port>-<id>.ws.<domain>`; path routing always works. */
        domain: z.string().optional(),
        /** Name prefix of the owner-token cookie (one cookie per workspace). */
        cookieName: z
          .string()
          .regex(/^[A-Za-z0-9_-]+$/)
          .default('workbay_owner'),
      })
      .strict()
      .prefault({}),
    metrics: z
      .object({
        enabled: z.boolean().default(true),
        address: address.default('127.0.0.1:9501'),
        /** Serve PUT/GET /admin/maintenance on the metrics port (loopback only by default). */
        admin: z.boolean().default(true),
      })
      .strict()
      .prefault({}),
    /**
     * Workspace URL. Variables: {{id}}, {{prefix}}, {{metaId}}, {{owner}}, {{proxy}} (the proxy's host:port),
     * {{domain}}.
     */
    urlTemplate: z.string().default('http://{{proxy}}/ws/{{id}}/'),
    /** Port URL; also {{port}}. */
    portUrlTemplate: z.string().default('http://{{proxy}}/ws/{{id}}/port/{{port}}/'),
    /** Starts that may run at once (content init and process launch); further workspaces wait in PENDING. */
    maxConcurrentStarts: z.number().int().min(1).default(25),
    /** Host ports handed out as workspace IDE ports (the first runtime port). */
    idePorts: z
      .object({ from: z.number().int().min(1).max(65535), to: z.number().int().min(1).max(65535) })
      .strict()
      .refine((r) => r.from <= r.to, { message: 'from must be <= to' })
      .default({ from: 23000, to: 23999 }),
    workspaceClasses: z.record(z.string().regex(/^[A-Za-z0-9._-]+$/), workspaceClassSchema).prefault(defaultClasses),
    /** The class used when a request names none. Must exist. */
    defaultWorkspaceClass: z.string().default('g1-standard'),
    /** Reported by DescribeCluster; defaults to defaultWorkspaceClass. Must exist. */
    preferredWorkspaceClass: z.string().optional(),
    /** A request naming an unknown class: `reject` (INVALID_ARGUMENT) or `default` (use the default class, like the original). */
    unknownClass: z.enum(['reject', 'default']).default('reject'),
    timeouts: timeoutsSchema.prefault({}),
    stopGrace: z
      .object({ normally: duration.default('30s'), immediately: duration.default('1s'), abort: duration.default('1s') })
      .strict()
      .prefault({}),
    subscribe: z
      .object({
        /**
         * Unread updates above which a subscriber that stops reading is cut off (RESOURCE_EXHAUSTED) after
         * `stallTimeout`; a subscriber that keeps reading is never cut off.
         */
        bufferSize: z.number().int().min(1).default(250),
        /** How long a subscriber over `bufferSize` may go without reading anything. */
        stallTimeout: duration.default('10s'),
        /** Memory guard: unread updates at which a subscriber is cut off at once. */
        maxBacklog: z.number().int().min(1).default(50_000),
        /** Recent updates kept for SubscribeRequest.resume_from_status_version. */
        historySize: z.number().int().min(0).default(10_000),
      })
      .strict()
      .prefault({}),
    maintenance: z
      .object({
        /** Static switch. */
        enabled: z.boolean().default(false),
        /** JSON file `{"enabledUntil": "<RFC3339>"}` or `{"enabled": true}`; default `<stateDir>/maintenance.json`. */
        file: z.string().optional(),
        /** How often the file is re-read. */
        pollInterval: duration.default('2s'),
      })
      .strict()
      .prefault({}),
    auth: z
      .object({
        /**
         * Bearer tokens accepted on the gRPC API (metadata `authorization: Bearer <token>`) and the admin
         * endpoints; required (or grpc.tls with a client CA) when grpc.address is not a loopback address.
         */
        tokens: z.array(z.string().min(16, 'tokens must have at least 16 characters')).default([]),
        /** A file with one token per line (mode 0600), read at start; adds to `tokens`. */
        tokenFile: z.string().optional(),
      })
      .strict()
      .prefault({}),
    secrets: z
      .object({
        /**
         * AES-256-GCM key (32 bytes, mode 0600) that seals credentials in the workspace records; created on the
         * first start. Default `<stateDir>/secrets.key`. Keep it with the state: records cannot be opened without it.
         */
        keyFile: z.string().optional(),
      })
      .strict()
      .prefault({}),
    /** How long stopped workspaces stay visible (Describe, GetWorkspaces) before their record is removed. */
    stoppedRetention: duration.default('10m'),
    log: z
      .object({ level: z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']).default('info') })
      .strict()
      .prefault({}),
  })
  .strict()
  .superRefine((config, ctx) => {
    if (!config.workspaceClasses[config.defaultWorkspaceClass]) {
      ctx.addIssue({
        code: 'custom',
        path: ['defaultWorkspaceClass'],
        message: `class '${config.defaultWorkspaceClass}' is not defined in workspaceClasses`,
      });
    }
    if (config.preferredWorkspaceClass && !config.workspaceClasses[config.preferredWorkspaceClass]) {
      ctx.addIssue({
        code: 'custom',
        path: ['preferredWorkspaceClass'],
        message: `class '${config.preferredWorkspaceClass}' is not defined in workspaceClasses`,
      });
    }
    const t = config.timeouts;
    if (parseGoDuration(t.stopping) < parseGoDuration(t.contentFinalization)) {
      ctx.addIssue({
        code: 'custom',
        path: ['timeouts', 'stopping'],
        message: 'must be at least timeouts.contentFinalization',
      });
    }
  });

/** The config file's shape (what a user writes; every key optional). */
export type ManagerConfigInput = z.input<typeof managerConfigSchema>;

export interface ResolvedClass {
  readonly id: string;
  readonly displayName: string;
  readonly description: string;
  readonly creditsPerMinute: number;
  readonly resources: {
    readonly cpu: number;
    readonly memoryBytes: number;
    readonly pids: number;
    readonly diskBytes: number;
  };
}

export interface TimeoutSettings {
  readonly startupMs: number;
  readonly initializationMs: number;
  readonly regularWorkspaceMs: number;
  readonly maxLifetimeMs: number;
  readonly headlessWorkspaceMs: number;
  readonly afterCloseMs: number;
  readonly contentFinalizationMs: number;
  readonly stoppingMs: number;
  readonly interruptedMs: number;
  readonly heartbeatIntervalMs: number;
  readonly checkIntervalMs: number;
  readonly maxWorkspaceTimeoutMs: number;
}

export interface TlsFiles {
  readonly cert: string;
  readonly key: string;
  readonly ca?: string;
  readonly requireClientCert: boolean;
}

/** The validated config with paths resolved and durations/sizes parsed. */
export interface ManagerConfig {
  readonly stateDir: string;
  readonly grpc: { readonly address: string; readonly tls?: TlsFiles };
  readonly daemon: {
    readonly address: string;
    readonly tls?: { readonly ca: string; readonly cert?: string; readonly key?: string; readonly serverName?: string };
    readonly command?: readonly string[];
    readonly configPath?: string;
    readonly spawn: boolean;
    readonly httpAddress?: string;
    readonly storageRoot?: string;
    readonly output: 'inherit' | 'ignore';
    readonly restart: boolean;
    readonly dieWithManager: boolean;
    readonly orphanStopTimeoutMs: number;
    readonly startTimeoutMs: number;
    readonly disposeAttempts: number;
    readonly retryBackoffMs: number;
  };
  readonly workingArea: string;
  readonly runtime: { readonly kind: string; readonly [key: string]: unknown };
  readonly plugins: readonly string[];
  readonly storage?: { readonly kind: string; readonly [key: string]: unknown };
  readonly proxy: {
    readonly enabled: boolean;
    readonly address: string;
    readonly domain?: string;
    readonly cookieName: string;
  };
  readonly metrics: { readonly enabled: boolean; readonly address: string; readonly admin: boolean };
  readonly urlTemplate: string;
  readonly portUrlTemplate: string;
  readonly idePorts: { readonly from: number; readonly to: number };
  readonly maxConcurrentStarts: number;
  readonly workspaceClasses: readonly ResolvedClass[];
  readonly defaultWorkspaceClass: string;
  readonly preferredWorkspaceClass: string;
  readonly unknownClass: 'reject' | 'default';
  readonly timeouts: TimeoutSettings;
  readonly stopGrace: { readonly normallyMs: number; readonly immediatelyMs: number; readonly abortMs: number };
  readonly subscribe: {
    readonly bufferSize: number;
    readonly historySize: number;
    readonly stallTimeoutMs: number;
    readonly maxBacklog: number;
  };
  readonly maintenance: { readonly enabled: boolean; readonly file: string; readonly pollIntervalMs: number };
  readonly stoppedRetentionMs: number;
  readonly secrets: { readonly keyFile: string };
  readonly auth: { readonly tokens: readonly string[]; readonly tokenFile?: string };
  readonly log: { readonly level: string };
}

/** Thrown for a config that does not validate; the message names the file and the bad key. */
export class ManagerConfigError extends InvalidArgumentError {
  constructor(source: string, key: string, message: string) {
    super(key, `${message} (in ${source})`);
  }
}

function expandHome(path: string, baseDir: string): string {
  if (path === '~') return homedir();
  if (path.startsWith('~/')) return join(homedir(), path.slice(2));
  return isAbsolute(path) ? path : resolve(baseDir, path);
}

function formatGb(bytes: number): string {
  const gb = bytes / 1024 ** 3;
  return Number.isInteger(gb) ? String(gb) : gb.toFixed(1);
}

/**
 * Validates a raw config object (as parsed from YAML/JSON) and resolves it. Relative paths resolve against
 * `baseDir` (the config file's directory). Throws {@link ManagerConfigError} naming the first bad key.
 */
export function resolveManagerConfig(raw: unknown, options: { source?: string; baseDir?: string } = {}): ManagerConfig {
  const source = options.source ?? 'config';
  const baseDir = options.baseDir ?? process.cwd();
  const parsed = managerConfigSchema.safeParse(raw ?? {});
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    let key = issue.path.map(String).join('.');
    let message = issue.message;
    if (issue.code === 'unrecognized_keys') {
      const unknown = (issue as { keys: string[] }).keys;
      key = [...issue.path.map(String), unknown[0]].join('.');
      message = `unknown key${unknown.length > 1 ? `s ${unknown.join(', ')}` : ''}`;
    }
    throw new ManagerConfigError(source, key || '(root)', message);
  }
  const c = parsed.data;
  const ms = (value: string): number => parseGoDuration(value);
  const stateDir = expandHome(c.stateDir, baseDir);
  const classes: ResolvedClass[] = Object.entries(c.workspaceClasses)
    .map(([id, cls]) => {
      const resources = {
        cpu: cls.resources.cpu,
        memoryBytes: parseByteSize(cls.resources.memory),
        pids: cls.resources.pids,
        diskBytes: parseByteSize(cls.resources.disk),
      };
      return {
        id,
        displayName: cls.displayName ?? id,
        description:
          cls.description ??
          `${resources.cpu} vCPU, ${formatGb(resources.memoryBytes)}GB memory, ${formatGb(resources.diskBytes)}GB disk`,
        creditsPerMinute: cls.creditsPerMinute,
        resources,
      };
    })
    .sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  const t = c.timeouts;
  const heartbeatIntervalMs = ms(t.heartbeatInterval);
  const path = (p: string | undefined): string | undefined => (p === undefined ? undefined : expandHome(p, baseDir));
  return {
    stateDir,
    grpc: {
      address: c.grpc.address,
      tls: c.grpc.tls && {
        cert: path(c.grpc.tls.cert)!,
        key: path(c.grpc.tls.key)!,
        ca: path(c.grpc.tls.ca),
        requireClientCert: c.grpc.tls.requireClientCert,
      },
    },
    daemon: {
      address: c.daemon.address,
      tls: c.daemon.tls && {
        ca: path(c.daemon.tls.ca)!,
        cert: path(c.daemon.tls.cert),
        key: path(c.daemon.tls.key),
        serverName: c.daemon.tls.serverName,
      },
      command: c.daemon.command,
      configPath: path(c.daemon.configPath),
      spawn: c.daemon.spawn,
      httpAddress: c.daemon.httpAddress,
      storageRoot: path(c.daemon.storageRoot),
      output: c.daemon.output,
      restart: c.daemon.restart,
      dieWithManager: c.daemon.dieWithManager,
      orphanStopTimeoutMs: ms(c.daemon.orphanStopTimeout),
      startTimeoutMs: ms(c.daemon.startTimeout),
      disposeAttempts: c.daemon.disposeAttempts,
      retryBackoffMs: ms(c.daemon.retryBackoff),
    },
    workingArea: expandHome(c.workingArea, baseDir),
    runtime: c.runtime as ManagerConfig['runtime'],
    plugins: c.plugins,
    storage: c.storage as ManagerConfig['storage'],
    proxy: c.proxy,
    metrics: c.metrics,
    urlTemplate: c.urlTemplate,
    portUrlTemplate: c.portUrlTemplate,
    idePorts: c.idePorts,
    maxConcurrentStarts: c.maxConcurrentStarts,
    workspaceClasses: classes,
    defaultWorkspaceClass: c.defaultWorkspaceClass,
    preferredWorkspaceClass: c.preferredWorkspaceClass ?? c.defaultWorkspaceClass,
    unknownClass: c.unknownClass,
    timeouts: {
      startupMs: ms(t.startup),
      initializationMs: ms(t.initialization),
      regularWorkspaceMs: ms(t.regularWorkspace),
      maxLifetimeMs: ms(t.maxLifetime),
      headlessWorkspaceMs: ms(t.headlessWorkspace),
      afterCloseMs: ms(t.afterClose),
      contentFinalizationMs: ms(t.contentFinalization),
      stoppingMs: ms(t.stopping),
      interruptedMs: ms(t.interrupted),
      heartbeatIntervalMs,
      checkIntervalMs: t.checkInterval !== undefined ? ms(t.checkInterval) : heartbeatIntervalMs / 2,
      maxWorkspaceTimeoutMs: ms(t.maxWorkspaceTimeout),
    },
    stopGrace: {
      normallyMs: ms(c.stopGrace.normally),
      immediatelyMs: ms(c.stopGrace.immediately),
      abortMs: ms(c.stopGrace.abort),
    },
    subscribe: {
      bufferSize: c.subscribe.bufferSize,
      historySize: c.subscribe.historySize,
      stallTimeoutMs: ms(c.subscribe.stallTimeout),
      maxBacklog: Math.max(c.subscribe.maxBacklog, c.subscribe.bufferSize),
    },
    maintenance: {
      enabled: c.maintenance.enabled,
      file: path(c.maintenance.file) ?? join(stateDir, 'maintenance.json'),
      pollIntervalMs: ms(c.maintenance.pollInterval),
    },
    stoppedRetentionMs: ms(c.stoppedRetention),
    secrets: { keyFile: path(c.secrets.keyFile) ?? join(stateDir, 'secrets.key') },
    auth: { tokens: c.auth.tokens, tokenFile: path(c.auth.tokenFile) },
    log: c.log,
  };
}

/** The configuration used when there is no config file. */
export const defaultManagerConfig: ManagerConfig = resolveManagerConfig({}, { source: 'defaults' });

/**
 * Loads the config file (YAML or JSON; JSON is YAML) at `path`, or the defaults when `path` is undefined.
 * `overrides` are merged over the file's top-level keys (used by tests and the CLI).
 */
export async function loadManagerConfig(path?: string, overrides: ManagerConfigInput = {}): Promise<ManagerConfig> {
  if (path === undefined) return resolveManagerConfig(overrides, { source: 'defaults' });
  const absolute = resolve(path);
  let text: string;
  try {
    text = await readFile(absolute, 'utf8');
  } catch (cause) {
    throw new ManagerConfigError(absolute, '(file)', `cannot read config file: ${(cause as Error).message}`);
  }
  let raw: unknown;
  try {
    raw = parseYaml(text) ?? {};
  } catch (cause) {
    throw new ManagerConfigError(absolute, '(file)', `not valid YAML/JSON: ${(cause as Error).message}`);
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    throw new ManagerConfigError(absolute, '(root)', 'expected a mapping of keys');
  }
  return resolveManagerConfig(
    { ...(raw as object), ...overrides },
    { source: absolute, baseDir: join(absolute, '..') },
  );
}
