/**
 * Per-workspace session state on disk: `<workingArea>/<instanceId>.workspace.json`, written atomically. It is
 * the daemon's memory across restarts: which workspaces live here, whether their content can be trusted,
 * and whether their final backup was recorded (so that content is never deleted before that, and a
 * half-deleted directory is never backed up).
 */
import { readFile, readdir, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { GitStatusSummary } from '../git/git-status.js';
import type { ContentSource, InitializerMetric, InitializerSpec } from '../initializer/types.js';
import type { QuotaHandle } from '../quota/disk-quota.js';
import { readJsonFile, stageJson, writeJsonAtomic } from '../util/atomic-file.js';
import type { StagedFile } from '../util/atomic-file.js';

/**
 * Where a workspace's content stands.
 * - `initializing`: the initializer (or a restore) is running; content not reliable.
 * - `ready`: content complete (wire state AVAILABLE); backups allowed.
 * - `init-failed`: initialization failed or was interrupted; content unreliable, never backed up.
 * - `disposing`: the final backup is running; the content is intact.
 * - `backed-up`: disposal recorded its outcome (final backup done, or none wanted); deletion may start.
 * - `deleting`: content is being removed; the directory may be half deleted and is never backed up.
 */
export type ContentPhase = 'initializing' | 'ready' | 'init-failed' | 'disposing' | 'backed-up' | 'deleting';

export interface BackupRecord {
  readonly url: string;
  readonly at: string;
  readonly format: 'chunked' | 'tar';
  readonly uploadedBytes: number;
  readonly contentBytes: number;
}

export interface DisposalRecord {
  readonly backupRequested: boolean;
  /** The final backup, when one was requested and made. */
  readonly backup?: BackupRecord;
  readonly gitStatus?: GitStatusSummary;
  readonly recordedAt: string;
}

export interface SessionState {
  readonly version: 1;
  readonly instanceId: string;
  readonly owner: string;
  /** The workspace (meta) id: backups are keyed by it. */
  readonly workspaceId: string;
  readonly contentLocation: string;
  readonly phase: ContentPhase;
  readonly createdAt: string;
  readonly updatedAt: string;
  readonly remoteStorageDisabled: boolean;
  /** The initializer, without credentials. */
  readonly initializer: InitializerSpec;
  readonly storageQuotaBytes: number;
  readonly quota?: QuotaHandle;
  readonly init?: {
    readonly source: ContentSource;
    readonly metrics: readonly InitializerMetric[];
    readonly finishedAt: string;
  };
  readonly gitLocations: readonly string[];
  readonly lastBackup?: BackupRecord;
  readonly disposal?: DisposalRecord;
  /** Why initialization (or the last operation) failed. */
  readonly failure?: string;
  /**
   * When a disposal first kept this content because its final backup failed: the content stays on the node, its
   * workspace's, until a disposal succeeds (see `backup.maxKeptPerOwner`).
   */
  readonly keptSince?: string;
  /**
   * Kept content nothing writes to until its owner resumes it: its quota made it dormant (loop: the image mounted
   * read-only, holding no disk promise beyond its blocks), again after a restart.
   */
  readonly dormant?: boolean;
  /**
   * The id of the stored backup this content is based on, under the name its backups go to (its workspace id, or
   * `backupWorkspaceId`): the one restored at its start (`null`: there was none), then each one it committed. A
   * backup replaces only that one (red team round 12, K2, K2b). Absent in sessions from before: no check.
   */
  readonly backupBase?: string | null;
  /**
   * Where this content's backups go instead of its workspace id's, once another instance of that workspace
   * committed a newer backup: `<workspaceId>.kept-<instanceId>` (see `keptBackupWorkspaceId`).
   */
  readonly backupWorkspaceId?: string;
  /**
   * The workspace's host uid/gid (uid == gid) when the daemon runs as root: the owner of all its content, kept
   * here so that it survives a daemon restart (isolation contract). Absent when the daemon is not root.
   */
  readonly hostUser?: { readonly uid: number; readonly gid: number };
}

/** What a finished disposal returns; kept as a tombstone so a repeated dispose answers the same. */
export interface DisposalTombstone {
  readonly version: 1;
  readonly instanceId: string;
  readonly workspaceId: string;
  readonly disposedAt: string;
  readonly disposal: DisposalRecord;
}

const stateSuffix = '.workspace.json';
const tombstoneSuffix = '.disposed.json';

/**
 * Session files sit beside the content directories (`<workingArea>/<id>`), so an id ending in one of their suffixes
 * would name another workspace's state or tombstone as its content: ids must not end so.
 */
export function collidesWithSessionFiles(id: string): boolean {
  return id.endsWith(stateSuffix) || id.endsWith(tombstoneSuffix);
}

export class SessionStore {
  constructor(readonly workingArea: string) {}

  statePath(instanceId: string): string {
    return join(this.workingArea, `${instanceId}${stateSuffix}`);
  }

  tombstonePath(instanceId: string): string {
    return join(this.workingArea, `${instanceId}${tombstoneSuffix}`);
  }

  async save(state: SessionState): Promise<void> {
    await writeJsonAtomic(this.statePath(state.instanceId), state, 0o600);
  }

  /** The state written and synced ahead, to put in place later (see `stageFile`). */
  stage(state: SessionState): Promise<StagedFile> {
    return stageJson(this.statePath(state.instanceId), state, 0o600);
  }

  async load(instanceId: string): Promise<SessionState | undefined> {
    return readJsonFile<SessionState>(this.statePath(instanceId));
  }

  async remove(instanceId: string): Promise<void> {
    await rm(this.statePath(instanceId), { force: true });
  }

  /** Every session on disk; unreadable files are reported, not fatal. */
  async list(onError?: (file: string, error: unknown) => void): Promise<SessionState[]> {
    let names: string[];
    try {
      names = await readdir(this.workingArea);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw error;
    }
    const out: SessionState[] = [];
    for (const name of names.filter((n) => n.endsWith(stateSuffix)).sort()) {
      try {
        const state = JSON.parse(await readFile(join(this.workingArea, name), 'utf8')) as SessionState;
        if (state.version === 1 && state.instanceId === name.slice(0, -stateSuffix.length)) out.push(state);
        else onError?.(name, new Error('unknown session state version or mismatched id'));
      } catch (error) {
        onError?.(name, error);
      }
    }
    return out;
  }

  async saveTombstone(tombstone: DisposalTombstone): Promise<void> {
    await writeJsonAtomic(this.tombstonePath(tombstone.instanceId), tombstone, 0o600);
  }

  async loadTombstone(instanceId: string): Promise<DisposalTombstone | undefined> {
    return readJsonFile<DisposalTombstone>(this.tombstonePath(instanceId));
  }

  async removeTombstone(instanceId: string): Promise<void> {
    await rm(this.tombstonePath(instanceId), { force: true });
  }

  /** Tombstones older than `maxAgeMs`, for housekeeping. */
  async expiredTombstones(maxAgeMs: number, now = Date.now()): Promise<string[]> {
    let names: string[];
    try {
      names = await readdir(this.workingArea);
    } catch (error) {
      // No working area yet: no tombstones. Anything else reaches housekeeping, which logs it.
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw error;
    }
    const out: string[] = [];
    for (const name of names.filter((n) => n.endsWith(tombstoneSuffix))) {
      try {
        if (now - (await stat(join(this.workingArea, name))).mtimeMs > maxAgeMs)
          out.push(name.slice(0, -tombstoneSuffix.length));
      } catch {
        // removed meanwhile
      }
    }
    return out;
  }

  /** True for names of files this store owns (so housekeeping leaves them alone). */
  static isStoreFile(name: string): boolean {
    return name.endsWith(stateSuffix) || name.endsWith(tombstoneSuffix);
  }
}
