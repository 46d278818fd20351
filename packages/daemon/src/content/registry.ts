/**
 * The workspaces of this node as the content service holds them: their session state (on disk through the
 * {@link SessionStore}), a lock per workspace, the operations still running (so a stop can wait for them), and
 * the snapshot every change publishes. The initialization, backup and disposal parts of the content service all
 * work through one registry.
 */
import { BehaviorSubject } from 'rxjs';
import type { Observable } from 'rxjs';
import type { PluginLogger } from '@workbay/api';
import type { BackupStore } from '../backup/backup-store.js';
import { NotFoundError } from '../errors.js';
import type { InitProgress } from '../initializer/progress.js';
import type { DaemonMetrics } from '../health/metrics.js';
import type { SessionState, SessionStore } from '../session/session-store.js';
import { quote } from '../util/bounds.js';
import { KeyedMutex } from '../util/concurrency.js';
import type { ContentEvent, WorkspaceInfo } from './types.js';

export interface Workspace {
  state: SessionState;
  /**
   * Settles when initialization ended (either way), or when the workspace was never registered after all. Set
   * together with the `initializing` phase, so that WaitForInit has something to wait for from the first moment
   * the workspace exists; undefined for workspaces loaded from disk (their initialization cannot be running).
   */
  init?: Promise<void>;
  /** Ends the running initialization: a disposal does not wait for content that nobody will use (G2). */
  initAbort?: AbortController;
  initError?: unknown;
  /** The latest progress an initializer step reported while initialization runs (the InitProgress RPC). */
  progress?: InitProgress;
  periodic?: NodeJS.Timeout;
  /** Snapshots answered early (return_immediately) and still uploading. */
  readonly pending: Set<Promise<unknown>>;
}

/** What every part of the content service (initialization, backups, disposal) works with. */
export interface ContentPartDeps {
  readonly registry: WorkspaceRegistry;
  /** Undefined without remote storage: backups and snapshots are refused, workspaces must not need them. */
  readonly backups: BackupStore | undefined;
  readonly logger: PluginLogger;
  readonly emit: (event: ContentEvent) => void;
}

/** A state change written ahead ({@link WorkspaceRegistry.stagePersist}). */
export interface StagedPersist {
  /** Puts it in place durably, sets and publishes it. */
  apply(): Promise<void>;
  /** Drops it: the change is not wanted after all. */
  discard(): Promise<void>;
}

export class WorkspaceRegistry {
  private readonly workspaces = new Map<string, Workspace>();
  private readonly inflight = new Set<Promise<unknown>>();
  private readonly snapshot = new BehaviorSubject<readonly WorkspaceInfo[]>([]);
  /** One operation at a time per workspace (init aside: it registers first, and nothing else runs before). */
  readonly lock = new KeyedMutex();
  /** Every workspace on this node, re-emitted on each change. */
  readonly workspaces$: Observable<readonly WorkspaceInfo[]> = this.snapshot.asObservable();

  constructor(
    readonly store: SessionStore,
    private readonly metrics: Pick<DaemonMetrics, 'workspaces'>,
  ) {}

  get(instanceId: string): Workspace | undefined {
    return this.workspaces.get(instanceId);
  }

  has(instanceId: string): boolean {
    return this.workspaces.has(instanceId);
  }

  /** Registers a workspace; a caller publishes once its state is worth showing. */
  add(ws: Workspace): void {
    this.workspaces.set(ws.state.instanceId, ws);
  }

  delete(instanceId: string): void {
    this.workspaces.delete(instanceId);
  }

  all(): IterableIterator<Workspace> {
    return this.workspaces.values();
  }

  /** The workspace, or NOT_FOUND naming it. */
  require(instanceId: string): Workspace {
    const ws = this.workspaces.get(instanceId);
    if (!ws) throw new NotFoundError(`workspace ${quote(instanceId)} does not exist on this node`);
    return ws;
  }

  /** True while `ws` is still the registered workspace of its id (not disposed and started again meanwhile). */
  isCurrent(ws: Workspace): boolean {
    return this.workspaces.get(ws.state.instanceId) === ws;
  }

  getSnapshot(): readonly WorkspaceInfo[] {
    return this.snapshot.getValue();
  }

  publish(): void {
    const infos: WorkspaceInfo[] = [...this.workspaces.values()].map(({ state }) => ({
      instanceId: state.instanceId,
      workspaceId: state.workspaceId,
      owner: state.owner,
      phase: state.phase,
      contentLocation: state.contentLocation,
      ...(state.lastBackup ? { lastBackupAt: state.lastBackup.at } : {}),
      ...(state.quota ? { quotaBytes: state.quota.bytes } : {}),
    }));
    this.snapshot.next(infos);
    this.metrics.workspaces.reset();
    for (const info of infos) this.metrics.workspaces.inc({ phase: info.phase });
  }

  /** Applies `patch` to the workspace's state, writes it durably, then publishes. */
  async persist(ws: Workspace, patch: Partial<SessionState>): Promise<void> {
    ws.state = { ...ws.state, ...patch, updatedAt: new Date().toISOString() };
    await this.store.save(ws.state);
    this.publish();
  }

  /**
   * {@link persist} in two steps: the state with `patch` applied is written and synced ahead, beside work whose
   * durability must come first; {@link StagedPersist.apply} puts it in place, then sets and publishes it. A state that
   * changed meanwhile is persisted afresh with the patch, and the staged one discarded.
   */
  async stagePersist(ws: Workspace, patch: Partial<SessionState>): Promise<StagedPersist> {
    const base = ws.state;
    const next: SessionState = { ...base, ...patch, updatedAt: new Date().toISOString() };
    const staged = await this.store.stage(next);
    return {
      apply: async () => {
        if (ws.state !== base) {
          await staged.discard();
          return this.persist(ws, patch);
        }
        await staged.commit();
        ws.state = next;
        this.publish();
      },
      discard: () => staged.discard(),
    };
  }

  /** Tracks an operation so that {@link settle} can wait for it. */
  track<T>(promise: Promise<T>): Promise<T> {
    this.inflight.add(promise);
    void promise.then(
      () => this.inflight.delete(promise),
      () => this.inflight.delete(promise),
    );
    return promise;
  }

  /** Waits for the tracked operations, at most `timeoutMs`. */
  async settle(timeoutMs: number): Promise<void> {
    await Promise.race([
      Promise.allSettled([...this.inflight]),
      new Promise((resolve) => setTimeout(resolve, timeoutMs).unref()),
    ]);
  }

  close(): void {
    this.snapshot.complete();
  }
}
