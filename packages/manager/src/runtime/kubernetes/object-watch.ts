/**
 * List-then-watch of the objects of one collection that match a label selector (pods, daemon pods, Workspace
 * objects, Secrets), robust against what a real API server does: the
 * server ends each watch after `timeoutSeconds` (re-opened from the last resourceVersion, bookmarks included), a
 * resourceVersion that is too old answers 410 Gone (re-listed and diffed), and a server or connection that goes
 * silent is noticed by a client-side idle timer (aborted, re-listed, re-opened). client-node's `Watch` cannot be aborted
 * before the server answered the request, so the stream is read here over node:http(s) with the KubeConfig's TLS
 * and credentials.
 *
 * @module
 */
import http from 'node:http';
import https from 'node:https';
import { createInterface } from 'node:readline';
import type { KubeConfig, KubernetesObject } from '@kubernetes/client-node';
import type { PluginLogger } from '@workbay/api';
import { apiError } from './client.js';

export type WatchEventType = 'ADDED' | 'MODIFIED' | 'DELETED';

export interface ObjectWatchOptions<T extends KubernetesObject> {
  readonly kubeConfig: KubeConfig;
  /** The collection's API path, e.g. `/api/v1/namespaces/<ns>/pods`. */
  readonly path: string;
  /** Lists the collection (with the same label selector). */
  readonly list: () => Promise<{ readonly items: T[]; readonly metadata?: { readonly resourceVersion?: string } }>;
  readonly labelSelector: string;
  /** What is watched, for logs and errors (`pods`, `workspaces`). */
  readonly what: string;
  readonly watchTimeoutSeconds: number;
  readonly idleTimeoutMs: number;
  readonly retryMs: number;
  readonly logger: PluginLogger;
  /** A full list: every object that exists now (called after the first list and after every re-list). */
  readonly onList: (objects: T[]) => void;
  readonly onEvent: (type: WatchEventType, object: T) => void;
}

/** Thrown inside the watch loop for a 410 Gone: the resourceVersion is too old, only a re-list helps. */
class Gone extends Error {}
/** Nothing arrived for idleTimeoutMs: the server or the connection went silent; what it missed is re-listed. */
class Silent extends Error {}

export class ObjectWatch<T extends KubernetesObject> {
  private resourceVersion?: string;
  /** Ends the open stream (as an error: the next one resumes from the resourceVersion). */
  private abortStream?: (error: unknown) => void;
  private idleTimer?: NodeJS.Timeout;
  private retryTimer?: NodeJS.Timeout;
  private closed = false;
  /** How many watch streams were opened (for tests and logs). */
  streams = 0;
  /** How many full lists were made. */
  lists = 0;

  constructor(private readonly options: ObjectWatchOptions<T>) {}

  /** Lists (reporting the objects), then keeps watching in the background. Rejects when the first list fails. */
  async start(): Promise<void> {
    await this.relist();
    this.openStream();
  }

  close(): void {
    this.closed = true;
    clearTimeout(this.idleTimer);
    clearTimeout(this.retryTimer);
    this.abortStream?.(undefined);
  }

  private async relist(): Promise<void> {
    try {
      const list = await this.options.list();
      this.lists++;
      this.resourceVersion = list.metadata?.resourceVersion;
      if (!this.closed) this.options.onList(list.items);
    } catch (error) {
      throw apiError(error, `listing ${this.options.what}`);
    }
  }

  private scheduleRelist(delayMs: number): void {
    if (this.closed) return;
    this.retryTimer = setTimeout(() => {
      this.relist().then(
        () => this.openStream(),
        (error: unknown) => {
          this.options.logger.warn({ error: String(error) }, `${this.options.what}: re-list failed; retrying`);
          this.scheduleRelist(this.options.retryMs);
        },
      );
    }, delayMs);
  }

  private scheduleStream(delayMs: number): void {
    if (this.closed) return;
    this.retryTimer = setTimeout(() => this.openStream(), delayMs);
  }

