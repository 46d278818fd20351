/**
 * What every replica reads the workspaces from: informer caches of the Workspace objects and their Secrets (one
 * list-and-watch each), the records decoded from them, and the newest object seen or written per workspace (the
 * resourceVersion the leader's next status write goes against).
 *
 * @module
 */
import type { KubeConfig, V1Secret } from '@kubernetes/client-node';
import type { WorkspaceRecord } from '../../domain/types.js';
import type { Logger } from '../../logger.js';
import { Informer } from './informer.js';
import type { WorkspaceObjectsApi } from './workspace-api.js';
import {
  instanceIdOf,
  managedSelector,
  recordOf,
  secretNameFor,
  secretsFromData,
  storedRecordFrom,
} from './workspace-objects.js';
import type { WorkspaceObject, WorkspaceSecrets } from './workspace-objects.js';

export interface WorkspaceCacheOptions {
  readonly kubeConfig: KubeConfig;
  readonly api: WorkspaceObjectsApi;
  readonly logger: Logger;
  /** A Workspace object was added or changed. */
  readonly onObject: (object: WorkspaceObject) => void;
  readonly onObjectRemoved: (object: WorkspaceObject) => void;
  /** A workspace Secret was added or changed. */
  readonly onSecret: (secret: V1Secret) => void;
}

export class WorkspaceCache {
  private readonly workspaces: Informer<WorkspaceObject>;
  private readonly secrets: Informer<V1Secret>;
  /** The newest object this replica wrote or saw, per id. */
  private readonly latest = new Map<string, WorkspaceObject>();

  constructor(private readonly options: WorkspaceCacheOptions) {
    const { api, kubeConfig, logger } = options;
    this.workspaces = new Informer<WorkspaceObject>({
      kubeConfig,
      path: api.objectsPath,
      list: () => api.listObjects(),
      labelSelector: managedSelector,
      onUpsert: (object) => options.onObject(object),
      onDelete: (object) => {
        const id = instanceIdOf(object.metadata);
        if (id) this.latest.delete(id);
        options.onObjectRemoved(object);
      },
      logger,
      what: 'workspaces',
    });
    this.secrets = new Informer<V1Secret>({
      kubeConfig,
      path: api.secretsPath,
      list: () => api.listSecrets(),
      labelSelector: managedSelector,
      onUpsert: (secret) => options.onSecret(secret),
      onDelete: () => undefined,
      logger,
      what: 'workspace secrets',
    });
  }

  /** Lists both collections and keeps watching them. */
  async start(): Promise<void> {
    // Secrets first: a workspace seen before its Secret would have no owner token.
    await this.secrets.start();
    await this.workspaces.start();
  }

  async close(): Promise<void> {
    await this.workspaces.close();
    await this.secrets.close();
  }

  objects(): IterableIterator<WorkspaceObject> {
    return this.workspaces.list();
  }

  object(name: string): WorkspaceObject | undefined {
    return this.workspaces.get(name);
  }

  secretList(): V1Secret[] {
    return [...this.secrets.list()];
  }

  /** Whether the Secret the object names is here yet (it comes through its own watch). */
  hasSecretOf(object: WorkspaceObject): boolean {
    const name = secretNameFor(object);
    return name !== undefined && this.secrets.get(name) !== undefined;
  }

  /** The credentials of the Secret the object names (see secretNameFor), once the Secret is here. */
  secretsOf(object: WorkspaceObject): WorkspaceSecrets | undefined {
    const name = secretNameFor(object);
    return secretsFromData(name ? this.secrets.get(name)?.data : undefined);
  }

  /** The object's newest record with its Secret's values; undefined (and logged) when the object holds none. */
  recordOf(object: WorkspaceObject): WorkspaceRecord | undefined {
    const id = instanceIdOf(object.metadata);
    if (!id || !object.spec?.record) return undefined;
    const stored = storedRecordFrom(object);
    if (!stored || stored.id !== id) {
      this.options.logger.error({ workspace: id }, 'skipping a Workspace object whose record is not one');
      return undefined;
    }
    this.remember(id, object);
    return recordOf(stored, this.secretsOf(object));
  }

  /** Keeps `object` as the newest of `id` unless a newer one is known. */
  remember(id: string, object: WorkspaceObject): void {
    const known = this.latest.get(id);
    if (!known || newer(object, known)) this.latest.set(id, object);
  }

  newest(id: string): WorkspaceObject | undefined {
    return this.latest.get(id);
  }
}

function newer(a: WorkspaceObject, b: WorkspaceObject): boolean {
  return Number(a.metadata.resourceVersion ?? 0) >= Number(b.metadata.resourceVersion ?? 0);
}
