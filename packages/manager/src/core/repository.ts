/**
 * The workspace repository: the one place that owns the records, their persistence and `status_version`. The
 * lifecycle and the RPCs change records only through it. Today the records live in the file store and the status
 * bus; a Kubernetes implementation keeps them in Workspace objects (resourceVersion as status_version) behind the
 * same interface.
 *
 * @module
 */
import { UnavailableError } from '@workbay/api';
import type { Observable } from 'rxjs';
import { differsVisibly } from '../domain/status.js';
import type {
  AdmissionLevel,
  PortProtocol,
  PortVisibility,
  StopPolicy,
  TimeoutKind,
  WorkspaceRecord,
} from '../domain/types.js';
import type { Logger } from '../logger.js';
import { errnoOf } from '../store/file-store.js';
import type { WorkspaceStore } from '../store/file-store.js';
import { StatusBus } from './status-bus.js';
import type { StatusUpdate } from './status-bus.js';

export interface WorkspaceRepository {
  /** Loads every record (once, at start-up); `corrupt` lists records that could not be read. */
  load(): Promise<{ readonly records: readonly WorkspaceRecord[]; readonly corrupt: readonly string[] }>;
  get(id: string): WorkspaceRecord | undefined;
  list(): IterableIterator<WorkspaceRecord>;
  readonly size: number;
  /** The newest status_version published. */
  readonly version: number;
  /** Every published change, in status_version order. */
  readonly status$: Observable<WorkspaceRecord>;
  /** Updates after `version` (0: live only), then live ones, with nothing lost in between (see StatusBus). */
  updatesSince(version: number): Observable<StatusUpdate>;
  /**
   * Adds a new record durably, then publishes it. Rejects (UNAVAILABLE) when the record cannot be persisted,
   * leaving nothing behind.
   */
  create(record: WorkspaceRecord): Promise<WorkspaceRecord>;
  /**
   * Replaces `previous` by `next`: a visible change gets the next status_version and is published; every change
   * is persisted (in the background, retried until it succeeds). Returns the stored record.
   */
  commit(previous: WorkspaceRecord, next: WorkspaceRecord): WorkspaceRecord;
  /** Drops a stopped workspace for good. */
  forget(id: string): void;
  close(): Promise<void>;
}

/** A change to a running workspace's record that a follower asks the leader to make (one per RPC). */
export type RecordRequest =
  | { readonly kind: 'markActive'; readonly closed: boolean; readonly ignoreIfActive: boolean }
  | { readonly kind: 'setTimeout'; readonly timeout: TimeoutKind; readonly duration: string }
  | {
      readonly kind: 'controlPort';
      readonly expose: boolean;
      readonly port?: { readonly port: number; readonly visibility: PortVisibility; readonly protocol: PortProtocol };
    }
  | { readonly kind: 'controlAdmission'; readonly level: AdmissionLevel }
  | { readonly kind: 'takeSnapshot'; readonly returnImmediately: boolean }
  | { readonly kind: 'backupWorkspace' }
  | { readonly kind: 'updateSshKeys'; readonly keys: readonly string[] };

/** Desired state a replicated store hands to the leader: a workspace to take over, a stop, or a record change. */
export type DesiredChange =
  | { readonly id: string; readonly type: 'adopt' }
  | { readonly id: string; readonly type: 'stop'; readonly policy: StopPolicy }
  | { readonly id: string; readonly type: 'request'; readonly requestId: string; readonly request: RecordRequest };

/**
 * A repository shared by several manager replicas (Workspace objects on Kubernetes): every replica reads, only
 * the leader commits. Followers record starts (`create`) and stops (`requestStop`) as desired state and resolve once
 * the leader has acted on them.
 */
export interface ReplicatedRepository extends WorkspaceRepository {
  /** Makes this replica the writer; returns the stops and requests waiting for a leader (act on them after recovery). */
  promote(): DesiredChange[];
  readonly isLeading: boolean;
  /** Desired changes written by other replicas (or `kubectl`), for the leader to act on. */
  readonly desired$: Observable<DesiredChange>;
  requestStop(id: string, policy: StopPolicy): Promise<void>;
  /** Asks the leader to make a change; resolves (with its result) once it did, rejects with the error it met. */
  request(id: string, request: RecordRequest): Promise<string | undefined>;
  /** The leader's answer to a request (persisted with the workspace's status; `error` when it was refused). */
  acknowledge(id: string, requestId: string, kind: RecordRequest['kind'], error?: unknown, result?: string): void;
}

