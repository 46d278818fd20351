import { CoreV1Api, KubeConfig, Watch } from '@kubernetes/client-node';
import type { V1Pod } from '@kubernetes/client-node';
import { Subject } from 'rxjs';
import type { Observable } from 'rxjs';
import {
  AlreadyExistsError,
  FailedPreconditionError,
  InvalidArgumentError,
  NotFoundError,
  PermissionDeniedError,
  UnauthenticatedError,
  UnavailableError,
  isWorkbayError,
  silentLogger,
} from '@workbay/api';
import type {
  PluginLogger,
  RuntimeEvent,
  RuntimeWorkspaceSpec,
  RuntimeWorkspaceState,
  StopOptions,
  WorkspaceRuntime,
} from '@workbay/api';
import { parseKubernetesRuntimeConfig } from './config.js';
import type { KubernetesRuntimeConfig, KubernetesRuntimeConfigInput } from './config.js';
import { buildPod, managedBySelector, podName, podState } from './pods.js';

/** The kubernetes runtime's view of an instance: the SPI state plus the pod it runs in. */
export type KubernetesWorkspaceState = RuntimeWorkspaceState & { readonly idePort: number; readonly podName: string };

export interface KubernetesRuntimeOptions {
  readonly config?: KubernetesRuntimeConfigInput | KubernetesRuntimeConfig;
  readonly logger?: PluginLogger;
  /** A ready-made KubeConfig (wins over the config's connection settings). */
  readonly kubeConfig?: KubeConfig;
}

interface Seen {
  ready: boolean;
  exited: boolean;
  state: KubernetesWorkspaceState;
}

/**
 * Runs each workspace as one pod (`ws-<instanceId>`, labelled `app.kubernetes.io/managed-by=workbay`):
 * env, ports and resources from the spec, the content directory as a hostPath volume, readiness from the pod's
 * Ready condition. Stop deletes the pod with the grace period; list/inspect read the labelled pods; events come
 * from a watch (re-listed and diffed whenever the watch has to be re-opened).
 *
 * Not enforced here: the class's pids limit (a kubelet setting, `podPidsLimit`).
 */
export class KubernetesRuntime implements WorkspaceRuntime {
  readonly kind = 'kubernetes';
  readonly config: KubernetesRuntimeConfig;
  private readonly logger: PluginLogger;
  private readonly api: CoreV1Api;
  private readonly watcher: Watch;
  private readonly seen = new Map<string, Seen>();
  private readonly stopping = new Set<string>();
  private readonly eventsSubject = new Subject<RuntimeEvent>();
  private watchAbort?: AbortController;
  private retryTimer?: NodeJS.Timeout;
  private closed = false;

  readonly events$: Observable<RuntimeEvent> = this.eventsSubject.asObservable();

  private constructor(config: KubernetesRuntimeConfig, kubeConfig: KubeConfig, logger: PluginLogger) {
    this.config = config;
    this.logger = logger;
    this.api = kubeConfig.makeApiClient(CoreV1Api);
    this.watcher = new Watch(kubeConfig);
  }

  /** Connects, lists the workspace pods that already exist, and starts watching. */
  static async create(options: KubernetesRuntimeOptions = {}): Promise<KubernetesRuntime> {
    const config = parseKubernetesRuntimeConfig(options.config ?? {});
    const runtime = new KubernetesRuntime(
      config,
      options.kubeConfig ?? kubeConfigFor(config),
      options.logger ?? silentLogger,
    );
    await runtime.resync();
    return runtime;
  }

  async start(spec: RuntimeWorkspaceSpec): Promise<KubernetesWorkspaceState> {
    if (this.closed) throw new FailedPreconditionError('the kubernetes runtime is closed');
    const body = buildPod(spec, this.config);
    try {
      const pod = await this.api.createNamespacedPod({ namespace: this.config.namespace, body });
      this.logger.info({ instanceId: spec.instanceId, pod: pod.metadata?.name }, 'workspace pod created');
      return podState(pod);
    } catch (error) {
      throw apiError(error, `creating pod ${body.metadata?.name}`);
    }
  }

