/**
 * Where the CLI's config comes from and how it is checked before anything starts: the config file, the
 * storage and plugins of the manager's config (`--manager-config`, written by `workbay up`) and the flags. Every
 * error names the file (or flag) and the key, and plugins are loaded and their `parseConfig` run, so that a bad
 * storage section or an uninstalled plugin is a config error and not a failed start.
 */
import { readFile } from 'node:fs/promises';
import { PluginHost, isWorkbayError } from '@workbay/api';
import type { DaemonConfig } from '../config.js';
import { parseDaemonConfig, readDaemonConfigFile, storageBackendSection } from '../config.js';
import { InvalidArgumentError, errorMessage } from '../errors.js';
import { fsStoragePlugin } from '../storage/fs-plugin.js';

/** A config error with the file (or flag) it is in; the message reads `storage.root: is required (in <file>)`. */
export class DaemonConfigError extends InvalidArgumentError {
  /** What is wrong, without the key and the file. */
  readonly problem: string;

  constructor(
    readonly file: string,
    field: string,
    problem: string,
    options?: { cause?: unknown },
  ) {
    super(field, `${problem} (in ${file})`, options);
    this.problem = problem;
  }
}

export interface ConfigSourceOptions {
  readonly config?: string;
  /** JSON `{source, storage?, plugins?}`: the storage and plugins of the manager's config. */
  readonly managerConfig?: string;
  readonly workingArea?: string;
  readonly grpcAddress?: string;
  readonly httpAddress?: string;
  readonly storageRoot?: string;
  readonly logLevel?: string;
}

/** A validated config and, per top-level key, the file it came from. */
export interface SourcedConfig {
  readonly config: DaemonConfig;
  origin(key: string): string;
}

interface ManagerSection {
  readonly source: string;
  readonly storage?: Record<string, unknown>;
  readonly plugins?: unknown[];
}

/** Also an InvalidArgumentError of another copy of @workbay/api (a plugin's own). */
const isInvalid = (error: unknown): error is InvalidArgumentError => isWorkbayError(error, 'invalid-argument');

const isRecord = (value: unknown): value is Record<string, unknown> =>
  typeof value === 'object' && value !== null && !Array.isArray(value);

async function readManagerSection(file: string): Promise<ManagerSection> {
  let raw: unknown;
  try {
    raw = JSON.parse(await readFile(file, 'utf8'));
  } catch (error) {
    throw new DaemonConfigError(file, '(file)', `cannot read the manager's config section: ${errorMessage(error)}`);
  }
  if (!isRecord(raw) || typeof raw['source'] !== 'string') {
    throw new DaemonConfigError(file, '(root)', 'expected {source, storage?, plugins?}');
  }
  const storage = raw['storage'];
  const plugins = raw['plugins'];
  if (storage !== undefined && !isRecord(storage))
    throw new DaemonConfigError(raw['source'], 'storage', 'expected a mapping');
  if (plugins !== undefined && !Array.isArray(plugins))
    throw new DaemonConfigError(raw['source'], 'plugins', 'expected a list');
  return { source: raw['source'], storage, plugins };
}