export interface FileRepositoryOptions {
  readonly store: WorkspaceStore;
  readonly historySize: number;
  readonly logger: Logger;
  /** Called after every visible change (logs and metrics). */
  readonly onChange?: (previous: WorkspaceRecord, next: WorkspaceRecord) => void;
  /** How long to wait before writing a record again after a failed write. */
  readonly retryMs?: number;
}

/**
 * The reads every repository serves from its status bus (one bus for the repository's life: subscribers taken
 * before `load()` keep receiving updates).
 */
export abstract class BusBackedRepository {
  protected readonly bus: StatusBus;

  protected constructor(historySize: number) {
    this.bus = new StatusBus(historySize);
  }

  get(id: string): WorkspaceRecord | undefined {
    return this.bus.getWorkspace(id);
  }

  list(): IterableIterator<WorkspaceRecord> {
    return this.bus.getWorkspaces();
  }

  get size(): number {
    return this.bus.size;
  }

  get version(): number {
    return this.bus.version;
  }

  get status$(): Observable<WorkspaceRecord> {
    return this.bus.status$;
  }

  updatesSince(version: number): Observable<StatusUpdate> {
    return this.bus.updatesSince(version);
  }
}

export class FileWorkspaceRepository extends BusBackedRepository implements WorkspaceRepository {
  private readonly retryTimers = new Map<string, NodeJS.Timeout>();
  private closing = false;

  constructor(private readonly options: FileRepositoryOptions) {
    super(options.historySize);
  }

  async load(): Promise<{ records: readonly WorkspaceRecord[]; corrupt: readonly string[] }> {
    const loaded = await this.options.store.load();
    // The bus starts above every version ever handed out (the store's lease), even ones never saved.
    this.bus.startAt(loaded.versionFloor);
    for (const record of loaded.records) this.bus.seed(record);
    return { records: loaded.records, corrupt: loaded.corrupt };
  }

  async create(record: WorkspaceRecord): Promise<WorkspaceRecord> {
    // Durable first: nothing is published (or started) before the record file and its directory are synced.
    try {
      await this.options.store.save(this.versioned(record));
    } catch (error) {
      await this.options.store.remove(record.id).catch((removeError: unknown) => {
        // Only a rename that succeeded before the directory sync failed can leave a file; say so loudly.
        this.options.logger.error(
          { err: removeError, workspace: record.id },
          'cannot remove the record of a workspace whose save failed',
        );
      });
      throw new UnavailableError(`cannot persist workspace ${record.id}: ${errnoOf(error)}`, { cause: error });
    }
    // Others may have published meanwhile: the published version is taken now (and written again).
    const published = this.versioned(record);
    this.bus.publish(published);
    this.persist(published);
    this.options.onChange?.(record, published);
    return published;
  }

  commit(previous: WorkspaceRecord, next: WorkspaceRecord): WorkspaceRecord {
    if (next === previous) return previous;
    if (differsVisibly(previous, next)) {
      next = this.versioned(next);
      this.bus.publish(next);
      this.persist(next);
      this.options.onChange?.(previous, next);
    } else {
      this.bus.touch(next);
      this.persist(next);
    }
    return next;
  }

  forget(id: string): void {
    this.bus.forget(id);
    this.options.store.remove(id).catch((error: unknown) => {
      // The file stays; a restart loads it as stopped and forgets it again after the retention period.
      this.options.logger.error({ err: error, workspace: id }, 'cannot remove the record of a forgotten workspace');
    });
  }

  async close(): Promise<void> {
    this.closing = true;
    for (const timer of this.retryTimers.values()) clearTimeout(timer);
    this.retryTimers.clear();
    await this.options.store.flush();
    this.bus.complete();
  }

  private versioned(record: WorkspaceRecord): WorkspaceRecord {
    const version = this.bus.version + 1;
    // Throws when the lease cannot be extended: better no change than a version a restart could hand out again.
    this.options.store.reserveVersion(version);
    return { ...record, statusVersion: version };
  }

  /**
   * Writes the record in the background. A failed write is logged and retried with the newest state of the
   * record until it succeeds, so the last state of a workspace reaches the disk once the disk takes writes again.
   */
  private persist(record: WorkspaceRecord): void {
    this.options.store.save(record).catch((error: unknown) => {
      this.options.logger.error({ err: error, workspace: record.id }, 'cannot persist a workspace record; retrying');
      if (this.closing || this.retryTimers.has(record.id)) return;
      const timer = setTimeout(() => {
        this.retryTimers.delete(record.id);
        const current = this.bus.getWorkspace(record.id);
        if (current) this.persist(current);
      }, this.options.retryMs ?? 1_000);
      timer.unref();
      this.retryTimers.set(record.id, timer);
    });
  }
}
