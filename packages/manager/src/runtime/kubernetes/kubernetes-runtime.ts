import { CoreV1Api, NetworkingV1Api } from '@kubernetes/client-node';
import type { KubeConfig, V1Pod } from '@kubernetes/client-node';
import { Subject } from 'rxjs';
import type { Observable } from 'rxjs';
import { FailedPreconditionError, UnavailableError, isWorkbayError, silentLogger } from '@workbay/api';
import type { PluginLogger, RuntimeEvent, RuntimeWorkspaceSpec, StopOptions, WorkspaceRuntime } from '@workbay/api';
import { apiError, kubeConfigFor } from './client.js';
import { parseKubernetesRuntimeConfig } from './config.js';
import type { KubernetesRuntimeConfig, KubernetesRuntimeConfigInput } from './config.js';
import { assessPod } from './pod-state.js';
import type { KubernetesWorkspaceState } from './pod-state.js';
import { ensureNetworkPolicies } from './network-policies.js';
import type { NetworkPolicyChanges } from './network-policies.js';
import { ObjectWatch } from './object-watch.js';
import type { WatchEventType } from './object-watch.js';
import { annotations, buildPod, isPodOf, managedBySelector, podName } from './pods.js';

export { apiError, kubeConfigFor } from './client.js';
export type { KubernetesWorkspaceState } from './pod-state.js';

export interface KubernetesRuntimeOptions {
  readonly config?: KubernetesRuntimeConfigInput | KubernetesRuntimeConfig;
  readonly logger?: PluginLogger;
  /** A ready-made KubeConfig (wins over the config's connection settings). */
  readonly kubeConfig?: KubeConfig;
  /**
   * Whether this replica may act on pods on its own initiative (re-create a pod the kubelet rejected). With several
   * manager replicas only the Lease holder may: pass `() => elector.isLeader()`. Default: always.
   */
  readonly isLeader?: () => boolean;
}

interface Tracked {
  pod: V1Pod;
  ready: boolean;
  exited: boolean;
  /** Image pull attempts seen failing (ErrImagePull, or a back-off whose ErrImagePull we did not see). */
  pullFailures: number;
  lastPullWait?: string;
}

/**
 * Runs each workspace as one pod (`ws-<instanceId>`, labelled `app.kubernetes.io/managed-by=workbay`):
 * env, ports and resources from the spec, the content directory as a hostPath volume, readiness from the pod's
 * Ready condition, failures from the pod's status (pod-state.ts). Stop deletes the pod with the grace period and
 * waits (bounded) for the kubelet to confirm; it never force-deletes. Events come from a list-and-watch that
 * resumes from its resourceVersion and re-lists on 410 Gone or a silent server (object-watch.ts).
 *
 * Every pod runs hardened (pods.ts: a non-root uid, no privilege escalation, no capabilities, the runtime's
 * seccomp profile, no host namespaces, no service account token) and behind the namespace's workspace
 * NetworkPolicies (network-policies.ts).
 *
 * Not enforced here: the class's pids limit (a kubelet setting, `podPidsLimit`).
 */
export class KubernetesRuntime implements WorkspaceRuntime {
  readonly kind = 'kubernetes';
  /** Every pod has its own IP: IDE ports need not be unique. */
  readonly addressPerInstance = true;
  readonly config: KubernetesRuntimeConfig;
  private readonly logger: PluginLogger;
  private readonly api: CoreV1Api;
  private readonly watch: ObjectWatch<V1Pod>;
  private isLeader: () => boolean;
  private readonly tracked = new Map<string, Tracked>();
  /** Pods whose deletion this runtime asked for (a stop): their end is not a failure. */
  private readonly stopping = new Set<string>();
  /** Rejected pods being deleted to be created again: their DELETED event is not an exit. */
  private readonly recreating = new Set<string>();
  /** The uids of rejected pods this runtime deleted to re-create: their DELETED events are not an exit either. */
  private readonly replaced = new Set<string>();
  private readonly goneWaiters = new Map<string, Set<() => void>>();
  private readonly eventsSubject = new Subject<RuntimeEvent>();
  private readonly closing = new AbortController();
  private closed = false;
  private policyChanges: NetworkPolicyChanges = { created: [], updated: [], deleted: [], unchanged: [] };

