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
import { InvalidArgumentError, parseByteSize, parseGoDuration, parseWithSchema } from '@workbay/api';
import { parse as parseYaml } from 'yaml';
import type { z } from 'zod';
import { managerConfigSchema } from './config-schema.js';
import type { ManagerConfigInput } from './config-schema.js';
import type { ProxyLimits } from './proxy/connection-limits.js';

export type { ManagerConfigInput } from './config-schema.js';

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
    /** 0: the daemon's `/live` is not watched. */
    readonly livenessIntervalMs: number;
    readonly livenessFailures: number;
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
    /** Overrides of the proxy's connection limits (see `proxy/connection-limits.ts`). */
    readonly limits?: Partial<ProxyLimits>;
  };
  readonly metrics: { readonly enabled: boolean; readonly address: string; readonly admin: boolean };
  readonly urlTemplate: string;
  readonly portUrlTemplate: string;
  readonly idePorts: { readonly from: number; readonly to: number };
  readonly maxConcurrentStarts: number;
  readonly maxConcurrentStartsPerOwner: number;
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
    readonly maxStreams: number;
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

/** Validates against the schema; the shared adapter names the first bad key, and the error says which file. */
function parseManagerSchema(raw: unknown, source: string): z.output<typeof managerConfigSchema> {
  try {
    return parseWithSchema(managerConfigSchema, raw ?? {}, '');
  } catch (error) {
    if (error instanceof InvalidArgumentError) throw new ManagerConfigError(source, error.field, error.reason);
    throw error;
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
  const c = parseManagerSchema(raw, source);
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
      livenessIntervalMs: ms(c.daemon.livenessInterval),
      livenessFailures: c.daemon.livenessFailures,
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
    maxConcurrentStartsPerOwner: Math.min(
      c.maxConcurrentStarts,
      c.maxConcurrentStartsPerOwner ?? Math.max(1, Math.floor(c.maxConcurrentStarts / 5)),
    ),
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
      maxStreams: c.subscribe.maxStreams,
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
