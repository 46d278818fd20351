/**
 * A cache of one collection kept current by an {@link ObjectWatch} (which owns resuming, re-listing on 410 and the
 * client-side timeouts): reads come from memory, and every change is reported once as an upsert or a delete, also
 * across re-lists (an object whose resourceVersion did not change is not reported again).
 *
 * @module
 */
import type { KubeConfig, KubernetesObject } from '@kubernetes/client-node';
import { setTimeout as sleep } from 'node:timers/promises';
import { isRetryableError } from '@workbay/api';
import type { PluginLogger } from '@workbay/api';
import { ObjectWatch } from './object-watch.js';
import type { ObjectWatchOptions } from './object-watch.js';

export interface InformerOptions<T extends KubernetesObject> {
  readonly kubeConfig: KubeConfig;
  /** The collection's path, e.g. `/apis/workbay.dev/v1alpha1/namespaces/<ns>/workspaces`. */
  readonly path: string;
  readonly list: ObjectWatchOptions<T>['list'];
  readonly labelSelector: string;
  readonly onUpsert: (object: T) => void;
  readonly onDelete: (object: T) => void;
  readonly logger: PluginLogger;
  /** What is watched, for logs. */
  readonly what: string;
  readonly retryMs?: number;
  readonly watchSeconds?: number;
  readonly idleMs?: number;
}

export class Informer<T extends KubernetesObject> {
  private readonly cache = new Map<string, T>();
  private readonly watch: ObjectWatch<T>;

  constructor(private readonly options: InformerOptions<T>) {
    this.watch = new ObjectWatch<T>({
      kubeConfig: options.kubeConfig,
      path: options.path,
      list: options.list,
      labelSelector: options.labelSelector,
      what: options.what,
      watchTimeoutSeconds: options.watchSeconds ?? 60,
      idleTimeoutMs: options.idleMs ?? ((options.watchSeconds ?? 60) + 30) * 1000,
      retryMs: options.retryMs ?? 1_000,
      logger: options.logger,
      onList: (objects) => this.relisted(objects),
      onEvent: (type, object) => (type === 'DELETED' ? this.deleted(object) : this.upserted(object)),
    });
  }

  /**
   * Lists and starts watching; resolves once the first list is in the cache. A list the server cannot answer yet
   * (429 while a new CRD's storage initializes, 503 while it starts) is tried again for up to `startTimeoutMs`;
   * other failures reject at once.
   */
  async start(startTimeoutMs = 30_000): Promise<void> {
    const deadline = Date.now() + startTimeoutMs;
    for (let attempt = 1; ; attempt += 1) {
      try {
        return await this.watch.start();
      } catch (error) {
        if (!isRetryableError(error) || Date.now() >= deadline) throw error;
        this.options.logger.warn(
          { error: String(error), what: this.options.what, attempt },
          'first list failed; retrying',
        );
        await sleep(Math.min(2_000, 100 * 2 ** attempt));
      }
    }
  }

  get(name: string): T | undefined {
    return this.cache.get(name);
  }

  list(): IterableIterator<T> {
    return this.cache.values();
  }

  close(): void {
    this.watch.close();
  }

  private relisted(objects: readonly T[]): void {
    const present = new Set<string>();
    for (const object of objects) {
      const name = object.metadata?.name ?? '';
      present.add(name);
      if (this.cache.get(name)?.metadata?.resourceVersion === object.metadata?.resourceVersion) continue;
      this.upserted(object);
    }
    for (const [name, object] of [...this.cache]) if (!present.has(name)) this.deleted(object);
  }

  private upserted(object: T): void {
    this.cache.set(object.metadata?.name ?? '', object);
    this.options.onUpsert(object);
  }

  private deleted(object: T): void {
    this.cache.delete(object.metadata?.name ?? '');
    this.options.onDelete(object);
  }
}