  readonly events$: Observable<RuntimeEvent> = this.eventsSubject.asObservable();

  private constructor(config: KubernetesRuntimeConfig, kubeConfig: KubeConfig, options: KubernetesRuntimeOptions) {
    this.config = config;
    this.logger = options.logger ?? silentLogger;
    this.isLeader = options.isLeader ?? (() => true);
    this.api = kubeConfig.makeApiClient(CoreV1Api);
    this.watch = new ObjectWatch<V1Pod>({
      kubeConfig,
      path: `/api/v1/namespaces/${encodeURIComponent(config.namespace)}/pods`,
      list: () => this.api.listNamespacedPod({ namespace: config.namespace, labelSelector: managedBySelector }),
      what: 'workspace pods',
      labelSelector: managedBySelector,
      watchTimeoutSeconds: config.watchTimeoutSeconds,
      idleTimeoutMs: config.watchIdleTimeoutMs,
      retryMs: config.watchRetryMs,
      logger: this.logger,
      onList: (pods) => this.relisted(pods),
      onEvent: (type, pod) => this.observe(type, pod),
    });
  }

  /**
   * Connects, puts the workspace NetworkPolicies in line with the config (network-policies.ts), lists the
   * workspace pods that already exist, and starts watching. A runtime that cannot put the policies in place does
   * not start: workspaces would run without the isolation the config asks for.
   */
  static async create(options: KubernetesRuntimeOptions = {}): Promise<KubernetesRuntime> {
    const config = parseKubernetesRuntimeConfig(options.config ?? {});
    const kubeConfig = options.kubeConfig ?? kubeConfigFor(config);
    const runtime = new KubernetesRuntime(config, kubeConfig, options);
    runtime.policyChanges = await ensureNetworkPolicies(
      kubeConfig.makeApiClient(NetworkingV1Api),
      config,
      runtime.logger,
    );
    await runtime.watch.start();
    return runtime;
  }

  /** What this runtime's start changed in the namespace's workspace NetworkPolicies. */
  get networkPolicyChanges(): NetworkPolicyChanges {
    return this.policyChanges;
  }

  /**
   * Gates what the runtime does on its own initiative (re-creating rejected pods) on leadership, for a runtime made
   * through the plugin host (which cannot pass {@link KubernetesRuntimeOptions.isLeader}).
   */
  followLeader(isLeader: () => boolean): void {
    this.isLeader = isLeader;
  }

  /** Watch statistics: streams opened and full lists made (a silent or restarted server shows here). */
  get watchStats(): { readonly streams: number; readonly lists: number } {
    return { streams: this.watch.streams, lists: this.watch.lists };
  }

  async start(spec: RuntimeWorkspaceSpec): Promise<KubernetesWorkspaceState> {
    if (this.closed) throw new FailedPreconditionError('the kubernetes runtime is closed');
    const body = buildPod(spec, this.config);
    const name = body.metadata!.name!;
    try {
      const pod = await this.api.createNamespacedPod({ namespace: this.config.namespace, body });
      this.stopping.delete(name);
      this.logger.info({ instanceId: spec.instanceId, pod: name }, 'workspace pod created');
      return assessPod(pod).state;
    } catch (error) {
      throw apiError(error, `creating pod ${name}`);
    }
  }