  /** One watch request; when it ends it schedules the next (re-open from the resourceVersion, or re-list). */
  private openStream(): void {
    if (this.closed) return;
    this.streams++;
    let finished = false;
    let request: http.ClientRequest | undefined;
    const finish = (error: unknown): void => {
      if (finished) return;
      finished = true;
      clearTimeout(this.idleTimer);
      request?.destroy();
      if (this.closed) return;
      if (error instanceof Gone) {
        this.options.logger.info({ what: this.options.what }, 'watch: resourceVersion expired (410); re-listing');
        this.scheduleRelist(0);
      } else if (error instanceof Silent) {
        this.options.logger.warn({ error: error.message, what: this.options.what }, 'watch went silent; re-listing');
        this.scheduleRelist(0);
      } else if (error) {
        this.options.logger.warn({ error: String(error), what: this.options.what }, 'watch failed; resuming');
        this.scheduleStream(this.options.retryMs);
      } else {
        // The server ended the watch (its timeout): resume at once from where we are.
        this.scheduleStream(0);
      }
    };
    this.abortStream = finish;
    const armIdle = (): void => {
      clearTimeout(this.idleTimer);
      this.idleTimer = setTimeout(
        () => finish(new Silent(`no watch event for ${this.options.idleTimeoutMs} ms`)),
        this.options.idleTimeoutMs,
      );
    };
    // The idle timer runs from before the request: a server that never answers the headers is noticed too.
    armIdle();
    this.requestOptions().then(
      ({ url, options }) => {
        if (finished) return;
        const send = url.protocol === 'https:' ? https.request : http.request;
        request = send(url, options, (response) => {
          if (response.statusCode === 410) return finish(new Gone());
          if (response.statusCode !== 200) {
            response.resume();
            return finish(new Error(`watch answered HTTP ${response.statusCode}`));
          }
          const lines = createInterface({ input: response, crlfDelay: Infinity });
          lines.on('error', (error) => finish(error));
          lines.on('line', (line) => {
            if (finished) return;
            armIdle();
            try {
              this.handle(JSON.parse(line) as { type?: string; object?: unknown });
            } catch (error) {
              finish(error);
            }
          });
          response.on('error', (error) => finish(error));
          response.on('end', () => finish(undefined));
          response.on('close', () => finish(undefined));
        });
        request.on('error', (error) => finish(error));
        request.end();
      },
      (error: unknown) => finish(error),
    );
  }

  /** The watch URL (from the last resourceVersion) and the client's credentials and TLS settings. */
  private async requestOptions(): Promise<{ url: URL; options: https.RequestOptions }> {
    const { kubeConfig, path, labelSelector, watchTimeoutSeconds } = this.options;
    const server = kubeConfig.getCurrentCluster()?.server;
    if (!server) throw new Error('the kubeconfig has no current cluster');
    const url = new URL(`${server.replace(/\/+$/, '')}${path}`);
    const params: Record<string, string | undefined> = {
      watch: 'true',
      labelSelector,
      allowWatchBookmarks: 'true',
      timeoutSeconds: String(watchTimeoutSeconds),
      resourceVersion: this.resourceVersion,
    };
    for (const [key, value] of Object.entries(params)) if (value !== undefined) url.searchParams.set(key, value);
    const options: https.RequestOptions = { method: 'GET', headers: { Accept: 'application/json' } };
    await kubeConfig.applyToHTTPSOptions(options);
    return { url, options };
  }

  private handle(event: { type?: string; object?: unknown }): void {
    const object = event.object as T & { code?: number };
    switch (event.type) {
      case 'ADDED':
      case 'MODIFIED':
      case 'DELETED':
        if (object.metadata?.resourceVersion) this.resourceVersion = object.metadata.resourceVersion;
        this.options.onEvent(event.type, object);
        return;
      case 'BOOKMARK':
        if (object.metadata?.resourceVersion) this.resourceVersion = object.metadata.resourceVersion;
        return;
      case 'ERROR':
        if (object.code === 410) throw new Gone();
        throw new Error(`watch error event: ${JSON.stringify(object).slice(0, 200)}`);
      default:
        return;
    }
  }
}
