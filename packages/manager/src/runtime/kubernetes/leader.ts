import os from 'node:os';
import { CoordinationV1Api, V1MicroTime } from '@kubernetes/client-node';
import type { KubeConfig, V1Lease } from '@kubernetes/client-node';
import { BehaviorSubject } from 'rxjs';
import type { Observable } from 'rxjs';
import { UnavailableError, isWorkbayError, silentLogger } from '@workbay/api';
import type { PluginLogger } from '@workbay/api';
import { apiError } from './kubernetes-runtime.js';

export interface LeaderElectionOptions {
  readonly kubeConfig: KubeConfig;
  readonly namespace: string;
  /** The Lease object's name. */
  readonly leaseName?: string;
  /** This replica's identity (default: the host name, i.e. the pod name). */
  readonly identity?: string;
  /** How long a lease stays valid without renewal. */
  readonly leaseDurationSeconds?: number;
  /** How often the holder renews, and others try to acquire. Must be well below the lease duration. */
  readonly retryPeriodMs?: number;
  readonly logger?: PluginLogger;
}

/**
 * Leader election over a `coordination.k8s.io/v1` Lease, for running several manager replicas: the replica
 * holding the lease is the leader (it runs the lifecycle and timeout loops); the others serve reads and wait.
 * The holder renews every `retryPeriodMs`; a lease not renewed for `leaseDurationSeconds` may be taken over.
 * Updates use the Lease's resourceVersion, so two replicas can never both win the same round.
 *
 * A leader that cannot renew steps down at its renew deadline (a third of the lease duration, at least one renewal
 * period, before the lease it last wrote expires: 10 s after the last renewal with the default 15 s and 5 s),
 * whatever its calls are doing: every Lease call is bounded, and a timer armed at each renewal fires at that
 * deadline. An API server that accepts a request and never answers it would otherwise hold a round open while
 * another replica takes the expired lease over, and two replicas would act as leader.
 */
export class LeaseLeaderElector {
  readonly identity: string;
  private readonly api: CoordinationV1Api;
  private readonly leaseName: string;
  private readonly namespace: string;
  private readonly durationSeconds: number;
  private readonly retryPeriodMs: number;
  private readonly logger: PluginLogger;
  private readonly leaderSubject = new BehaviorSubject<boolean>(false);
  private timer?: NodeJS.Timeout;
  /** Fires at the renew deadline of the last renewal (see the class docs). */
  private watchdog?: NodeJS.Timeout;
  /** The bound on one Lease call. */
  private readonly callTimeoutMs: number;
  /** Date.now() at the start of the last round that wrote the lease as its holder (0: none). */
  private renewedAt = 0;
  private running = false;
  private round?: Promise<void>;

  /** Whether this replica leads; replays the current value to new subscribers. */
  readonly isLeader$: Observable<boolean> = this.leaderSubject.asObservable();

  constructor(options: LeaderElectionOptions) {
    this.api = options.kubeConfig.makeApiClient(CoordinationV1Api);
    this.namespace = options.namespace;
    this.leaseName = options.leaseName ?? 'workbay-manager-leader';
    this.identity = options.identity ?? os.hostname();
    this.durationSeconds = options.leaseDurationSeconds ?? 15;
    this.retryPeriodMs = options.retryPeriodMs ?? 5_000;
    this.logger = options.logger ?? silentLogger;
    this.callTimeoutMs = Math.min(Math.max(1_000, this.retryPeriodMs), (this.durationSeconds * 1000) / 3);
  }

  isLeader(): boolean {
    return this.leaderSubject.value;
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    const tick = (): void => {
      const startedAt = Date.now();
      this.round = this.tryAcquireOrRenew()
        .then((leading) => {
          if (leading) {
            this.renewedAt = startedAt;
            this.armWatchdog();
          }
          this.setLeader(leading);
        })
        .catch((error: unknown) => {
          this.logger.warn({ error: String(error) }, 'leader election round failed');
          // The lease this replica last wrote keeps every other replica out until it expires: an API server that
          // is briefly away (a restart) costs no leadership. Step down at the renew deadline at the latest (see
          // renewDeadline), as the outcome of a failed write cannot be known.
          if (!this.isLeader() || Date.now() >= this.renewDeadline()) this.setLeader(false);
        })
        .finally(() => {
          if (this.running) this.timer = setTimeout(tick, this.retryPeriodMs);
        });
    };
    tick();
  }

