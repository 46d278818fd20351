/**
 * The daemon's configuration: a YAML or JSON file (or an object when used as a library), validated with zod.
 * Every error names the bad key (`backup.concurrency: ...`). Durations are Go duration strings (`30s`, `5m`)
 * or milliseconds; sizes are bytes or strings with a unit (`512MiB`, `10GB`).
 */
import { parseUpstreamProxy } from './initializer/upstream-proxy.js';
import { readFile } from 'node:fs/promises';
import { extname, join } from 'node:path';
import { parseByteSize, parseGoDuration, parseWithSchema } from '@workbay/api';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { InvalidArgumentError, errorMessage } from './errors.js';
import { downloadPolicyDefaults, parseNetwork } from './initializer/address-policy.js';
import { loopAdmissionDefaults } from './quota/admission.js';
import { ioLimitDefaults } from './quota/io-throttle.js';
import { snapshotLimitDefaults } from './content/snapshot-budget.js';
import { expandHome } from './util/paths.js';
import { maxWorkingAreaBytes } from './archive/tree.js';

const size = z.union([z.number().int().nonnegative(), z.string()]).transform((value, ctx) => {
  try {
    return parseByteSize(value);
  } catch (error) {
    ctx.addIssue({ code: 'custom', message: isInvalid(error) ? error.reason : errorMessage(error) });
    return z.NEVER;
  }
});

const duration = z.union([z.number().nonnegative(), z.string()]).transform((value, ctx) => {
  if (typeof value === 'number') return value;
  try {
    const ms = parseGoDuration(value);
    if (ms < 0) throw new Error('must not be negative');
    return ms;
  } catch (error) {
    ctx.addIssue({ code: 'custom', message: isInvalid(error) ? error.reason : errorMessage(error) });
    return z.NEVER;
  }
});

function isInvalid(error: unknown): error is InvalidArgumentError {
  return error instanceof InvalidArgumentError;
}

const address = z
  .string()
  .regex(/^(\[[0-9a-fA-F:]+\]|[^:\s]+):\d{1,5}$/, 'must be host:port')
  .refine((value) => Number(value.slice(value.lastIndexOf(':') + 1)) <= 65535, 'port must be <= 65535');

const network = z.string().superRefine((value, ctx) => {
  try {
    parseNetwork(value);
  } catch (error) {
    ctx.addIssue({ code: 'custom', message: errorMessage(error) });
  }
});

/**
 * A forward proxy that outbound connections reach the internet through (nodes without direct egress): the daemon
 * still resolves and checks each target and asks this proxy for a tunnel to the checked address, never the name
 * (initializer/upstream-proxy.ts). Addresses in `direct` are connected to without it.
 */
const upstreamProxySchema = z
  .object({
    /** `http://[user:password@]host:port` */
    url: z.string().superRefine((url, ctx) => {
      try {
        parseUpstreamProxy(url);
      } catch (error) {
        ctx.addIssue({ code: 'custom', message: errorMessage(error) });
      }
    }),
    direct: z.array(network).default([]),
  })
  .strict()
  .optional();

const layout = z.discriminatedUnion('mode', [
  z
    .object({
      mode: z.literal('per-owner'),
      bucketPrefix: z
        .string()
        .regex(/^[a-z0-9][a-z0-9.-]*$/)
        .optional(),
    })
    .strict(),
  z
    .object({
      mode: z.literal('shared'),
      bucket: z.string().regex(/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/, 'is not a valid bucket name'),
    })
    .strict(),
]);

