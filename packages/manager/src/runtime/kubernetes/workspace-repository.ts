/**
 * The workspace repository on Kubernetes: records live in Workspace objects and their Secrets (see
 * workspace-objects.ts), so managers keep no state of their own and any replica can serve reads.
 *
 * - Every replica keeps an informer cache of the objects and Secrets and serves reads and Subscribe from it.
 * - Only the leader commits: it publishes on its own bus at once and writes each change to the object's status
 *   subresource in order (one write in flight per workspace, with the object's resourceVersion, re-read and retried
 *   on 409 Conflict; changes committed meanwhile share the next write, see StatusWriter), so that followers, which
 *   publish what their watch delivers, see every transition.
 * - A follower applies StartWorkspace by creating the object (the desired state) and StopWorkspace by setting
 *   `spec.stopRequested`; the leader's watch turns both into lifecycle events (`desired$`), and the follower
 *   answers once the leader has acted.
 *
 * status_version: the leader's versions are persisted with each record. A new leader continues above both the
 * newest persisted version and the current time in microseconds: versions an old leader handed out but never
 * persisted came from its own counter, which started at its election time and grows by one per change, so they
 * stay below a later clock reading as long as the cluster's clocks agree within the leader's term and fewer than
 * a million changes happen per second. Followers number what they publish with their own counter (a resume on
 * another replica may replay duplicates or ask for a resync, never skip an update).
 *
 * @module
 */
import type { KubeConfig, V1Secret } from '@kubernetes/client-node';
import { FailedPreconditionError } from '@workbay/api';
import { Subject } from 'rxjs';
import type { Observable } from 'rxjs';
import { BusBackedRepository } from '../../core/repository.js';
import type { DesiredChange, RecordRequest, ReplicatedRepository } from '../../core/repository.js';
import { differsVisibly } from '../../domain/status.js';
import type { StopPolicy, WorkspaceRecord } from '../../domain/types.js';
import type { Logger } from '../../logger.js';
import { WorkspaceCache } from './workspace-cache.js';
import { FollowerRequests } from './follower-requests.js';
import { LeaderInbox } from './leader-inbox.js';
import { SecretSweeper } from './secret-sweeper.js';
import { StatusWriter, maxTransitions } from './status-writer.js';
import { WorkspaceObjectsApi } from './workspace-api.js';
import {
  instanceIdOf,
  objectNameOf,
  recordOf,
  newSecretName,
  secretNameFor,
  statusOf,
  transitionsFrom,
} from './workspace-objects.js';
import type { WorkspaceObject } from './workspace-objects.js';

export interface KubernetesRepositoryOptions {
  readonly kubeConfig: KubeConfig;
  readonly namespace: string;
  readonly historySize: number;
  readonly logger: Logger;
  /** Called after every visible change the leader commits (logs and metrics). */
  readonly onChange?: (previous: WorkspaceRecord, next: WorkspaceRecord) => void;
  /** How long a follower waits for the leader to act on a start or stop it recorded. */
  readonly leaderWaitMs?: number;
  /** Pause before retrying a failed status write. */
  readonly retryMs?: number;
  /**
   * The leader admits a new workspace only while fewer workspaces than this have status writes outstanding (its
   * backpressure on a saturated API server, see StatusWriter); a start waits up to leaderWaitMs for it.
   */
  readonly maxWriteBacklog?: number;
  /** How old a workspace Secret no object names must be before the leader deletes it (see SecretSweeper). */
  readonly orphanSecretGraceMs?: number;
  /** How often the leader looks for such Secrets. */
  readonly sweepIntervalMs?: number;
  readonly now?: () => number;
}

/** See KubernetesRepositoryOptions.maxWriteBacklog (and the runtime's controlPlane.maxWriteBacklog). */
const defaultMaxWriteBacklog = 8;

export class KubernetesWorkspaceRepository extends BusBackedRepository implements ReplicatedRepository {
  private readonly api: WorkspaceObjectsApi;
  private readonly cache: WorkspaceCache;
  private readonly desiredSubject = new Subject<DesiredChange>();
  private readonly follower: FollowerRequests;
  private readonly writer: StatusWriter;
  private readonly sweeper: SecretSweeper;
  private readonly inbox = new LeaderInbox();
  /** Ids this leader is creating (its watch must not take them over as a follower's). */
  private readonly creating = new Set<string>();
  /** Ids this leader took over from an object without status (their first status write may still be queued). */
  private readonly adopted = new Set<string>();
  /** Per id, the persisted status_version a follower published last. */
  private readonly persistedSeen = new Map<string, number>();
  /** Objects of follower starts waiting for the leader's writes to catch up (see deferAdoption). */
  private readonly deferred = new Set<string>();
  /** Ids this leader dropped (stopped and forgotten): their objects' last events must not have them taken over. */
  private readonly released = new Set<string>();
  private leading = false;
  private loaded = false;