  async stop(instanceId: string, options: StopOptions): Promise<void> {
    const name = podName(instanceId);
    this.stopping.add(name);
    const gracePeriodSeconds = Math.ceil(Math.max(0, options.gracePeriodMs) / 1000);
    try {
      await this.api.deleteNamespacedPod({ name, namespace: this.config.namespace, gracePeriodSeconds });
    } catch (error) {
      const mapped = apiError(error, `deleting pod ${name}`);
      if (isWorkbayError(mapped, 'not-found')) return;
      throw mapped;
    }
    // The pod object disappears once the kubelet has stopped the containers (grace period included).
    const until = Date.now() + gracePeriodSeconds * 1000 + this.config.deletionTimeoutMs;
    while (Date.now() < until) {
      if (!(await this.readPod(name))) return;
      await new Promise((r) => setTimeout(r, this.config.pollIntervalMs));
    }
    throw new UnavailableError(
      `pod ${name} still exists ${Math.round((until - Date.now()) / 1000)}s after its deletion deadline`,
    );
  }

  async inspect(instanceId: string): Promise<KubernetesWorkspaceState | undefined> {
    const pod = await this.readPod(podName(instanceId));
    return pod ? podState(pod) : undefined;
  }

  async list(): Promise<KubernetesWorkspaceState[]> {
    return (await this.listPods()).items.map(podState);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.watchAbort?.abort();
    this.eventsSubject.complete();
  }

  // ---------------------------------------------------------------------------------------------------------------

  private async readPod(name: string): Promise<V1Pod | undefined> {
    try {
      return await this.api.readNamespacedPod({ name, namespace: this.config.namespace });
    } catch (error) {
      const mapped = apiError(error, `reading pod ${name}`);
      if (isWorkbayError(mapped, 'not-found')) return undefined;
      throw mapped;
    }
  }

  private async listPods(): Promise<{ items: V1Pod[]; resourceVersion?: string }> {
    try {
      const list = await this.api.listNamespacedPod({
        namespace: this.config.namespace,
        labelSelector: managedBySelector,
      });
      return { items: list.items, resourceVersion: list.metadata?.resourceVersion };
    } catch (error) {
      throw apiError(error, 'listing workspace pods');
    }
  }

  /** Lists, reports what changed since the last look (as the watch would have), then watches from there. */
  private async resync(): Promise<void> {
    const { items, resourceVersion } = await this.listPods();
    const present = new Set<string>();
    for (const pod of items) {
      present.add(pod.metadata?.name ?? '');
      this.observe('MODIFIED', pod);
    }
    for (const name of [...this.seen.keys()]) {
      if (!present.has(name)) this.gone(name, undefined);
    }
    await this.startWatch(resourceVersion);
  }

  private async startWatch(resourceVersion: string | undefined): Promise<void> {
    if (this.closed) return;
    const path = `/api/v1/namespaces/${encodeURIComponent(this.config.namespace)}/pods`;
    this.watchAbort = await this.watcher.watch(
      path,
      { labelSelector: managedBySelector, resourceVersion, allowWatchBookmarks: true },
      (type, object: V1Pod) => {
        if (type === 'ADDED' || type === 'MODIFIED' || type === 'DELETED') this.observe(type, object);
      },
      (error: unknown) => {
        if (this.closed) return;
        if (error) this.logger.warn({ error: String(error) }, 'pod watch ended; re-listing');
        // Watches end routinely (server timeouts); re-listing also covers a resourceVersion that expired (410).
        this.scheduleResync(error ? this.config.watchRetryMs : 50);
      },
    );
  }

  private scheduleResync(delayMs: number): void {
    if (this.closed) return;
    this.retryTimer = setTimeout(() => {
      this.resync().catch((error: unknown) => {
        this.logger.error({ error: String(error) }, 'pod re-list failed; retrying');
        this.scheduleResync(this.config.watchRetryMs);
      });
    }, delayMs);
  }

