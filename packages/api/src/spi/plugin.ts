import { FailedPreconditionError, InvalidArgumentError } from '../errors.js';
import type { PluginLogger } from './logger.js';
import { silentLogger } from './logger.js';
import type { RemoteStorage } from './storage.js';
import type { WorkspaceRuntime } from './runtime.js';

/** Context handed to a backend factory. */
export interface BackendContext {
  readonly logger: PluginLogger;
}

/**
 * Creates a storage backend from its section of the config. `parseConfig` validates the raw section and throws
 * `InvalidArgumentError` naming the bad key (e.g. `storage.minio.endpoint`).
 */
export interface StorageBackendFactory<C = unknown> {
  readonly kind: string;
  parseConfig(raw: unknown): C;
  create(config: C, context: BackendContext): Promise<RemoteStorage> | RemoteStorage;
}

export interface RuntimeFactory<C = unknown> {
  readonly kind: string;
  parseConfig(raw: unknown): C;
  create(config: C, context: BackendContext): Promise<WorkspaceRuntime> | WorkspaceRuntime;
}

/** What `register` receives. */
export interface PluginRegistry {
  readonly logger: PluginLogger;
  registerStorageBackend<C>(factory: StorageBackendFactory<C>): void;
  registerRuntime<C>(factory: RuntimeFactory<C>): void;
}

export interface WorkbayPlugin {
  /** kebab-case, e.g. `storage-minio`. */
  readonly id: string;
  register(registry: PluginRegistry): void;
}

const pluginIdPattern = /^[a-z][a-z0-9]*(-[a-z0-9]+)*$/;

/** Declares a plugin. A package exports it by name as `plugin` so the host can load it by package name. */
export function createPlugin(definition: WorkbayPlugin): WorkbayPlugin {
  if (!pluginIdPattern.test(definition.id)) {
    throw new InvalidArgumentError('plugin.id', `plugin id '${definition.id}' must be kebab-case`);
  }
  return Object.freeze({ id: definition.id, register: definition.register });
}

const kindPattern = /^[a-z][a-z0-9-]*$/;

/**
 * The registry of plugins and the backends they bring, keyed by `kind`. Composition is explicit: a host (the
 * manager's app.ts, the daemon's daemon.ts) asks it for the backend its config names and wires the result itself;
 * plugins receive only this registry, never a container of the host's components. Registering the same plugin
 * twice is a no-op; two plugins claiming the same `kind` is an error naming both.
 */
export class PluginHost {
  readonly logger: PluginLogger;
  private readonly registered = new Map<string, WorkbayPlugin>();
  private readonly storageFactories = new Map<string, { factory: StorageBackendFactory; owner: string }>();
  private readonly runtimeFactories = new Map<string, { factory: RuntimeFactory; owner: string }>();

  constructor(options: { logger?: PluginLogger } = {}) {
    this.logger = options.logger ?? silentLogger;
  }

  use(plugin: WorkbayPlugin): this {
    const existing = this.registered.get(plugin.id);
    if (existing === plugin) return this;
    if (existing) {
      throw new FailedPreconditionError(`a different plugin with id '${plugin.id}' is already registered`);
    }
    this.registered.set(plugin.id, plugin);
    const logger = this.logger.child({ plugin: plugin.id });
    const claim = <F extends { readonly kind: string }>(
      entries: Map<string, { factory: F; owner: string }>,
      what: string,
      factory: F,
    ): void => {
      const kind = factory.kind;
      if (!kindPattern.test(kind)) {
        throw new InvalidArgumentError('kind', `plugin '${plugin.id}' registers ${what} with invalid kind '${kind}'`);
      }
      const owner = entries.get(kind)?.owner;
      if (owner) {
        throw new FailedPreconditionError(
          `plugin '${plugin.id}' registers ${what} '${kind}', already registered by plugin '${owner}'`,
        );
      }
      entries.set(kind, { factory, owner: plugin.id });
    };
    plugin.register({
      logger,
      registerStorageBackend: (factory) =>
        claim(this.storageFactories, 'storage backend', factory as StorageBackendFactory),
      registerRuntime: (factory) => claim(this.runtimeFactories, 'runtime', factory as RuntimeFactory),
    });
    return this;
  }

  /** Imports each package and registers its exported `plugin`. */
  async load(packageNames: readonly string[]): Promise<this> {
    for (const name of packageNames) {
      let module: Record<string, unknown>;
      try {
        module = (await import(name)) as Record<string, unknown>;
      } catch (cause) {
        // Say why: a missing package, but also a plugin whose own code or dependencies fail to load.
        const code = (cause as { code?: unknown } | null)?.code;
        const why = cause instanceof Error ? cause.message.split('\n')[0]!.slice(0, 300) : String(cause).slice(0, 300);
        const missing = code === 'ERR_MODULE_NOT_FOUND' && why.includes(`'${name}'`);
        throw new FailedPreconditionError(
          `plugin package '${name}' could not be imported${missing ? ' (is it installed?)' : ''}: ${why}`,
          { cause },
        );
      }
      const plugin = module['plugin'];
      if (!isPlugin(plugin)) {
        throw new FailedPreconditionError(`package '${name}' does not export a Workbay plugin named 'plugin'`);
      }
      this.use(plugin);
    }
    return this;
  }

  get pluginIds(): string[] {
    return [...this.registered.keys()];
  }

  storageKinds(): string[] {
    return [...this.storageFactories.keys()];
  }

  runtimeKinds(): string[] {
    return [...this.runtimeFactories.keys()];
  }

  /** The storage backend factory registered for `kind`, if any (e.g. to validate a config without creating). */
  storageBackend(kind: string): StorageBackendFactory | undefined {
    return this.storageFactories.get(kind)?.factory;
  }

  /** Validates the config section and creates the backend registered for `kind`. */
  async createStorage(kind: string, rawConfig: unknown): Promise<RemoteStorage> {
    const factory = this.storageBackend(kind);
    if (!factory) {
      throw new FailedPreconditionError(
        `no storage backend of kind '${kind}' is registered (registered: ${this.storageKinds().join(', ') || 'none'}); add its plugin package to 'plugins'`,
      );
    }
    return factory.create(factory.parseConfig(rawConfig), { logger: this.logger.child({ storage: kind }) });
  }

  async createRuntime(kind: string, rawConfig: unknown): Promise<WorkspaceRuntime> {
    const factory = this.runtimeFactories.get(kind)?.factory;
    if (!factory) {
      throw new FailedPreconditionError(
        `no workspace runtime of kind '${kind}' is registered (registered: ${this.runtimeKinds().join(', ') || 'none'})`,
      );
    }
    return factory.create(factory.parseConfig(rawConfig), { logger: this.logger.child({ runtime: kind }) });
  }
}

function isPlugin(value: unknown): value is WorkbayPlugin {
  return (
    typeof value === 'object' &&
    value !== null &&
    typeof (value as WorkbayPlugin).id === 'string' &&
    typeof (value as WorkbayPlugin).register === 'function'
  );
}