  readonly desired$: Observable<DesiredChange> = this.desiredSubject.asObservable();

  constructor(private readonly options: KubernetesRepositoryOptions) {
    super(options.historySize);
    const api = (this.api = new WorkspaceObjectsApi(options.kubeConfig, options.namespace, options.logger));
    this.follower = new FollowerRequests({
      api,
      lookup: (id) => ({ record: this.bus.getWorkspace(id), status: this.cache.newest(id)?.status }),
      leaderWaitMs: options.leaderWaitMs ?? 30_000,
    });
    this.writer = new StatusWriter({
      write: (record, earlier) => this.writeStatus(record, earlier),
      leading: () => this.leading,
      logger: options.logger,
      retryMs: options.retryMs ?? 1_000,
    });
    this.sweeper = new SecretSweeper({
      secrets: () => this.cache.secretList(),
      object: (name) => this.cache.object(name),
      deleteSecret: (name) => api.deleteSecret(name),
      graceMs: options.orphanSecretGraceMs ?? 10 * 60_000,
      intervalMs: options.sweepIntervalMs ?? 60_000,
      logger: options.logger,
    });
    this.cache = new WorkspaceCache({
      kubeConfig: options.kubeConfig,
      api,
      logger: options.logger,
      onObject: (object) => this.observed(object),
      onObjectRemoved: (object) => this.removed(object),
      onSecret: (secret) => this.secretSeen(secret),
    });
  }

  async load(): Promise<{ records: readonly WorkspaceRecord[]; corrupt: readonly string[] }> {
    await this.cache.start();
    const records: WorkspaceRecord[] = [];
    let floor = 0;
    for (const object of this.cache.objects()) {
      const record = this.recordFrom(object);
      if (!record) continue;
      floor = Math.max(floor, record.statusVersion);
      records.push(record);
    }
    this.bus.startAt(floor);
    for (const record of records) this.bus.seed(record);
    this.loaded = true;
    return { records, corrupt: [] };
  }

  /**
   * Makes this replica the writer: versions continue above everything persisted and the current time (see the
   * module docs), and every object no leader has acted on yet is handed over as a desired change.
   */
  promote(): DesiredChange[] {
    if (this.leading) return [];
    this.leading = true;
    this.sweeper.start();
    let floor = this.bus.version;
    for (const object of this.cache.objects()) floor = Math.max(floor, object.status?.statusVersion ?? 0);
    this.bus.advanceTo(Math.max(floor, (this.options.now ?? Date.now)() * 1000));
    // What a previous leader wrote is this leader's now: recovery resumes it with the others.
    for (const object of this.cache.objects()) {
      const id = instanceIdOf(object.metadata);
      if (id && object.status?.record && this.bus.getWorkspace(id)) this.adopted.add(id);
    }
    const pending: DesiredChange[] = [];
    // Workspaces nobody took over yet become this leader's records; recovery resumes them with the others.
    for (const object of this.cache.objects()) this.desiredFrom(object, (change) => pending.push(change));
    // The others (their Secret is not here yet, or the backpressure deferred them) are not this leader's records
    // until it takes them over: recovery must not resume them before (it would start them without their Secret,
    // and their adoption would start them a second time; found by the failover spec).
    for (const object of this.cache.objects()) {
      const id = instanceIdOf(object.metadata);
      if (id && !this.adopted.has(id)) this.bus.forget(id);
    }
    return pending.filter((change) => change.type !== 'adopt');
  }

  private get writeBacklogLimit(): number {
    return this.options.maxWriteBacklog ?? defaultMaxWriteBacklog;
  }

  get isLeading(): boolean {
    return this.leading;
  }

  /**
   * Records a new workspace: its Secret, then its object (spec.record: the accepted record, which is what makes
   * it durable). On the leader it resolves then, its first status queued like any commit (a leader that dies
   * before writing it leaves an object without status, which the next leader takes over as it would a follower's
   * start); on a follower it resolves once the leader has taken the workspace over (its status appeared), or
   * fails with UNAVAILABLE when no leader did in time (the object stays: a leader elected later starts it).
   */
  async create(record: WorkspaceRecord): Promise<WorkspaceRecord> {
    if (this.leading) this.creating.add(record.id);
    try {
      return await this.createObjects(record);
    } finally {
      this.creating.delete(record.id);
      // A concurrent start of the same id whose object won (created by a follower): its watch events arrived
      // while this create was in flight and were passed over, so the leader takes it over now (found by the spec
      // of two starts at once). An object not in the cache yet comes through the watch as usual.
      const object = this.leading ? this.cache.object(objectNameOf(record.id)) : undefined;
      if (object) this.desiredFrom(object);
    }
  }