/** The config file, the manager's section and the flags, validated; errors are {@link DaemonConfigError}s. */
export async function resolveSourcedConfig(options: ConfigSourceOptions): Promise<SourcedConfig> {
  const file = options.config ?? '(defaults)';
  let raw: Record<string, unknown> = {};
  if (options.config) {
    let read: unknown;
    try {
      read = await readDaemonConfigFile(options.config);
    } catch (error) {
      throw new DaemonConfigError(file, '(file)', isInvalid(error) ? error.reason : errorMessage(error));
    }
    if (!isRecord(read)) throw new DaemonConfigError(file, '(root)', 'expected a mapping of keys');
    raw = { ...read };
  }
  const origins = new Map<string, string>();
  let managerPlugins: { from: number; source: string } | undefined;
  if (options.managerConfig) {
    const section = await readManagerSection(options.managerConfig);
    if (section.storage) {
      if (raw['storage'] !== undefined && JSON.stringify(raw['storage']) !== JSON.stringify(section.storage)) {
        throw new DaemonConfigError(
          section.source,
          'storage',
          `storage is also set in the daemon's config ${file}; keep one of them`,
        );
      }
      raw['storage'] = section.storage;
      origins.set('storage', section.source);
    }
    if (section.plugins?.length) {
      const own = Array.isArray(raw['plugins']) ? (raw['plugins'] as unknown[]) : [];
      raw['plugins'] = [...own, ...section.plugins.filter((p) => !own.includes(p))];
      // The manager's plugins come last: an index past the file's own list points into the manager's config.
      managerPlugins = { from: own.length, source: section.source };
    }
  }
  const origin = (key: string): string => {
    const index = /^plugins\[(\d+)\]/.exec(key)?.[1];
    if (managerPlugins && (key === 'plugins' ? managerPlugins.from === 0 : Number(index) >= managerPlugins.from)) {
      return managerPlugins.source;
    }
    const top = /^[A-Za-z]+/.exec(key)?.[0] ?? key;
    return origins.get(top) ?? file;
  };
  const parse = (value: unknown, flagFor: (field: string) => string | undefined): DaemonConfig => {
    try {
      return parseDaemonConfig(value);
    } catch (error) {
      if (isInvalid(error)) {
        throw new DaemonConfigError(flagFor(error.field) ?? origin(error.field), error.field, error.reason);
      }
      throw error;
    }
  };
  const base = parse(raw, () => undefined);
  const overrides: Record<string, unknown> = { ...base };
  const flags = new Map<string, string>();
  if (options.workingArea) {
    overrides['workingArea'] = options.workingArea;
    flags.set('workingArea', '--working-area');
  }
  if (options.grpcAddress) {
    overrides['grpc'] = { ...base.grpc, address: options.grpcAddress };
    flags.set('grpc.address', '--grpc-address');
  }
  if (options.httpAddress) {
    overrides['http'] = { ...base.http, address: options.httpAddress };
    flags.set('http.address', '--http-address');
  }
  if (options.logLevel) overrides['log'] = { ...base.log, level: options.logLevel };
  if (options.storageRoot) {
    if (base.storage.kind !== 'fs') {
      throw new DaemonConfigError(
        '--storage-root',
        'storage.root',
        `only applies to fs storage (configured: ${base.storage.kind} in ${origin('storage')})`,
      );
    }
    overrides['storage'] = { ...base.storage, root: options.storageRoot };
    flags.set('storage.root', '--storage-root');
  }
  return { config: parse(overrides, (field) => flags.get(field)), origin };
}

/**
 * Loads the configured plugins and runs the storage backend's `parseConfig` on its section, as the daemon's
 * start would: an uninstalled or broken plugin, an unknown storage kind or a bad key of the backend is a
 * {@link DaemonConfigError} naming the file and key. Returns the plugin ids and storage kinds it found.
 */
export async function checkPlugins(sourced: SourcedConfig): Promise<{ plugins: string[]; storageKinds: string[] }> {
  const { config, origin } = sourced;
  const host = new PluginHost();
  host.use(fsStoragePlugin);
  for (const [i, name] of config.plugins.entries()) {
    try {
      await host.load([name]);
    } catch (error) {
      throw new DaemonConfigError(origin('plugins'), `plugins[${i}]`, errorMessage(error), { cause: error });
    }
  }
  const kind = config.storage.kind;
  const factory = host.storageBackend(kind);
  if (!factory) {
    throw new DaemonConfigError(
      origin('storage'),
      'storage.kind',
      `no storage backend of kind '${kind}' (registered: ${host.storageKinds().join(', ')}); add its plugin package to plugins`,
    );
  }
  try {
    factory.parseConfig(storageBackendSection(config.storage));
  } catch (error) {
    const field = isInvalid(error) && error.field ? error.field : 'storage';
    const reason = isInvalid(error) ? error.reason : errorMessage(error);
    throw new DaemonConfigError(origin('storage'), field.startsWith('storage') ? field : `storage.${field}`, reason, {
      cause: error,
    });
  }
  return { plugins: host.pluginIds, storageKinds: host.storageKinds() };
}