  private observe(type: 'ADDED' | 'MODIFIED' | 'DELETED', pod: V1Pod): void {
    const name = pod.metadata?.name;
    if (!name) return;
    const state = podState(pod);
    if (type === 'DELETED') {
      this.gone(name, state);
      return;
    }
    const seen = this.seen.get(name) ?? { ready: false, exited: false, state };
    seen.state = state;
    this.seen.set(name, seen);
    if (state.status === 'exited') {
      if (!seen.exited) {
        seen.exited = true;
        this.emit({ type: 'exited', instanceId: state.instanceId, state: this.withoutRequestedFailure(name, state) });
      }
    } else if (state.ready && !seen.ready && state.status !== 'stopping') {
      this.emit({ type: 'ready', instanceId: state.instanceId, state });
    }
    seen.ready = state.ready;
  }

  /** The pod object is gone: the instance has exited, unless that was reported already. */
  private gone(name: string, last: KubernetesWorkspaceState | undefined): void {
    const seen = this.seen.get(name);
    this.seen.delete(name);
    const requested = this.stopping.delete(name);
    const state = last ?? seen?.state;
    if (seen?.exited || !state) return;
    this.emit({
      type: 'exited',
      instanceId: state.instanceId,
      state: {
        ...state,
        status: 'exited',
        ready: false,
        failure: requested ? undefined : (state.failure ?? 'the workspace pod was deleted'),
      },
    });
  }

  private withoutRequestedFailure(name: string, state: KubernetesWorkspaceState): KubernetesWorkspaceState {
    return this.stopping.has(name) ? { ...state, failure: undefined } : state;
  }

  private emit(event: RuntimeEvent): void {
    if (!this.closed) this.eventsSubject.next(event);
  }
}

/** The connection the config describes (used by the runtime and by the control plane). */
export function kubeConfigFor(config: KubernetesRuntimeConfig): KubeConfig {
  const kc = new KubeConfig();
  if (config.server) {
    kc.loadFromOptions({
      clusters: [{ name: 'workbay', server: config.server, skipTLSVerify: config.skipTLSVerify }],
      users: [{ name: 'workbay', token: config.token }],
      contexts: [{ name: 'workbay', cluster: 'workbay', user: 'workbay', namespace: config.namespace }],
      currentContext: 'workbay',
    });
  } else if (config.kubeconfigPath) {
    kc.loadFromFile(config.kubeconfigPath);
  } else {
    kc.loadFromDefault();
  }
  return kc;
}

/** Maps a client-node failure to a domain error; never includes the token. */
export function apiError(error: unknown, what: string): Error {
  if (isWorkbayError(error)) return error;
  const code = typeof error === 'object' && error !== null ? (error as { code?: unknown }).code : undefined;
  const message = apiMessage(error);
  switch (code) {
    case 400:
    case 422:
      return new InvalidArgumentError('pod', `${what}: ${message}`, { cause: error });
    case 401:
      return new UnauthenticatedError(`${what}: the API server rejected the credentials`, { cause: error });
    case 403:
      return new PermissionDeniedError(`${what}: ${message}`, { cause: error });
    case 404:
      return new NotFoundError(`${what}: not found`, { cause: error });
    case 409:
      return new AlreadyExistsError(`${what}: already exists`, { cause: error });
    default:
      return new UnavailableError(`${what}: the Kubernetes API is unavailable (${message})`, { cause: error });
  }
}

function apiMessage(error: unknown): string {
  const body = typeof error === 'object' && error !== null ? (error as { body?: unknown }).body : undefined;
  if (typeof body === 'string') {
    try {
      const parsed = JSON.parse(body) as { message?: string };
      if (parsed.message) return parsed.message;
    } catch {
      // not JSON
    }
  } else if (typeof body === 'object' && body !== null && typeof (body as { message?: unknown }).message === 'string') {
    return (body as { message: string }).message;
  }
  return error instanceof Error ? error.message.split('\n')[0]! : String(error);
}