  /**
   * Deletes the pod with the grace period (at least 1 s: `gracePeriodSeconds=0` would make the API server drop the
   * object at once while its containers may still run) and waits for the kubelet to confirm, at most
   * `stopTimeoutMs`. Past that it rejects with UNAVAILABLE and leaves the pod alone: the caller must not back up or
   * remove content underneath a pod that may still run.
   */
  async stop(instanceId: string, options: StopOptions): Promise<void> {
    const name = podName(instanceId);
    // Only the instance's own pod is deleted, and only the one just read (its uid as the precondition): a pod of that
    // name made for another instance id (by a version that named pods lossily) is not this stop's to delete.
    const pod = await this.readPod(name, instanceId);
    if (!pod) return;
    this.stopping.add(name);
    const gracePeriodSeconds = Math.max(1, Math.ceil(Math.max(0, options.gracePeriodMs) / 1000));
    try {
      await this.api.deleteNamespacedPod({
        name,
        namespace: this.config.namespace,
        gracePeriodSeconds,
        // The API server takes the body's options over the query's: the grace period goes in both.
        body: { gracePeriodSeconds, ...(pod.metadata?.uid ? { preconditions: { uid: pod.metadata.uid } } : {}) },
      });
    } catch (error) {
      const mapped = apiError(error, `deleting pod ${name}`);
      if (isWorkbayError(mapped, 'not-found')) return;
      throw mapped;
    }
    await this.waitGone(name, gracePeriodSeconds, options.signal);
  }

  async inspect(instanceId: string): Promise<KubernetesWorkspaceState | undefined> {
    const pod = await this.readPod(podName(instanceId), instanceId);
    return pod ? this.assess(pod).state : undefined;
  }

  async list(): Promise<KubernetesWorkspaceState[]> {
    try {
      const list = await this.api.listNamespacedPod({
        namespace: this.config.namespace,
        labelSelector: managedBySelector,
      });
      return list.items.map((pod) => this.assess(pod).state);
    } catch (error) {
      throw apiError(error, 'listing workspace pods');
    }
  }

  /** The node the instance's pod is bound to; undefined while it is not bound or when there is no pod. */
  async nodeOf(instanceId: string): Promise<string | undefined> {
    const name = podName(instanceId);
    const tracked = this.tracked.get(name)?.pod;
    const cached = tracked && isPodOf(tracked, instanceId) ? tracked.spec?.nodeName : undefined;
    if (cached) return cached;
    return (await this.readPod(name, instanceId))?.spec?.nodeName || undefined;
  }

