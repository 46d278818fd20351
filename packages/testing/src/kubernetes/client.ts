import { request as httpsRequest } from 'node:https';
import type { IncomingMessage } from 'node:http';

/** The content types the API server accepts for a PATCH (and `application/json` for everything else). */
export type KubernetesContentType =
  | 'application/json'
  | 'application/merge-patch+json'
  | 'application/strategic-merge-patch+json'
  | 'application/json-patch+json'
  | 'application/apply-patch+yaml';

/** Per-request options of `KubernetesTestCluster.request`. */
export interface KubernetesRequestOptions {
  /** Bearer token; default the cluster's admin token. */
  readonly token?: string;
  /** Default `application/merge-patch+json` for PATCH, `application/json` otherwise. */
  readonly contentType?: KubernetesContentType;
  /** Default 30 s. */
  readonly timeoutMs?: number;
}

/** An answer of the API server: any status (a 4xx is not thrown), the body parsed as JSON when it is JSON. */
export interface KubernetesResponse<T = unknown> {
  /** The HTTP status. */
  readonly status: number;
  /** The parsed JSON (an object or a `Status`), or the raw text when the answer is not JSON. */
  readonly body: T;
}

/** One watch event as the API server sends it (`ERROR` carries a `Status` object, e.g. code 410 Gone). */
export interface KubernetesWatchEvent<T = KubernetesObject> {
  /** `BOOKMARK` carries only a resourceVersion; `ERROR` a `Status` (code 410: relist). */
  readonly type: 'ADDED' | 'MODIFIED' | 'DELETED' | 'BOOKMARK' | 'ERROR';
  /** The object after the change (before it, for DELETED). */
  readonly object: T;
}

/** Options of `KubernetesTestCluster.watch`. */
export interface KubernetesWatchOptions {
  /** Bearer token; default the admin token. */
  readonly token?: string;
  /** Start after this resourceVersion (omit: the API server sends the current state as ADDED events first). */
  readonly resourceVersion?: string;
  /** e.g. `app.kubernetes.io/component=workspace` */
  readonly labelSelector?: string;
  /** e.g. `spec.nodeName=node-a` */
  readonly fieldSelector?: string;
  /** Server-side end of the watch; default 300 s. */
  readonly timeoutSeconds?: number;
  /** Ask for BOOKMARK events; default true. */
  readonly allowWatchBookmarks?: boolean;
}

/** A running watch: `done` settles when the stream ends (resolves on a clean end, rejects on a broken one). */
export interface KubernetesWatch {
  /** Resolves when the server ends the stream (timeout, shutdown) or after `stop()`; rejects when it breaks. */
  readonly done: Promise<void>;
  /** Closes the stream; no event is delivered afterwards. */
  stop(): void;
}

/** Any Kubernetes object, loosely typed: tests read the fields they need. */
export interface KubernetesObject {
  /** e.g. `v1`, `apps/v1`, `workbay.dev/v1alpha1` */
  apiVersion?: string;
  kind?: string;
  /** The usual object metadata; other fields pass through. */
  metadata?: {
    name?: string;
    namespace?: string;
    uid?: string;
    resourceVersion?: string;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
    deletionTimestamp?: string;
    [key: string]: unknown;
  };
  [key: string]: unknown;
}

/** The API server said no: the status, the Status object's reason and message. */
export class KubernetesApiError extends Error {
  constructor(
    /** The HTTP method of the refused request. */
    readonly method: string,
    /** Its path (without the server). */
    readonly path: string,
    /** The HTTP status, e.g. 403, 409, 422. */
    readonly status: number,
    /** The answer: usually a `Status` object with `reason` and `message`. */
    readonly body: unknown,
  ) {
    const answer = typeof body === 'string' ? { message: body } : (body as { reason?: string; message?: string });
    super(`${method} ${path}: ${status} ${answer?.reason ?? ''} ${String(answer?.message ?? '').slice(0, 500)}`);
    this.name = 'KubernetesApiError';
  }
}

/** A plain JSON client of one API server: node:https with the server's CA and a bearer token, no other dependency. */
export class KubernetesHttpClient {
  constructor(
    private readonly baseUrl: string,
    private readonly ca: Buffer,
    private readonly defaultToken: string,
  ) {}

