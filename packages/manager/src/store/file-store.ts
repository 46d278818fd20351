/**
 * File-backed persistence of workspace records: one JSON file per workspace under `<stateDir>/workspaces/`,
 * each written atomically and durably (temp file, fsync, rename, fsync of the directory), so a crash at any
 * point leaves either the previous or the new version of a record, never a torn one. A `save` resolves only once
 * its record file and the directory entry are on disk, and rejects when any step fails (a full or read-only
 * disk): callers decide what a failed persist means, nothing is swallowed here.
 *
 * Writes are coalesced per workspace: while one write is in flight, later saves of the same record replace
 * each other and only the newest is written next. Directory syncs are group commits: one fsync covers every
 * rename that completed before it started. `flush()` waits until everything scheduled so far has settled.
 *
 * The status_version high-water mark lives in `<stateDir>/versions.json` as a lease: the manager hands out
 * versions below the persisted ceiling and moves the ceiling forward in blocks, so a restart (even after
 * SIGKILL) continues above every version it ever published. A lease file that exists but cannot be read is an
 * error (starting below a version already handed out would break status_version ordering for subscribers).
 *
 * @module
 */
import { closeSync, fsyncSync, mkdirSync, openSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import { mkdir, open, readFile, readdir, rename, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { InternalError } from '@workbay/api';
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
   * one of the same workspace, is on disk with its directory entry synced; it rejects when that write fails.
   */
  save(record: WorkspaceRecord): Promise<void>;
  /** Schedules removal of the record's file; rejects when the removal cannot be made durable. */
  remove(id: string): Promise<void>;
  /** Makes sure versions up to `version` survive a restart; synchronous on purpose (see module docs). */
  reserveVersion(version: number): void;
  /** Resolves once every save/remove scheduled so far has settled (their own promises carry the failures). */
  flush(): Promise<void>;
  close(): Promise<void>;
}

interface Waiter {
  readonly resolve: () => void;
  readonly reject: (error: unknown) => void;
}

type Pending = ({ kind: 'save'; record: WorkspaceRecord } | { kind: 'remove' }) & { waiters: Waiter[] };

/** How many versions one lease extension covers. */
const versionBlock = 100_000;

export class FileWorkspaceStore implements WorkspaceStore {
  private readonly dir: string;
  private readonly versionsFile: string;
  private readonly pending = new Map<string, Pending>();
  private readonly inFlight = new Map<string, Promise<void>>();
  private ceiling = 0;
  private tmpCounter = 0;
  private dirSyncRunning: Promise<void> | undefined;
  private dirSyncNext: Promise<void> | undefined;
  private closed = false;
  private readonly onError: (error: unknown, id: string) => void;

  /** `onError` hears about every failed write too (for logs); the failing call's promise rejects regardless. */
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
    const ceiling = await this.readLease();
    const names = await readdir(this.dir);
    const records: WorkspaceRecord[] = [];
    const corrupt: string[] = [];
    let maxVersion = 0;
    const files = names.filter((n) => n.endsWith(recordSuffix));
    // Leftover temp files are writes that never completed: the previous version is still in place.
    await Promise.all(names.filter((n) => n.includes('.tmp-')).map((n) => unlink(join(this.dir, n))));
    const batch = 64;
    for (let i = 0; i < files.length; i += batch) {
      await Promise.all(
        files.slice(i, i + batch).map(async (name) => {
          const path = join(this.dir, name);
          const record = parseRecord(await readFile(path, 'utf8'), name);
          if (!record) {
            // Moved aside (not deleted) so an operator can look at it; the caller logs the list.
            corrupt.push(name);
            await rename(path, `${path}.corrupt`);
            return;
          }
          records.push(record);
          if (record.statusVersion > maxVersion) maxVersion = record.statusVersion;
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

  /** The persisted lease ceiling; 0 on a first start (no file). */
  private async readLease(): Promise<number> {
    let text: string;
    try {
      text = await readFile(this.versionsFile, 'utf8');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return 0;
      throw new InternalError(`cannot read the status_version lease (versions.json): ${errnoOf(error)}`, {
        cause: error,
      });
    }
    let ceiling: unknown;
    try {
      ceiling = (JSON.parse(text) as { ceiling?: unknown }).ceiling;
    } catch (error) {
      ceiling = error;
    }
    if (typeof ceiling !== 'number' || !Number.isSafeInteger(ceiling) || ceiling < 0) {
      throw new InternalError(
        'the status_version lease (versions.json) is unreadable; restore it or remove it after checking that no ' +
          'subscriber relies on status_version ordering',
      );
    }
    return ceiling;
  }

  reserveVersion(version: number): void {
    if (version <= this.ceiling) return;
    const ceiling = version + versionBlock;
    mkdirSync(this.stateDir, { recursive: true, mode: 0o700 });
    const tmp = `${this.versionsFile}.tmp-${process.pid}`;
    try {
      const fd = openSync(tmp, 'w', 0o600);
      try {
        writeSync(fd, JSON.stringify({ ceiling }));
        fsyncSync(fd);
      } finally {
        closeSync(fd);
      }
      renameSync(tmp, this.versionsFile);
      const dirFd = openSync(this.stateDir, 'r');
      try {
        fsyncSync(dirFd);
      } finally {
        closeSync(dirFd);
      }
    } catch (error) {
      try {
        unlinkSync(tmp);
      } catch {
        // Deliberate: the temp file may not exist; the original error is the one that matters.
      }
      throw new InternalError(`cannot extend the status_version lease: ${errnoOf(error)}`, { cause: error });
    }
    this.ceiling = ceiling;
  }

  save(record: WorkspaceRecord): Promise<void> {
    return this.schedule(record.id, { kind: 'save', record, waiters: [] });
  }

  remove(id: string): Promise<void> {
    return this.schedule(id, { kind: 'remove', waiters: [] });
  }

  private schedule(id: string, op: Pending): Promise<void> {
    if (this.closed) return Promise.reject(new InternalError('the workspace store is closed'));
    if (!idPattern.test(id)) throw new Error(`invalid workspace id for the store: '${id.slice(0, 64)}'`);
    // A newer operation replaces a queued one; whoever waited for the old one now waits for the new one.
    const replaced = this.pending.get(id);
    if (replaced) op.waiters.push(...replaced.waiters);
    const done = new Promise<void>((resolve, reject) => op.waiters.push({ resolve, reject }));
    this.pending.set(id, op);
    if (!this.inFlight.has(id)) this.drain(id);
    return done;
  }

  private drain(id: string): void {
    const op = this.pending.get(id);
    if (!op) {
      this.inFlight.delete(id);
      return;
    }
    this.pending.delete(id);
    const work = (op.kind === 'save' ? this.write(op.record) : this.unlink(id)).then(
      () => {
        for (const waiter of op.waiters) waiter.resolve();
      },
      (error: unknown) => {
        this.onError(error, id);
        for (const waiter of op.waiters) waiter.reject(error);
      },
    );
    this.inFlight.set(
      id,
      work.then(() => this.drain(id)),
    );
  }

  private async write(record: WorkspaceRecord): Promise<void> {
    const target = join(this.dir, `${record.id}${recordSuffix}`);
    const tmp = `${target}.tmp-${process.pid}-${++this.tmpCounter}`;
    try {
      const handle = await open(tmp, 'w', 0o600);
      try {
        await handle.writeFile(JSON.stringify({ v: formatVersion, record }));
        await handle.sync();
      } finally {
        await handle.close();
      }
      await rename(tmp, target);
    } catch (error) {
      // Leave nothing behind: the previous version (if any) is still in place under the target name.
      await unlink(tmp).catch(() => undefined); // deliberate: it may never have been created
      throw error;
    }
    await this.syncDir();
  }

  private async unlink(id: string): Promise<void> {
    try {
      await unlink(join(this.dir, `${id}${recordSuffix}`));
    } catch (error) {
      // Already gone is what removal wants; anything else is a failure of this removal.
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
    }
    await this.syncDir();
  }

  /**
   * Makes every rename or unlink that completed before this call durable. Group commit: while a sync runs, the
   * callers that arrive meanwhile share the next one (the running one may have started before their rename).
   */
  private syncDir(): Promise<void> {
    if (!this.dirSyncRunning) {
      const running = fsyncPath(this.dir).finally(() => {
        if (this.dirSyncRunning === running) this.dirSyncRunning = undefined;
      });
      this.dirSyncRunning = running;
      return running;
    }
    this.dirSyncNext ??= this.dirSyncRunning
      .catch(() => undefined) // deliberate: the running sync's failure belongs to its own callers
      .then(() => {
        this.dirSyncNext = undefined;
        return this.syncDir();
      });
    return this.dirSyncNext;
  }

  async flush(): Promise<void> {
    while (this.inFlight.size > 0) await Promise.allSettled([...this.inFlight.values()]);
  }

  async close(): Promise<void> {
    await this.flush();
    this.closed = true;
  }
}

async function fsyncPath(path: string): Promise<void> {
  const handle = await open(path, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

function parseRecord(text: string, name: string): WorkspaceRecord | undefined {
  let parsed: { v?: unknown; record?: WorkspaceRecord };
  try {
    parsed = JSON.parse(text) as typeof parsed;
  } catch {
    return undefined; // deliberate: the caller moves the file aside and reports it
  }
  const record = parsed.record;
  if (
    parsed.v !== formatVersion ||
    !record ||
    typeof record.id !== 'string' ||
    `${record.id}${recordSuffix}` !== name
  ) {
    return undefined;
  }
  return record;
}

/** The errno code (ENOSPC, EROFS, ...) of a file-system error, never its path. */
export function errnoOf(error: unknown): string {
  const code = (error as NodeJS.ErrnoException | undefined)?.code;
  return typeof code === 'string' ? code : 'unknown error';
}