export const daemonConfigSchema = z
  .object({
    /** Where workspace content and session state live (`<workingArea>/<instanceId>`). */
    workingArea: z.string().min(1).default('~/.workbay/workspaces'),
    grpc: z
      .object({
        address: address.default('127.0.0.1:7721'),
        /** Serve TLS; with `caPath`, clients must present a certificate signed by that CA (mutual TLS). */
        tls: z
          .object({ certPath: z.string().min(1), keyPath: z.string().min(1), caPath: z.string().min(1).optional() })
          .strict()
          .optional(),
      })
      .strict()
      .prefault({}),
    /** Metrics, /live and /ready; `address: off` disables the HTTP server. */
    http: z
      .object({ address: z.union([address, z.literal('off')]).default('127.0.0.1:9500') })
      .strict()
      .prefault({}),
    /** Plugin packages to load (each exports `plugin`). */
    plugins: z.array(z.string().min(1)).default([]),
    storage: z
      .object({
        kind: z.string().regex(/^[a-z][a-z0-9-]*$/, 'must be a storage kind like fs or minio'),
        layout: layout.optional(),
      })
      .catchall(z.unknown())
      .default({ kind: 'fs', root: '~/.workbay/storage' }),
    backup: z
      .object({
        format: z.enum(['chunked', 'tar']).default('chunked'),
        compression: z.enum(['none', 'gzip', 'zstd']).default('none'),
        concurrency: z.number().int().min(1).max(64).default(5),
        /** Of `concurrency`, the most one owner's workspaces may run at once (default: all but one, from 3 on). */
        concurrencyPerOwner: z.number().int().min(1).max(64).optional(),
        /**
         * Restores of chunked backups running at once (one owner's: all but one). Each holds its manifest's entries in
         * memory, about 1 GB for the largest (4 million entries): three stay well inside the daemon's heap.
         */
        restoreConcurrency: z.number().int().min(1).max(64).default(3),
        attempts: z.number().int().min(1).max(20).default(3),
        initialBackoff: duration.default(1000),
        period: duration.default(10 * 60 * 1000),
        packSize: size.default(8 * 1024 * 1024),
        uploadConcurrency: z.number().int().min(1).max(32).default(3),
        xattrs: z.boolean().default(true),
        /** Workspaces of one owner whose content a failed final backup keeps here, at most (`0`: no bound). */
        maxKeptPerOwner: z.number().int().min(0).max(10_000).default(3),
      })
      .strict()
      .prefault({}),
    initializer: z
      .object({
        gitRetryInitial: duration.default(1000),
        gitRetryMax: duration.default(5 * 60 * 1000),
        downloadTimeout: duration.default(5 * 60 * 1000),
        /** The whole initialization of a workspace, retries included (`0s`: no bound but the steps' own). */
        timeout: duration.default(60 * 60 * 1000),
        /**
         * Where the daemon's requests for a workspace (download initializer files, one-time git secrets) may go.
         * The URLs are the requester's and the daemon sits inside the node's network: by default loopback,
         * link-local (cloud metadata), private, CGNAT, unique-local, multicast and other non-public addresses are
         * refused, for every redirect hop and every resolved address.
         */
        download: z
          .object({
            /** Allow every address (single-user setups, tests). */
            allowPrivateAddresses: z.boolean().default(false),
            /** Networks allowed although refused by default (an internal mirror): `10.1.0.0/16`, `fd00::/8`, `10.0.0.7`. */
            allowedNetworks: z.array(network).default([]),
            /** Largest file a download may bring. */
            maxSize: size.default(downloadPolicyDefaults.maxSize),
            maxRedirects: z.number().int().min(0).max(20).default(downloadPolicyDefaults.maxRedirects),
            upstreamProxy: upstreamProxySchema,
          })
          .strict()
          .prefault({}),
      })
      .strict()
      .prefault({}),
    /** What git may do for a request (invariant 8); git never runs code chosen by a request or by content. */
    git: z
      .object({
        /** Allow `file://` and local-path remotes (tests, single-user setups); off, only https/http/ssh/git. */
        allowLocalRemotes: z.boolean().default(false),
        /** Bound on each local git command on existing content (status at dispose, the config scan). */
        localCommandTimeout: duration.default(60_000),
        /**
         * Data memory of each git process run as a workspace's user (RLIMIT_DATA; git runs in the daemon's cgroup,
         * so a crafted repository must not take the node's memory: see `GitPolicy.maxMemoryBytes`).
         */
        maxMemory: size.default(1024 ** 3),
        /** Bound on each git command that may talk to a remote (clone, fetch, submodule update; see `GitPolicy`). */
        networkCommandTimeout: duration.default(30 * 60_000),
        /** Http(s) transfers slower than `lowSpeedLimit` bytes a second for `lowSpeedTime` are given up. */
        lowSpeedLimit: z.number().int().min(1).default(1000),
        lowSpeedTime: duration.default(60_000),
        /*
         * Where network git may connect. Every connection git makes (clone, fetch, ls-remote, submodule update, a
         * partial clone's lazy fetch) goes through the daemon's egress proxy, for https, http, ssh and git://, every
         * redirect hop and every submodule: as for downloads (initializer.download), loopback,
         * link-local (cloud metadata), private, CGNAT, unique-local, multicast and other non-public addresses are
         * refused by default, checked at the address connected to. Local remotes (allowLocalRemotes) are not
         * network connections and are not affected.
         */
        /** Let network git reach every address, loopback and private ones included (single-user setups, tests). */
        allowPrivateAddresses: z.boolean().default(false),
        /** Networks allowed although refused by default (an internal forge): `10.1.0.0/16`, `fd00::/8`, `10.0.0.7`. */
        allowedNetworks: z.array(network).default([]),
        /**
         * A forward proxy that network git reaches remotes through (nodes without direct egress). The egress proxy
         * still resolves and checks each target and asks this proxy for a tunnel to the checked address, never the
         * name (git/upstream-proxy.ts). Addresses in `direct` are connected to without it.
         */
        upstreamProxy: upstreamProxySchema,
      })
      .strict()
      .prefault({}),
    quota: z
      .object({
        mode: z.enum(['auto', 'xfs', 'loop', 'watch', 'none']).default('auto'),
        defaultSize: size.default(0),
        watchInterval: duration.default(30_000),
        /*
         * loop mode: an image is admitted only if every live image's unwritten part plus the new image fits in the
         * free space of the images' filesystem above a reserve kept for the node (quota/admission.ts).
         */
        /** Kept free for the node; the reserve is the larger of this and reserveFraction × the filesystem's size. */
        reserveBytes: size.default(loopAdmissionDefaults.reserveBytes),
        reserveFraction: z.number().min(0).max(0.9).default(loopAdmissionDefaults.reserveFraction),
        /** How many times the free space above the reserve may be promised; 1: never more than exists. */
        overcommitRatio: z.number().positive().max(100).default(loopAdmissionDefaults.overcommitRatio),
        /** Allocate each image's full size when it is created (`fallocate`) instead of leaving it sparse. */
        preallocate: z.boolean().default(loopAdmissionDefaults.preallocate),
        /**
         * loop mode: each running workspace's disk bandwidth (bytes a second) and IOPS on its image; 0: no limit
         * of that kind (quota/io-throttle.ts). Needs the cgroup v1 blkio controller; without it, a warning at start.
         */
        io: z
          .object({
            readBandwidth: size.default(ioLimitDefaults.readBytesPerSecond),
            writeBandwidth: size.default(ioLimitDefaults.writeBytesPerSecond),
            readIops: z.number().int().nonnegative().default(ioLimitDefaults.readIops),
            writeIops: z.number().int().nonnegative().default(ioLimitDefaults.writeIops),
          })
          .strict()
          .prefault({}),
      })
      .strict()
      .prefault({}),
    /** Bounds on the snapshots workspaces take (content/snapshot-budget.ts); 0 turns a bound off. */
    snapshots: z
      .object({
        maxPerWorkspace: z.number().int().min(0).default(snapshotLimitDefaults.maxPerWorkspace),
        maxBytesPerOwner: size.default(snapshotLimitDefaults.maxBytesPerOwner),
        maxTakingPerOwner: z.number().int().min(0).max(64).default(snapshotLimitDefaults.maxTakingPerOwner),
        /** Free space a storage on the node's disk (`fs`) keeps for final backups. */
        storageReserve: size.default(snapshotLimitDefaults.storageReserveBytes),
      })
      .strict()
      .prefault({}),
    diskGuard: z
      .object({
        /** 0 disables the guard. */
        minFree: size.default(1024 ** 3),
        interval: duration.default(30_000),
      })
      .strict()
      .prefault({}),
    /** The in-workspace service (`iws/context.ts` says what each setting guards). */
    iws: z
      .object({
        /** Serve PrepareForUserNS, WriteIDMapping, Mount/Umount{Proc,Sysfs} and SetupPairVeths (root tools). */
        namespaceOps: z.boolean().default(false),
        /** Connections one workspace may hold on its socket. */
        maxConnections: z.number().int().min(1).max(10_000).default(64),
        /** A connection with no call for this long is closed. */
        connectionIdle: duration.default(60_000),
        /**
         * A workspace that causes more than `threshold` refused calls and connections over the cap per `window` loses
         * its socket for `cooldown`, doubling per repeat up to `maxCooldown`. 0 disables. Every 256 bytes a second
         * it sends beyond `bytesPerSecond` count too (0: not metered).
         */
        penalty: z
          .object({
            threshold: z.number().int().min(0).max(1_000_000).default(500),
            window: duration.default(10_000),
            cooldown: duration.default(1_000),
            maxCooldown: duration.default(60_000),
            bytesPerSecond: size.default(64 * 1024),
          })
          .strict()
          .refine((p) => p.window >= 1 && p.cooldown >= 1, 'window and cooldown must be at least 1 ms')
          .refine((p) => p.maxCooldown >= p.cooldown, 'maxCooldown must not be below cooldown')
          .prefault({}),
      })
      .strict()
      .prefault({}),
    housekeeping: z
      .object({
        /** 0 disables housekeeping. */
        interval: duration.default(5 * 60 * 1000),
        orphanAge: duration.default(60 * 60 * 1000),
        tombstoneTtl: duration.default(24 * 60 * 60 * 1000),
      })
      .strict()
      .prefault({}),
    /**
     * Host uids/gids for workspaces (uid == gid), used when the daemon runs as root: each workspace gets its own
     * id from [base, base + count), unique among the daemon's live workspaces.
     */
    workspaceIds: z
      .object({
        base: z
          .number()
          .int()
          .min(1)
          .max(2 ** 31 - 2)
          .default(200_000),
        count: z
          .number()
          .int()
          .min(1)
          .max(2 ** 24)
          .default(65_536),
        /**
         * Every workspace's content belongs to `base` instead of an id of its own: for runtimes that run every
         * workspace as one uid (the Kubernetes runtime's pods run as `runAsUser`, 33333 by default: set `base` to it).
         */
        shared: z.boolean().default(false),
        /**
         * Where every daemon of the node claims the ids it hands out (host-id-claims.ts), so that two daemons (two
         * instances, an upgrade beside the old one) never give workspaces of different owners the same host uid.
         * The same for every daemon of a node: the default is a node-wide directory.
         */
        claimsDir: z.string().min(1).default('/var/lib/workbay/host-ids'),
      })
      .strict()
      .refine((ids) => ids.base + ids.count - 1 <= 2 ** 31 - 2, 'base + count must stay below 2^31 - 1')
      .prefault({}),
    /** Restores (snapshots, backups, prebuilds): content is hostile. */
    restore: z
      .object({
        /** Create device nodes and FIFOs and keep setuid/setgid bits and file capabilities from archives. */
        allowSpecialFiles: z.boolean().default(false),
      })
      .strict()
      .prefault({}),
    log: z
      // A union of literals, not z.enum: an enum's declared type lists its members in the type checker's order,
      // which changes between builds (the checked-in API report flapped); a tuple keeps the written order.
      .object({
        level: z
          .union(
            [
              z.literal('fatal'),
              z.literal('error'),
              z.literal('warn'),
              z.literal('info'),
              z.literal('debug'),
              z.literal('trace'),
              z.literal('silent'),
            ],
            { error: 'must be one of fatal, error, warn, info, debug, trace, silent' },
          )
          .default('info'),
      })
      .strict()
      .prefault({}),
    shutdownTimeout: duration.default(30_000),
  })
  .strict();