  /** Stops electing; a leader releases the lease so that another replica takes over at once. */
  async stop(): Promise<void> {
    this.running = false;
    if (this.timer) clearTimeout(this.timer);
    clearTimeout(this.watchdog);
    await this.round;
    if (this.isLeader()) {
      try {
        const lease = await this.read();
        if (lease?.spec?.holderIdentity === this.identity) {
          lease.spec.holderIdentity = undefined;
          lease.spec.renewTime = undefined;
          await this.bounded(
            this.api.replaceNamespacedLease({ name: this.leaseName, namespace: this.namespace, body: lease }),
            'releasing the lease',
          );
        }
      } catch (error) {
        this.logger.warn({ error: String(error) }, 'could not release the leader lease');
      }
    }
    this.setLeader(false);
    this.leaderSubject.complete();
  }

  /**
   * The margin before expiry is for the other replicas' clocks and the time a takeover write is in flight (client-go
   * keeps the same two thirds: 10 s of 15); it must leave at least one renewal round before the deadline, or a
   * healthy leader would step down between two renewals (found by the bench with the shipped 15 s / 5 s).
   */
  private renewDeadline(): number {
    const durationMs = this.durationSeconds * 1000;
    return this.renewedAt + durationMs - Math.max(this.retryPeriodMs, durationMs / 3);
  }

  private armWatchdog(): void {
    clearTimeout(this.watchdog);
    this.watchdog = setTimeout(
      () => {
        if (!this.isLeader() || Date.now() < this.renewDeadline()) return;
        this.logger.warn({ lease: this.leaseName }, 'the lease was not renewed by its renew deadline; stepping down');
        this.setLeader(false);
      },
      Math.max(0, this.renewDeadline() - Date.now()),
    );
  }

  /** One Lease call, failed with UNAVAILABLE when the API server does not answer within callTimeoutMs. */
  private bounded<T>(call: Promise<T>, what: string): Promise<T> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new UnavailableError(`${what}: no answer from the API server in ${this.callTimeoutMs} ms`)),
        this.callTimeoutMs,
      );
    });
    return Promise.race([call, timeout]).finally(() => clearTimeout(timer));
  }

  private setLeader(leading: boolean): void {
    if (leading !== this.leaderSubject.value) {
      this.logger.info(
        { identity: this.identity, lease: this.leaseName },
        leading ? 'became leader' : 'lost leadership',
      );
      this.leaderSubject.next(leading);
    }
  }

  private async read(): Promise<V1Lease | undefined> {
    try {
      return await this.bounded(
        this.api.readNamespacedLease({ name: this.leaseName, namespace: this.namespace }),
        `reading lease ${this.leaseName}`,
      );
    } catch (error) {
      const mapped = apiError(error, `reading lease ${this.leaseName}`);
      if (isWorkbayError(mapped, 'not-found')) return undefined;
      throw mapped;
    }
  }

  /** One round: true when this replica holds the lease afterwards. */
  private async tryAcquireOrRenew(): Promise<boolean> {
    const now = new V1MicroTime();
    const lease = await this.read();
    if (!lease) {
      try {
        const create = this.api.createNamespacedLease({
          namespace: this.namespace,
          body: {
            metadata: { name: this.leaseName, namespace: this.namespace },
            spec: {
              holderIdentity: this.identity,
              leaseDurationSeconds: this.durationSeconds,
              acquireTime: now,
              renewTime: now,
              leaseTransitions: 0,
            },
          },
        });
        await this.bounded(create, `creating lease ${this.leaseName}`);
        return true;
      } catch (error) {
        if (isWorkbayError(apiError(error, ''), 'already-exists')) return false;
        throw error;
      }
    }
    const spec = lease.spec ?? {};
    const holder = spec.holderIdentity;
    const renewed = spec.renewTime ? new Date(spec.renewTime).getTime() : 0;
    const validMs = (spec.leaseDurationSeconds ?? this.durationSeconds) * 1000;
    const expired = !holder || Date.now() > renewed + validMs;
    if (holder !== this.identity && !expired) return false;
    lease.spec = {
      ...spec,
      holderIdentity: this.identity,
      leaseDurationSeconds: this.durationSeconds,
      renewTime: now,
      acquireTime: holder === this.identity && spec.acquireTime ? new V1MicroTime(spec.acquireTime) : now,
      leaseTransitions: (spec.leaseTransitions ?? 0) + (holder === this.identity ? 0 : 1),
    };
    try {
      await this.bounded(
        this.api.replaceNamespacedLease({ name: this.leaseName, namespace: this.namespace, body: lease }),
        `renewing lease ${this.leaseName}`,
      );
      return true;
    } catch (error) {
      // 409: someone else updated the lease since we read it; they won this round.
      if (isWorkbayError(apiError(error, ''), 'already-exists')) return false;
      throw error;
    }
  }
}