  /** Ends the watch and every wait of a stop under way (those stops reject; their pods are left as they are). */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.closing.abort();
    this.watch.close();
    this.eventsSubject.complete();
  }

  // ---------------------------------------------------------------------------------------------------------------

  private assess(pod: V1Pod): ReturnType<typeof assessPod> {
    const tracked = this.tracked.get(pod.metadata?.name ?? '');
    return assessPod(pod, {
      pullFailures: Math.max(1, tracked?.pullFailures ?? 0),
      maxImagePullFailures: this.config.maxImagePullFailures,
    });
  }

  /** The pod of that name; with `instanceId`, only if it is that instance's (see `isPodOf`). */
  private async readPod(name: string, instanceId?: string): Promise<V1Pod | undefined> {
    try {
      const pod = await this.api.readNamespacedPod({ name, namespace: this.config.namespace });
      return instanceId === undefined || isPodOf(pod, instanceId) ? pod : undefined;
    } catch (error) {
      const mapped = apiError(error, `reading pod ${name}`);
      if (isWorkbayError(mapped, 'not-found')) return undefined;
      throw mapped;
    }
  }

  /** Resolves once the pod object is gone (watch or poll); rejects at the stop deadline, on abort or close. */
  private async waitGone(name: string, gracePeriodSeconds: number, signal?: AbortSignal): Promise<void> {
    const aborts = AbortSignal.any([this.closing.signal, ...(signal ? [signal] : [])]);
    const deadline = Date.now() + this.config.stopTimeoutMs;
    for (;;) {
      if (!(await this.readPod(name))) return;
      const left = deadline - Date.now();
      if (aborts.aborted) {
        throw new UnavailableError(
          `stopping pod ${name} was interrupted (the manager is shutting down); the pod may still be running`,
        );
      }
      if (left <= 0) {
        const node = this.tracked.get(name)?.pod.spec?.nodeName;
        throw new UnavailableError(
          `the kubelet did not confirm that pod ${name} stopped within ${Math.round(this.config.stopTimeoutMs / 1000)}s ` +
            `of its deletion (grace period ${gracePeriodSeconds}s); it was not force-deleted: its containers may ` +
            `still be running${node ? ` on node ${node}` : ''}`,
        );
      }
      await this.untilGoneOr(name, Math.min(left, this.config.pollIntervalMs), aborts);
    }
  }

  private untilGoneOr(name: string, ms: number, signal: AbortSignal): Promise<void> {
    return new Promise<void>((resolve) => {
      const waiters = this.goneWaiters.get(name) ?? new Set<() => void>();
      this.goneWaiters.set(name, waiters);
      const done = (): void => {
        clearTimeout(timer);
        signal.removeEventListener('abort', done);
        waiters.delete(done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      signal.addEventListener('abort', done);
      waiters.add(done);
    });
  }

  private relisted(pods: V1Pod[]): void {
    const present = new Set<string>();
    for (const pod of pods) {
      present.add(pod.metadata?.name ?? '');
      this.observe('MODIFIED', pod);
    }
    for (const [name, tracked] of [...this.tracked]) if (!present.has(name)) this.gone(name, tracked.pod);
  }

  private observe(type: WatchEventType, pod: V1Pod): void {
    const name = pod.metadata?.name;
    if (!name) return;
    if (type === 'DELETED') return this.gone(name, pod);
    const tracked = this.tracked.get(name) ?? { pod, ready: false, exited: false, pullFailures: 0 };
    if (this.replaced.has(pod.metadata?.uid ?? '')) return;
    if (tracked.pod.metadata?.uid !== pod.metadata?.uid) {
      Object.assign(tracked, { ready: false, exited: false, pullFailures: 0, lastPullWait: undefined });
    }
    tracked.pod = pod;
    this.tracked.set(name, tracked);
    const wait = assessPod(pod).pullFailure;
    // Each pull attempt shows ErrImagePull, then a back-off: count the attempts, not the status updates.
    if (wait && wait !== tracked.lastPullWait && !(wait === 'ImagePullBackOff' && tracked.lastPullWait)) {
      tracked.pullFailures++;
    }
    tracked.lastPullWait = wait;
    const { state, rejected, deleting } = this.assess(pod);
    if (tracked.exited) return;
    if (rejected) return this.rejected(name, tracked, state);
    if (state.status === 'exited') {
      tracked.exited = true;
      this.emit({ type: 'exited', instanceId: state.instanceId, state: this.requestedEnd(name, state) });
      return;
    }
    if (deleting && !this.stopping.has(name)) {
      // Deleted by someone else (kubectl, an operator, a controller): the workspace is over, say so now rather
      // than show it RUNNING for the whole grace period.
      tracked.exited = true;
      this.emit({
        type: 'exited',
        instanceId: state.instanceId,
        state: { ...state, status: 'exited', ready: false, failure: this.deletedFailure(name, pod) },
      });
      return;
    }
    if (state.ready && !tracked.ready && state.status === 'running') {
      this.emit({ type: 'ready', instanceId: state.instanceId, state });
    }
    tracked.ready = state.ready;
  }

  private deletedFailure(name: string, pod: V1Pod): string {
    const grace = pod.metadata?.deletionGracePeriodSeconds;
    return `the workspace pod ${name} was deleted by someone other than Workbay${grace !== undefined ? ` (grace period ${grace}s)` : ''}`;
  }

  /** The pod object is gone: the instance has exited, unless that was reported already. */
  private gone(name: string, last: V1Pod | undefined): void {
    const tracked = this.tracked.get(name);
    this.tracked.delete(name);
    for (const wake of [...(this.goneWaiters.get(name) ?? [])]) wake();
    this.goneWaiters.delete(name);
    if (this.recreating.has(name) || this.replaced.has(last?.metadata?.uid ?? '')) return;
    const requested = this.stopping.delete(name);
    const pod = last ?? tracked?.pod;
    if (tracked?.exited || !pod) return;
    const { state, rejected } = this.assess(pod);
    // A rejected pod with re-creations left is being replaced (by the leader, maybe another replica): not an end.
    if (rejected && !requested && this.rejectionsOf(pod) + 1 <= this.config.maxPodRejections) return;
    this.emit({
      type: 'exited',
      instanceId: state.instanceId,
      state: {
        ...state,
        status: 'exited',
        ready: false,
        failure: requested ? undefined : (state.failure ?? this.deletedFailure(name, pod)),
      },
    });
  }

  /** A rejected pod is created again (bounded, after a pause) by the leader; past the bound the workspace fails. */
  private rejected(name: string, tracked: Tracked, state: KubernetesWorkspaceState): void {
    if (this.recreating.has(name)) return;
    const count = this.rejectionsOf(tracked.pod) + 1;
    if (this.stopping.has(name) || count > this.config.maxPodRejections) {
      tracked.exited = true;
      const failure = this.stopping.has(name)
        ? undefined
        : `${state.failure} (rejected ${count} time${count === 1 ? '' : 's'}; giving up)`;
      this.emit({ type: 'exited', instanceId: state.instanceId, state: { ...state, failure } });
      return;
    }
    // A follower leaves it to the leader (whose watch sees the same pod).
    if (!this.isLeader()) return;
    this.recreating.add(name);
    this.logger.warn(
      { pod: name, failure: state.failure, attempt: count },
      'the kubelet rejected the pod; re-creating',
    );
    this.recreate(tracked.pod, count)
      .catch((error: unknown) => {
        this.logger.error({ pod: name, error: String(error) }, 're-creating a rejected pod failed');
        this.recreating.delete(name);
        if (!this.tracked.has(name)) this.gone(name, tracked.pod);
      })
      .finally(() => this.recreating.delete(name));
  }

  private async recreate(old: V1Pod, count: number): Promise<void> {
    const name = old.metadata!.name!;
    await new Promise((r) => setTimeout(r, this.config.podRejectionBackoffMs));
    if (this.closed || this.stopping.has(name)) throw new Error('stopped meanwhile');
    // Force deletion is safe here and only here: the kubelet refused the pod, none of its containers ever ran.
    if (old.metadata?.uid) this.replaced.add(old.metadata.uid);
    try {
      await this.api.deleteNamespacedPod({
        name,
        namespace: this.config.namespace,
        gracePeriodSeconds: 0,
        body: { preconditions: { uid: old.metadata?.uid } },
      });
    } catch (error) {
      const mapped = apiError(error, `deleting rejected pod ${name}`);
      if (!isWorkbayError(mapped, 'not-found')) throw mapped;
    }
    const body: V1Pod = {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: {
        name,
        labels: old.metadata?.labels,
        annotations: { ...old.metadata?.annotations, [annotations.rejections]: String(count) },
      },
      // The same node: the workspace's content (a hostPath) is there.
      spec: old.spec,
    };
    if (this.closed || this.stopping.has(name)) throw new Error('stopped meanwhile');
    await this.api.createNamespacedPod({ namespace: this.config.namespace, body });
    this.logger.info({ pod: name, attempt: count }, 'rejected pod re-created');
  }

  private rejectionsOf(pod: V1Pod): number {
    return Number(pod.metadata?.annotations?.[annotations.rejections] ?? 0) || 0;
  }

  private requestedEnd(name: string, state: KubernetesWorkspaceState): KubernetesWorkspaceState {
    return this.stopping.has(name) ? { ...state, failure: undefined } : state;
  }

  private emit(event: RuntimeEvent): void {
    if (!this.closed) this.eventsSubject.next(event);
  }
}