  request<T = unknown>(
    method: string,
    path: string,
    body?: unknown,
    options: KubernetesRequestOptions = {},
  ): Promise<KubernetesResponse<T>> {
    const contentType =
      options.contentType ?? (method === 'PATCH' ? 'application/merge-patch+json' : 'application/json');
    const payload = body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body);
    return new Promise((resolve, reject) => {
      const req = httpsRequest(
        new URL(path, this.baseUrl),
        {
          method,
          ca: this.ca,
          timeout: options.timeoutMs ?? 30_000,
          headers: {
            authorization: `Bearer ${options.token ?? this.defaultToken}`,
            accept: 'application/json',
            // An explicit length: node:http sends a DELETE body neither chunked nor sized otherwise, and the
            // server then reads it as the start of the next request on the kept-alive connection.
            ...(payload === undefined
              ? {}
              : { 'content-type': contentType, 'content-length': Buffer.byteLength(payload) }),
          },
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (chunk: Buffer) => chunks.push(chunk));
          res.on('error', reject);
          res.on('end', () => {
            const text = Buffer.concat(chunks).toString('utf8');
            let parsed: unknown = text;
            if ((res.headers['content-type'] ?? '').includes('json')) {
              try {
                parsed = JSON.parse(text);
              } catch {
                // keep the text: a broken body is still worth showing in an assertion message
              }
            }
            resolve({ status: res.statusCode ?? 0, body: parsed as T });
          });
        },
      );
      req.on('timeout', () => req.destroy(new Error(`${method} ${path}: no answer within the timeout`)));
      req.on('error', reject);
      req.end(payload);
    });
  }

  /** Like {@link request} but throws {@link KubernetesApiError} on anything but 2xx. */
  async must<T = unknown>(
    method: string,
    path: string,
    body?: unknown,
    options: KubernetesRequestOptions = {},
  ): Promise<T> {
    const res = await this.request<T>(method, path, body, options);
    if (res.status < 200 || res.status >= 300) throw new KubernetesApiError(method, path, res.status, res.body);
    return res.body;
  }

  /**
   * Streams the watch of a collection path (e.g. `/api/v1/namespaces/ns/pods`); `onEvent` sees every event in
   * order. A non-2xx answer to the watch request rejects `done` with {@link KubernetesApiError}.
   */
  watch<T = KubernetesObject>(
    path: string,
    onEvent: (event: KubernetesWatchEvent<T>) => void,
    options: KubernetesWatchOptions = {},
  ): KubernetesWatch {
    const url = new URL(path, this.baseUrl);
    url.searchParams.set('watch', '1');
    url.searchParams.set('timeoutSeconds', String(options.timeoutSeconds ?? 300));
    if (options.allowWatchBookmarks ?? true) url.searchParams.set('allowWatchBookmarks', 'true');
    if (options.resourceVersion) url.searchParams.set('resourceVersion', options.resourceVersion);
    if (options.labelSelector) url.searchParams.set('labelSelector', options.labelSelector);
    if (options.fieldSelector) url.searchParams.set('fieldSelector', options.fieldSelector);
    let stopped = false;
    let response: IncomingMessage | undefined;
    const req = httpsRequest(url, {
      method: 'GET',
      ca: this.ca,
      headers: { authorization: `Bearer ${options.token ?? this.defaultToken}`, accept: 'application/json' },
    });
    const done = new Promise<void>((resolve, reject) => {
      const fail = (error: Error): void => (stopped ? resolve() : reject(error));
      req.on('error', fail);
      req.on('response', (res) => {
        response = res;
        if ((res.statusCode ?? 0) >= 300) {
          const chunks: Buffer[] = [];
          res.on('data', (chunk: Buffer) => chunks.push(chunk));
          res.on('end', () => {
            let body: unknown = Buffer.concat(chunks).toString('utf8');
            try {
              body = JSON.parse(body as string);
            } catch {
              // not JSON: keep the text
            }
            fail(new KubernetesApiError('GET', url.pathname, res.statusCode ?? 0, body));
          });
          return;
        }
        res.setEncoding('utf8');
        let buffer = '';
        res.on('data', (chunk: string) => {
          buffer += chunk;
          let newline: number;
          while ((newline = buffer.indexOf('\n')) >= 0) {
            const line = buffer.slice(0, newline).trim();
            buffer = buffer.slice(newline + 1);
            if (!line || stopped) continue;
            try {
              onEvent(JSON.parse(line) as KubernetesWatchEvent<T>);
            } catch (error) {
              // A throwing handler ends the watch: the caller learns of it through `done`.
              res.destroy();
              reject(error as Error);
              return;
            }
          }
        });
        res.on('error', fail);
        res.on('aborted', () => fail(new Error(`watch ${url.pathname}: the connection was aborted`)));
        // 'close' without 'end' is a broken stream (the server went away); 'end' is the server's timeout.
        res.on('end', () => resolve());
        res.on('close', () => (res.complete ? resolve() : fail(new Error(`watch ${url.pathname}: stream broke`))));
      });
    });
    req.end();
    return {
      done,
      stop: () => {
        stopped = true;
        response?.destroy();
        req.destroy();
      },
    };
  }
}
