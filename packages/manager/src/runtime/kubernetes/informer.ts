/**
 * A list-and-watch cache of one kind of object: lists once, then watches from the list's resourceVersion,
 * resumes from the last resourceVersion seen (bookmarks included) whenever a watch ends, and re-lists on 410 Gone.
 * Unlike client-node's ListWatch it never gives up after an error (it retries after a pause) and it has a
 * client-side timeout: the server ends each watch after `watchSeconds`, and a watch on which nothing at all
 * arrived for `idleMs` (not even a bookmark) is aborted and re-opened, so a server that holds a watch open silently
 * (seen while an API server shut down) is noticed.
 *
 * @module
 */
import { Watch } from '@kubernetes/client-node';
import type { KubeConfig, KubernetesListObject, KubernetesObject } from '@kubernetes/client-node';
import type { PluginLogger } from '@workbay/api';

export interface InformerOptions<T extends KubernetesObject> {
  readonly kubeConfig: KubeConfig;
  /** The collection's path, e.g. `/apis/workbay.dev/v1alpha1/namespaces/<ns>/workspaces`. */
  readonly path: string;
  readonly list: () => Promise<KubernetesListObject<T>>;
  readonly labelSelector?: string;
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
  private readonly watcher: Watch;
  private resourceVersion = '';
  private synced = false;
  private readonly syncWaiters: Array<() => void> = [];
  private abort?: AbortController;
  private idleTimer?: NodeJS.Timeout;
  private retryTimer?: NodeJS.Timeout;
  private closed = false;

  constructor(private readonly options: InformerOptions<T>) {
    this.watcher = new Watch(options.kubeConfig);
  }

  /** Lists and starts watching; resolves once the first list is in the cache. */
  async start(): Promise<void> {
    this.cycle();
    if (!this.synced) await new Promise<void>((resolve) => this.syncWaiters.push(resolve));
  }

  get(name: string): T | undefined {
    return this.cache.get(name);
  }

  list(): IterableIterator<T> {
    return this.cache.values();
  }

  /** The newest resourceVersion this cache has seen. */
  get version(): string {
    return this.resourceVersion;
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    if (this.idleTimer) clearTimeout(this.idleTimer);
    this.abort?.abort();
  }

  /** One list (when needed) and one watch; schedules the next cycle when the watch ends. */
  private cycle(): void {
    if (this.closed) return;
    this.run().catch((error: unknown) => {
      if (this.closed) return;
      this.options.logger.warn({ error: String(error), what: this.options.what }, 'list/watch failed; retrying');
      this.retryTimer = setTimeout(() => this.cycle(), this.options.retryMs ?? 1_000);
      this.retryTimer.unref();
    });
  }

  private async run(): Promise<void> {
    if (!this.resourceVersion) await this.relist();
    const done = (error: unknown): void => {
      if (this.idleTimer) clearTimeout(this.idleTimer);
      if (this.closed) return;
      const aborted = (error as { name?: string } | null)?.name === 'AbortError';
      if (error && !aborted) {
        const code = (error as { statusCode?: number }).statusCode;
        if (code === 410) this.resourceVersion = '';
        this.options.logger.warn({ error: String(error), what: this.options.what }, 'watch ended with an error');
        this.retryTimer = setTimeout(() => this.cycle(), this.options.retryMs ?? 1_000);
        this.retryTimer.unref();
        return;
      }
      // A routine end (server timeout) or our own idle abort: resume from the last resourceVersion at once.
      setImmediate(() => this.cycle());
    };
    this.abort = await this.watcher.watch(
      this.options.path,
      {
        resourceVersion: this.resourceVersion,
        allowWatchBookmarks: true,
        timeoutSeconds: this.options.watchSeconds ?? 60,
        labelSelector: this.options.labelSelector,
      },
      (type: string, object: T & { code?: number }) => {
        this.touchIdle();
        this.onEvent(type, object);
      },
      done,
    );
    this.touchIdle();
  }

  private async relist(): Promise<void> {
    const list = await this.options.list();
    const present = new Set<string>();
    for (const object of list.items) {
      const name = object.metadata?.name ?? '';
      present.add(name);
      const known = this.cache.get(name);
      if (known?.metadata?.resourceVersion === object.metadata?.resourceVersion) continue;
      this.cache.set(name, object);
      this.options.onUpsert(object);
    }
    for (const [name, object] of [...this.cache]) {
      if (present.has(name)) continue;
      this.cache.delete(name);
      this.options.onDelete(object);
    }
    this.resourceVersion = list.metadata?.resourceVersion ?? '';
    if (!this.synced) {
      this.synced = true;
      for (const resolve of this.syncWaiters.splice(0)) resolve();
    }
  }

  private onEvent(type: string, object: T & { code?: number }): void {
    if (type === 'ERROR') {
      // 410 Gone: the resourceVersion is too old to resume from; the next cycle lists again.
      if (object.code === 410) this.resourceVersion = '';
      this.abort?.abort();
      return;
    }
    const version = object.metadata?.resourceVersion;
    if (version) this.resourceVersion = version;
    if (type === 'BOOKMARK') return;
    const name = object.metadata?.name ?? '';
    if (type === 'DELETED') {
      this.cache.delete(name);
      this.options.onDelete(object);
    } else {
      this.cache.set(name, object);
      this.options.onUpsert(object);
    }
  }

  private touchIdle(): void {
    if (this.idleTimer) clearTimeout(this.idleTimer);
    const idleMs = this.options.idleMs ?? ((this.options.watchSeconds ?? 60) + 30) * 1000;
    this.idleTimer = setTimeout(() => {
      this.options.logger.warn({ what: this.options.what }, 'watch silent past its deadline; re-opening');
      this.abort?.abort();
    }, idleMs);
    this.idleTimer.unref();
  }
}
