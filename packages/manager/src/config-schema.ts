/**
 * The schema of the manager's config file (zod): every key, its default and its checks. `config.ts` validates
 * against it and resolves the result (durations to ms, sizes to bytes, paths made absolute).
 *
 * @module
 */
import type { InvalidArgumentError } from '@workbay/api';
import { parseByteSize, parseGoDuration } from '@workbay/api';
import { z } from 'zod';

const duration = z.string().superRefine((value, ctx) => {
  try {
    if (parseGoDuration(value) < 0) ctx.addIssue({ code: 'custom', message: `duration '${value}' is negative` });
  } catch (error) {
    // Deliberate: the schema reports the bad duration as an issue; the adapter names the key.
    ctx.addIssue({ code: 'custom', message: (error as InvalidArgumentError).reason ?? String(error) });
  }
});

const byteSize = z.union([z.number(), z.string()]).superRefine((value, ctx) => {
  try {
    parseByteSize(value);
  } catch (error) {
    // Deliberate: the schema reports the bad size as an issue; the adapter names the key.
    ctx.addIssue({ code: 'custom', message: (error as InvalidArgumentError).reason ?? String(error) });
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

export const managerConfigSchema = z
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
        /**
         * Embedded mode, with `restart`: how often the daemon's `/live` is probed (`0s`: never); after
         * `livenessFailures` failed probes in a row the daemon is stopped and started again.
         */
        livenessInterval: duration.default('10s'),
        livenessFailures: z.number().int().min(1).default(3),
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
        /**
         * Bounds on what proxy clients (the internet) may hold: see `proxy/connection-limits.ts` for each and its
         * default. Behind a load balancer every client has its address: raise `maxConnectionsPerAddress` or set 0.
         */
        limits: z
          .object({
            maxConnections: z.number().int().min(0),
            maxConnectionsPerAddress: z.number().int().min(0),
            maxConnectionsPerWorkspace: z.number().int().min(0),
            maxConnectionsPerOwner: z.number().int().min(0),
            maxAuthenticatedConnectionsPerWorkspace: z.number().int().min(0),
            maxAuthenticatedConnectionsPerOwner: z.number().int().min(0),
            maxAnonymousConnections: z.number().int().min(0),
            headersTimeoutMs: z.number().int().min(1),
            requestTimeoutMs: z.number().int().min(1),
            handshakeTimeoutMs: z.number().int().min(1),
            idleTimeoutMs: z.number().int().min(1),
            refusalGraceMs: z.number().int().min(0),
            stalledProbeMs: z.number().int().min(1),
            closeLingerMs: z.number().int().min(1),
          })
          .strict()
          .partial()
          .optional(),
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
    /**
     * Of those, one owner's at most (default: a fifth of maxConcurrentStarts, at least one): an owner's further starts
     * wait without standing before other owners' in the node's queue.
     */
    maxConcurrentStartsPerOwner: z.number().int().min(1).optional(),
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
        /**
         * Subscribe streams open at once, all clients together; one more is refused with RESOURCE_EXHAUSTED. Each
         * open stream holds memory whether or not anything happens, so idle streams must not grow without bound.
         */
        maxStreams: z.number().int().min(1).default(10_000),
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
      // A union of literals, not z.enum: an enum's declared type lists its members in the type checker's order,
      // which changes between builds (the checked-in API report flapped); a tuple keeps the written order.
      .object({
        level: z
          .union(
            [
              z.literal('trace'),
              z.literal('debug'),
              z.literal('info'),
              z.literal('warn'),
              z.literal('error'),
              z.literal('fatal'),
              z.literal('silent'),
            ],
            { error: 'must be one of trace, debug, info, warn, error, fatal, silent' },
          )
          .default('info'),
      })
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
