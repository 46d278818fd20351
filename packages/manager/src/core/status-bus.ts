/**
 * The status bus: every published change of every workspace, in status_version order. The Subject is
 * private; consumers get `status$`, `updatesSince(version)` and the synchronous `getWorkspace(id)` snapshot. A
 * bounded history of recent updates lets a reconnecting subscriber resume from the last version it saw. The bus
 * lives as long as its owner: it is never replaced, so a subscription taken at any time stays live.
 *
 * @module
 * @internal
 */
import { Subject, concat, defer, filter, from, map, of } from 'rxjs';
import type { Observable } from 'rxjs';
import type { WorkspaceRecord } from '../domain/types.js';

/** What a resume from `version` can be served with. */
export type ResumeResult =
  { readonly covered: true; readonly updates: readonly WorkspaceRecord[] } | { readonly covered: false };

/** One item of {@link StatusBus.updatesSince}: a published record, or word that the history cannot cover a resume. */
export type StatusUpdate =
  { readonly kind: 'update'; readonly record: WorkspaceRecord } | { readonly kind: 'resync-required' };

export class StatusBus {
  private readonly subject = new Subject<WorkspaceRecord>();
  private readonly current = new Map<string, WorkspaceRecord>();
  // Ring buffer of the last `historySize` published updates.
  private readonly history: (WorkspaceRecord | undefined)[];
  private historyStart = 0;
  private historyLength = 0;
  private lastVersion: number;

  constructor(
    private readonly historySize: number,
    initialVersion = 0,
  ) {
    this.history = new Array<WorkspaceRecord | undefined>(historySize);
    this.lastVersion = initialVersion;
  }

  /** Every published update (hot: no replay). */
  get status$(): Observable<WorkspaceRecord> {
    return this.subject.asObservable();
  }

  /** The latest published state of a workspace. */
  getWorkspace(id: string): WorkspaceRecord | undefined {
    return this.current.get(id);
  }

  /** The latest published state of every workspace known to the bus. */
  getWorkspaces(): IterableIterator<WorkspaceRecord> {
    return this.current.values();
  }

  get size(): number {
    return this.current.size;
  }

  /** The newest status_version published (or the floor the bus started at). */
  get version(): number {
    return this.lastVersion;
  }

  /**
   * Sets the version the bus counts from (the store's lease at start-up, above every version ever handed out).
   * Only before anything was published: later the versions already handed out are the floor.
   */
  startAt(version: number): void {
    if (this.historyLength > 0) throw new Error('startAt after a publish');
    if (version > this.lastVersion) this.lastVersion = version;
  }

  /**
   * The updates after `version` that the history still holds, then every live update, on one subscription: the
   * replay and the live stream are joined when the subscriber subscribes (not when this is called), so nothing
   * falls in between and the subscriber may subscribe whenever it likes. `version` 0 means live updates only.
   * When the history cannot cover the resume, a single `resync-required` comes first, then the live updates.
   */
  updatesSince(version: number): Observable<StatusUpdate> {
    return defer(() => {
      const live = this.subject.pipe(map((record): StatusUpdate => ({ kind: 'update', record })));
      if (version <= 0) return live;
      const resume = this.since(version);
      if (!resume.covered) return concat(of<StatusUpdate>({ kind: 'resync-required' }), live);
      const replay = from(resume.updates).pipe(map((record): StatusUpdate => ({ kind: 'update', record })));
      const replayedUpTo = resume.updates.at(-1)?.statusVersion ?? version;
      return concat(
        replay,
        live.pipe(filter((update) => update.kind !== 'update' || update.record.statusVersion > replayedUpTo)),
      );
    });
  }

  /**
   * Lifts the version the next publish counts from (a new leader continuing above versions another replica may
   * have handed out). A resume from before the gap is still answered from the history.
   */
  advanceTo(version: number): void {
    if (version > this.lastVersion) this.lastVersion = version;
  }

  /** Registers a record without publishing it (records loaded at startup). */
  seed(record: WorkspaceRecord): void {
    this.current.set(record.id, record);
    if (record.statusVersion > this.lastVersion) this.lastVersion = record.statusVersion;
  }

  /** Publishes an update; its status_version must be greater than every one before. */
  publish(record: WorkspaceRecord): void {
    if (record.statusVersion <= this.lastVersion) {
      throw new Error(`status_version must increase: ${record.statusVersion} <= ${this.lastVersion}`);
    }
    this.lastVersion = record.statusVersion;
    this.current.set(record.id, record);
    if (this.historySize > 0) {
      const index = (this.historyStart + this.historyLength) % this.historySize;
      this.history[index] = record;
      if (this.historyLength < this.historySize) this.historyLength += 1;
      else this.historyStart = (this.historyStart + 1) % this.historySize;
    }
    this.subject.next(record);
  }

  /** Replaces a workspace's snapshot without publishing (changes no subscriber sees, e.g. activity times). */
  touch(record: WorkspaceRecord): void {
    this.current.set(record.id, record);
  }

  /** Drops a workspace from the snapshot (its record was removed); history keeps what was published. */
  forget(id: string): void {
    this.current.delete(id);
  }

  /** The updates after `version`, oldest first, if the history still holds all of them (see `updatesSince`). */
  since(version: number): ResumeResult {
    if (version > this.lastVersion) return { covered: false };
    if (version === this.lastVersion) return { covered: true, updates: [] };
    if (this.historyLength === 0) return { covered: false };
    const oldest = this.history[this.historyStart]!;
    // Versions are consecutive within one process, so the oldest entry must directly follow `version`
    // (or precede it) for nothing to be missing.
    if (oldest.statusVersion > version + 1) return { covered: false };
    const updates: WorkspaceRecord[] = [];
    for (let i = 0; i < this.historyLength; i += 1) {
      const record = this.history[(this.historyStart + i) % this.historySize]!;
      if (record.statusVersion > version) updates.push(record);
    }
    return { covered: true, updates };
  }

  complete(): void {
    this.subject.complete();
  }
}
