/**
 * The status bus: every published change of every workspace, in status_version order. The Subject is
 * private; consumers get `status$` and the synchronous `getWorkspace(id)` snapshot. A bounded history of recent
 * updates lets a reconnecting subscriber resume from the last version it saw.
 *
 * @module
 */
import { Subject } from 'rxjs';
import type { Observable } from 'rxjs';
import type { WorkspaceRecord } from '../domain/types.js';

/** What a resume from `version` can be served with. */
export type ResumeResult =
  { readonly covered: true; readonly updates: readonly WorkspaceRecord[] } | { readonly covered: false };

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

  /**
   * The updates after `version`, oldest first, if the history still holds all of them. Call it synchronously
   * right after subscribing to `status$` so that no update falls between the replay and the live stream.
   */
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