/** A validated config with every default filled in. */
export type DaemonConfig = z.output<typeof daemonConfigSchema>;
/** What callers may pass: any subset; validated by {@link parseDaemonConfig}. */
export type DaemonConfigInput = z.input<typeof daemonConfigSchema>;

/** Validates a config object; throws InvalidArgumentError naming the bad key. Paths get `~` expanded. */
export function parseDaemonConfig(raw: unknown): DaemonConfig {
  const config = parseWithSchema(daemonConfigSchema, raw ?? {}, '');
  const storage = { ...config.storage };
  if (storage.kind === 'fs' && typeof storage['root'] === 'string') storage['root'] = expandHome(storage['root']);
  const workingArea = expandHome(config.workingArea);
  if (Buffer.byteLength(workingArea) > maxWorkingAreaBytes) {
    // Archives hold paths a restore can write under any working area up to this length (archive/tree.ts).
    throw new InvalidArgumentError(
      'workingArea',
      `'${workingArea.slice(0, 64)}…' is longer than ${maxWorkingAreaBytes} bytes; restored paths would not fit under it`,
    );
  }
  return { ...config, workingArea, storage };
}

/** Reads and validates a YAML (.yaml/.yml) or JSON (.json) config file. */
export async function loadDaemonConfig(path: string): Promise<DaemonConfig> {
  return parseDaemonConfig(await readDaemonConfigFile(path));
}