  private async createObjects(record: WorkspaceRecord): Promise<WorkspaceRecord> {
    if (this.leading) {
      await this.writer.admit(
        this.writeBacklogLimit,
        this.options.leaderWaitMs ?? 30_000,
        `cannot start workspace ${record.id}`,
      );
    }
    const secretName = newSecretName(record.id);
    await this.api.createSecret(record, secretName);
    const created = await this.api.createObject(record, secretName).catch((error: unknown) => {
      // Its own Secret only (the name is this call's): a concurrent start of the same id keeps its own.
      this.api.deleteSecret(secretName);
      throw error;
    });
    this.cache.remember(record.id, created);
    if (!this.leading)
      return this.follower.awaitLeader(record.id, (status) => status.record !== undefined, 'take it over');
    const published = this.versioned(record);
    // This leader's own: a late watch event of the object (or its Secret) before the status write shows must not
    // have it adopted as a follower's start, which would start it a second time (found by the resilience spec).
    this.adopted.add(record.id);
    this.released.delete(record.id);
    this.bus.publish(published);
    // Not awaited: under load the first status shares its write with the changes that follow (see StatusWriter);
    // awaiting it cost every start one more API round trip and one more write.
    this.writer.enqueue(published);
    this.options.onChange?.(record, published);
    return published;
  }

  commit(previous: WorkspaceRecord, next: WorkspaceRecord): WorkspaceRecord {
    if (!this.leading) throw new FailedPreconditionError('only the leading manager changes workspaces');
    if (next === previous) return previous;
    if (differsVisibly(previous, next)) {
      next = this.versioned(next);
      this.bus.publish(next);
      this.options.onChange?.(previous, next);
    } else {
      this.bus.touch(next);
    }
    this.writer.enqueue(next);
    return next;
  }

  requestStop(id: string, policy: StopPolicy): Promise<void> {
    return this.follower.requestStop(id, policy);
  }

  request(id: string, request: RecordRequest): Promise<string | undefined> {
    return this.follower.request(id, request);
  }

  acknowledge(id: string, requestId: string, kind: RecordRequest['kind'], error?: unknown, result?: string): void {
    this.inbox.answer(id, requestId, kind, error, result);
    const record = this.bus.getWorkspace(id);
    if (record) this.writer.enqueue(record);
  }

  /**
   * Drops a stopped workspace. Its object (and the finalizer on it) goes only once the daemon disposed of the
   * content (after the final backup it was asked for) or there never was content: otherwise the object stays, with
   * its failure, for an operator to look at (removing the finalizer by hand releases it).
   */
  forget(id: string): void {
    const record = this.bus.getWorkspace(id);
    this.bus.forget(id);
    this.inbox.forget(id);
    this.adopted.delete(id);
    if (this.leading) this.released.add(id);
    if (record && record.progress.initRequested && !record.progress.disposed) {
      this.options.logger.warn(
        { workspace: id, failed: record.conditions.failed },
        'keeping the Workspace object of a stopped workspace whose content was not disposed (no final backup recorded)',
      );
      return;
    }
    const object = this.cache.newest(id);
    void this.api.deleteObject(id, object && secretNameFor(object));
  }

  async close(): Promise<void> {
    this.sweeper.stop();
    await this.writer.close(5_000);
    await this.cache.close();
    this.bus.complete();
    this.desiredSubject.complete();
    this.follower.close();
  }

  // -------------------------------------------------------------------------------------------------------------

  private versioned(record: WorkspaceRecord): WorkspaceRecord {
    return { ...record, statusVersion: this.bus.version + 1 };
  }

  /** The object's record; a follower also notes the leader's answers it carries. */
  private recordFrom(object: WorkspaceObject): WorkspaceRecord | undefined {
    const record = this.cache.recordOf(object);
    if (record && !this.leading) this.inbox.seen(record.id, object.status?.acks);
    return record;
  }

