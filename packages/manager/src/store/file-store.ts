/**
 * File-backed persistence of workspace records: one JSON file per workspace under `<stateDir>/workspaces/`,
 * each written atomically (temp file, fsync, rename, then an fsync of the directory), so a crash at any point
 * leaves either the previous or the new version of a record, never a torn one.
 *
 * Writes are coalesced per workspace: while one write is in flight, later saves of the same record replace
 * each other and only the newest is written next. `flush()` waits until everything saved so far is on disk.
 *
 * The status_version high-water mark lives in `<stateDir>/versions.json` as a lease: the manager hands out
 * versions below the persisted ceiling and moves the ceiling forward in blocks, so a restart (even after
 * SIGKILL) continues above every version it ever published.
 *
 * @module
 */
import { closeSync, fsyncSync, mkdirSync, openSync, renameSync, writeSync } from 'node:fs';
import { mkdir, open, readFile, readdir, rename, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import type { WorkspaceRecord } from '../domain/types.js';

const formatVersion = 1;
const recordSuffix = '.json';
const idPattern = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

export interface StoreLoadResult {
  readonly records: WorkspaceRecord[];
  /** Every status_version published before lies below this. */
  readonly versionFloor: number;
  /** Files that could not be read (moved aside as `<name>.corrupt`). */
  readonly corrupt: readonly string[];
}

export interface WorkspaceStore {
  load(): Promise<StoreLoadResult>;
  /**
   * Schedules a durable write of the record (latest wins). The promise resolves once this version, or a newer
   * one of the same workspace, is on disk; it never rejects (errors go to the store's `onError`).
   */
  save(record: WorkspaceRecord): Promise<void>;
  /** Schedules removal of the record's file. */
  remove(id: string): Promise<void>;
  /** Makes sure versions up to `version` survive a restart; synchronous on purpose (see module docs). */
  reserveVersion(version: number): void;
  /** Resolves once every save/remove scheduled so far is durable. */
  flush(): Promise<void>;
  close(): Promise<void>;
}

type Pending = ({ kind: 'save'; record: WorkspaceRecord } | { kind: 'remove' }) & { waiters: Array<() => void> };

/** How many versions one lease extension covers. */
const versionBlock = 100_000;

export class FileWorkspaceStore implements WorkspaceStore {
  private readonly dir: string;
  private readonly versionsFile: string;
  private readonly pending = new Map<string, Pending>();
  private readonly inFlight = new Map<string, Promise<void>>();
  private readonly idleWaiters: Array<() => void> = [];
  private ceiling = 0;
  private tmpCounter = 0;
  private dirSyncTimer: NodeJS.Timeout | undefined;
  private dirSyncPromise: Promise<void> | undefined;
  private closed = false;
  private readonly onError: (error: unknown, id: string) => void;

  constructor(
    readonly stateDir: string,
    options: { onError?: (error: unknown, id: string) => void } = {},
  ) {
    this.dir = join(stateDir, 'workspaces');
    this.versionsFile = join(stateDir, 'versions.json');
    this.onError = options.onError ?? (() => undefined);
  }

  async load(): Promise<StoreLoadResult> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    let ceiling = 0;
    try {
      const parsed = JSON.parse(await readFile(this.versionsFile, 'utf8')) as { ceiling?: unknown };
      if (typeof parsed.ceiling === 'number' && Number.isSafeInteger(parsed.ceiling)) ceiling = parsed.ceiling;
    } catch {
      // No lease yet (first start) or unreadable: the records' own versions still give a floor.
    }
    const names = await readdir(this.dir);
    const records: WorkspaceRecord[] = [];
    const corrupt: string[] = [];
    let maxVersion = 0;
    const files = names.filter((n) => n.endsWith(recordSuffix));
    // Leftover temp files are writes that never completed: the previous version is still in place.
    await Promise.all(
      names.filter((n) => n.includes('.tmp-')).map((n) => unlink(join(this.dir, n)).catch(() => undefined)),
    );
    const batch = 64;
    for (let i = 0; i < files.length; i += batch) {
      await Promise.all(
        files.slice(i, i + batch).map(async (name) => {
          const path = join(this.dir, name);
          try {
            const parsed = JSON.parse(await readFile(path, 'utf8')) as { v?: unknown; record?: WorkspaceRecord };
            const record = parsed.record;
            if (
              parsed.v !== formatVersion ||
              !record ||
              typeof record.id !== 'string' ||
              `${record.id}${recordSuffix}` !== name
            ) {
              throw new Error('unexpected content');
            }
            records.push(record);
            if (record.statusVersion > maxVersion) maxVersion = record.statusVersion;
          } catch {
            corrupt.push(name);
            await rename(path, `${path}.corrupt`).catch(() => undefined);
          }
        }),
      );
    }
    records.sort((a, b) => a.createdAt - b.createdAt || (a.id < b.id ? -1 : 1));
    const floor = Math.max(ceiling, maxVersion);
    // Whatever was leased before may have been handed out: continue above it.
    this.ceiling = floor;
    this.reserveVersion(floor + 1);
    return { records, versionFloor: floor, corrupt };
  }

  reserveVersion(version: number): void {
    if (version <= this.ceiling) return;
    const ceiling = version + versionBlock;
    mkdirSync(this.stateDir, { recursive: true, mode: 0o700 });
    const tmp = `${this.versionsFile}.tmp-${process.pid}`;
    const fd = openSync(tmp, 'w', 0o600);
    try {
      writeSync(fd, JSON.stringify({ ceiling }));
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, this.versionsFile);
    this.ceiling = ceiling;
  }

  save(record: WorkspaceRecord): Promise<void> {
    return this.schedule(record.id, { kind: 'save', record, waiters: [] });
  }

  remove(id: string): Promise<void> {
    return this.schedule(id, { kind: 'remove', waiters: [] });
  }

  private schedule(id: string, op: Pending): Promise<void> {
    if (this.closed) throw new Error('store is closed');
    if (!idPattern.test(id)) throw new Error(`invalid workspace id for the store: '${id}'`);
    // A newer operation replaces a queued one; whoever waited for the old one now waits for the new one.
    const replaced = this.pending.get(id);
    if (replaced) op.waiters.push(...replaced.waiters);
    const done = new Promise<void>((resolve) => op.waiters.push(resolve));
    this.pending.set(id, op);
    if (!this.inFlight.has(id)) this.drain(id);
    return done;
  }

  private drain(id: string): void {
    const op = this.pending.get(id);
    if (!op) {
      this.inFlight.delete(id);
      if (this.inFlight.size === 0 && this.pending.size === 0) this.scheduleDirSync();
      return;
    }
    this.pending.delete(id);
    const work = (op.kind === 'save' ? this.write(op.record) : this.unlink(id))
      .catch((error: unknown) => this.onError(error, id))
      .finally(() => {
        for (const resolve of op.waiters) resolve();
      });
    this.inFlight.set(
      id,
      work.then(() => this.drain(id)),
    );
  }

  private async write(record: WorkspaceRecord): Promise<void> {
    const target = join(this.dir, `${record.id}${recordSuffix}`);
    const tmp = `${target}.tmp-${process.pid}-${++this.tmpCounter}`;
    const handle = await open(tmp, 'w', 0o600);
    try {
      await handle.writeFile(JSON.stringify({ v: formatVersion, record }));
      await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(tmp, target);
  }

  private async unlink(id: string): Promise<void> {
    await unlink(join(this.dir, `${id}${recordSuffix}`)).catch((error: NodeJS.ErrnoException) => {
      if (error.code !== 'ENOENT') throw error;
    });
  }

  // Renames are durable only once the directory is synced; one sync covers a whole burst of writes.
  private scheduleDirSync(): void {
    if (this.dirSyncTimer) return;
    this.dirSyncTimer = setTimeout(() => {
      this.dirSyncTimer = undefined;
      this.dirSyncPromise = this.syncDir().finally(() => {
        this.dirSyncPromise = undefined;
        this.notifyIdle();
      });
    }, 5);
    this.dirSyncTimer.unref();
  }

  private async syncDir(): Promise<void> {
    try {
      const handle = await open(this.dir, 'r');
      try {
        await handle.sync();
      } finally {
        await handle.close();
      }
    } catch (error) {
      this.onError(error, '(directory)');
    }
  }

  private isIdle(): boolean {
    return this.pending.size === 0 && this.inFlight.size === 0 && !this.dirSyncTimer && !this.dirSyncPromise;
  }

  private notifyIdle(): void {
    if (!this.isIdle()) return;
    for (const resolve of this.idleWaiters.splice(0)) resolve();
  }

  flush(): Promise<void> {
    if (this.isIdle()) return Promise.resolve();
    return new Promise((resolve) => {
      this.idleWaiters.push(resolve);
      // A flush while only the timer is pending: run the directory sync now.
      if (this.dirSyncTimer && this.inFlight.size === 0) {
        clearTimeout(this.dirSyncTimer);
        this.dirSyncTimer = undefined;
        this.dirSyncPromise = this.syncDir().finally(() => {
          this.dirSyncPromise = undefined;
          this.notifyIdle();
        });
      }
    });
  }

  async close(): Promise<void> {
    await this.flush();
    this.closed = true;
  }
}