/** Reads a YAML (.yaml/.yml) or JSON (.json) config file without validating it (`{}` for an empty file). */
export async function readDaemonConfigFile(path: string): Promise<unknown> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (cause) {
    throw new InvalidArgumentError('config', `cannot read ${path}: ${errorMessage(cause)}`, { cause });
  }
  let raw: unknown;
  try {
    raw = extname(path) === '.json' ? JSON.parse(text) : parseYaml(text);
  } catch (cause) {
    throw new InvalidArgumentError(
      'config',
      `${path} is not valid ${extname(path) === '.json' ? 'JSON' : 'YAML'}: ${errorMessage(cause)}`,
      { cause },
    );
  }
  return raw ?? {};
}

/**
 * The section a storage backend's `parseConfig` receives: the flat keys (`{root, layout}`) or, when the
 * backend's keys are nested under its kind, `{kind, <kind>: {..., layout}}`. `layout` always travels with the
 * backend's keys: backends expose it and the daemon names buckets from it.
 */
export function storageBackendSection(storage: DaemonConfig['storage']): unknown {
  const { kind, layout, ...rest } = storage;
  const keys = Object.keys(rest);
  if (keys.length === 1 && keys[0] === kind && typeof rest[kind] === 'object' && rest[kind] !== null) {
    const nested = rest[kind] as Record<string, unknown>;
    return { kind, [kind]: layout ? { ...nested, layout } : nested };
  }
  return layout ? { ...rest, layout } : rest;
}

/** Where loop images and temporary files go inside the working area. */
export function workingAreaPaths(config: DaemonConfig): { images: string; tmp: string } {
  return { images: join(config.workingArea, '.images'), tmp: join(config.workingArea, '.tmp') };
}