  /** A watch event: followers publish the leader's changes; the leader picks up desired state. */
  private observed(object: WorkspaceObject): void {
    if (!this.loaded) return;
    const id = instanceIdOf(object.metadata);
    if (!id) return;
    if (this.leading) {
      this.cache.remember(id, object);
      this.desiredFrom(object);
      // A start or stop this replica recorded as a follower, before it was promoted, waits for this (awaitLeader).
      this.follower.notify();
      return;
    }
    const record = this.recordFrom(object);
    if (!record) return;
    const current = this.bus.getWorkspace(id);
    if (!object.status?.record) {
      // Accepted, but no leader has acted yet: readable, published once the leader writes its first status.
      if (!current) this.bus.touch(record);
      this.follower.notify();
      return;
    }
    const persisted = object.status?.statusVersion ?? 0;
    const seen = this.persistedSeen.get(id);
    if (!current || seen === undefined || persisted > seen) {
      // A follower numbers what it publishes itself (see the module docs). Transitions the leader wrote in the
      // same write come first, those this replica has not published yet.
      for (const earlier of transitionsFrom(object, id, seen, maxTransitions)) {
        this.bus.publish({ ...recordOf(earlier, this.cache.secretsOf(object)), statusVersion: this.bus.version + 1 });
      }
      this.persistedSeen.set(id, persisted);
      this.bus.publish({ ...record, statusVersion: this.bus.version + 1 });
    } else {
      this.bus.touch({ ...record, statusVersion: current.statusVersion });
    }
    this.follower.notify();
  }

  /** A workspace's Secret arrived: a leader takes over the object that waited for it (see desiredFrom). */
  private secretSeen(secret: V1Secret): void {
    if (!this.loaded) return;
    const id = instanceIdOf(secret.metadata ?? {});
    const object = id ? this.cache.object(objectNameOf(id)) : undefined;
    if (!object || secretNameFor(object) !== secret.metadata?.name) return;
    if (this.leading) return this.desiredFrom(object);
    // A follower that saw the object first holds its record without the owner token: complete it now.
    const current = this.bus.getWorkspace(id!);
    const record = current && this.recordFrom(object);
    if (current && record) this.bus.touch({ ...record, statusVersion: current.statusVersion });
  }

  private removed(object: WorkspaceObject): void {
    const id = instanceIdOf(object.metadata);
    if (!id) return;
    this.persistedSeen.delete(id);
    this.released.delete(id);
    if (!this.leading) this.bus.forget(id);
    this.follower.notify();
  }

  /** Turns an object's desired state into lifecycle events for the leader. */
  private desiredFrom(
    object: WorkspaceObject,
    emit: (change: DesiredChange) => void = (change) => this.desiredSubject.next(change),
  ): void {
    const id = instanceIdOf(object.metadata);
    if (!id || !object.spec?.record || this.creating.has(id)) return;
    if (!this.adopted.has(id) && !this.released.has(id) && !object.metadata.deletionTimestamp) {
      // Its Secret (owner token, initializer, env values) comes through another watch and may arrive after the
      // object: taken over once it is here (secretSeen), not without it (the start would fail for want of them).
      if (!this.cache.hasSecretOf(object)) return;
      // Accepted by a follower, or left by a leader that died before its status write (or whose write this
      // leader's watch delivered only after the promotion): this leader takes it over. The same backpressure as
      // the leader's own starts (see maxWriteBacklog): taken over once writes caught up.
      if (this.writer.backlog >= this.writeBacklogLimit) return this.deferAdoption(id);
      const record = this.recordFrom(object);
      if (!record) return;
      this.adopted.add(id);
      // A previous leader's transitions first, so that subscribers here see every one.
      for (const earlier of transitionsFrom(object, id, this.persistedSeen.get(id), maxTransitions)) {
        this.bus.publish(this.versioned(recordOf(earlier, this.cache.secretsOf(object))));
      }
      const published = this.versioned(record);
      this.bus.publish(published);
      this.writer.enqueue(published);
      emit({ id, type: 'adopt' });
    }
    for (const change of this.inbox.pending(id, object)) emit(change);
  }

  /** Takes `id` over once the status writes caught up (its object is read again then: it may have changed). */
  private deferAdoption(id: string): void {
    const first = this.deferred.size === 0;
    this.deferred.add(id);
    if (!first) return;
    void this.writer.belowBacklog(this.writeBacklogLimit).then(() => {
      const ids = [...this.deferred];
      this.deferred.clear();
      for (const deferred of ids) {
        const object = this.leading ? this.cache.object(objectNameOf(deferred)) : undefined;
        if (object) this.desiredFrom(object);
      }
    });
  }

  /**
   * Writes a record as the object's status, with the visible changes before it that were not written yet and the
   * answers to follower requests, against the newest object.
   */
  private async writeStatus(record: WorkspaceRecord, earlier: readonly WorkspaceRecord[] = []): Promise<void> {
    const status = { ...statusOf(record, earlier), acks: this.inbox.acksOf(record.id) };
    this.cache.remember(record.id, await this.api.writeStatus(record.id, status, this.cache.newest(record.id)));
  }
}
