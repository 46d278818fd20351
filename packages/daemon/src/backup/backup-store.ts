/**
 * Backups, restores and snapshots of workspace content in remote storage, in the layout of the architecture
 * brief: `workspaces/<workspaceId>/full.tar` (plain tar) or `workspaces/<workspaceId>/full.manifest` plus
 * `chunks/` (incremental), and `workspaces/<workspaceId>/snapshot-<unixnano>.tar`.
 */
import { randomUUID } from 'node:crypto';
import { constants } from 'node:fs';
import { lstat, open, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import type { BucketLayout, ObjectInfo, OwnerSlots, PluginLogger, RemoteStorage } from '@workbay/api';
import {
  backupObjectName,
  defaultBucketPrefix,
  locateOwner,
  parseQualifiedObject,
  qualifyObject,
  silentLogger,
  snapshotObjectName,
  unixNanoNow,
  workspacePrefix,
} from '@workbay/api';
import {
  errorMessage,
  FailedPreconditionError,
  InvalidArgumentError,
  isWorkbayError,
  NotFoundError,
  ResourceExhaustedError,
} from '../errors.js';
import { retryWithBackoff } from '../util/retry.js';
import type { Compression } from '../archive/compression.js';
import { extractTree } from '../archive/extract.js';
import { packTree } from '../archive/tar.js';
import type { XattrReader } from '../archive/xattr.js';
import type { BackupTarget, ChunkedBackupResult } from './chunked.js';
import { chunksDirectory, createChunkedBackup, manifestName, readManifest } from './chunked.js';
import { restoreChunkedBackup } from './chunked-restore.js';
import { WarningBudget } from '../util/warning-budget.js';

export type BackupFormat = 'chunked' | 'tar';

export interface BackupStoreOptions {
  /** `chunked` (default): incremental manifest + packs; `tar`: one plain `full.tar` per backup. */
  readonly format?: BackupFormat;
  readonly compression?: Compression;
  readonly packSize?: number;
  readonly uploadConcurrency?: number;
  readonly xattrs?: boolean;
  /** Paths (relative to the workspace root) never backed up; the ready marker is always one of them. */
  readonly exclude?: readonly string[];
  readonly logger?: PluginLogger;
  /** Restores create device nodes and FIFOs and keep set-id bits (operator's choice; default false). */
  readonly allowSpecialFiles?: boolean;
  /**
   * Chunked restores running at once, shared fairly between owners (default: no bound). Each holds its manifest's
   * entries in memory, about 1 GB for the largest: red team round 13 (L1) ran five at once to 3.5 GB of heap.
   */
  readonly restoreSlots?: OwnerSlots;
}

/** How a backup or snapshot reads: as whom (the workspace's host identity; default: as the daemon). */
export interface ArchiveReadOptions {
  readonly signal?: AbortSignal;
  readonly owner?: { readonly uid: number; readonly gid: number };
}

/** How a restore writes: as whom (the workspace's host identity; default: the archive's owners as root). */
export interface RestoreOptions {
  readonly signal?: AbortSignal;
  readonly owner?: { readonly uid: number; readonly gid: number };
}

/** Which workspace's objects: the owner (bucket) and the workspace (meta) id. */
export interface WorkspaceStorageRef {
  readonly owner: string;
  readonly workspaceId: string;
}

export interface StoredBackup {
  readonly format: BackupFormat;
  readonly bucket: string;
  readonly name: string;
  readonly size: number;
  readonly lastModified: Date;
  /** Which backup this is: the id it was stored with, or (stored before ids) its format, size and time. */
  readonly id: string;
}

/** The metadata key of a backup's id (a random UUID per committed backup). */
const backupIdKey = 'workbay-backup-id';

function storedBackupId(format: BackupFormat, info: ObjectInfo): string {
  return info.metadata[backupIdKey] ?? `legacy:${format}:${info.size}:${info.lastModified.getTime()}`;
}

/**
 * The workspace's backup is not the one a backup expected to replace: another instance of the workspace (meta id)
 * committed one since. Replacing it, and deleting the packs only it used, lost that instance's work: a kept
 * instance resumed days later wrote over its owner's newer backup (red team round 12, K2).
 */
export class BackupSupersededError extends FailedPreconditionError {
  constructor(workspaceId: string) {
    super(
      `the backup of workspace '${workspaceId}' was replaced by another instance of it since this content was started; it is not written over`,
    );
  }
}

export interface BackupOptions extends ArchiveReadOptions {
  /**
   * The id of the backup this one may replace (`null`: none may exist); anything else stored fails the backup with
   * {@link BackupSupersededError}, storing nothing. Undefined: no check.
   */
  readonly expectedBase?: string | null;
}

export interface BackupResult {
  readonly format: BackupFormat;
  /** `<object>@<bucket>` of the committed backup. */
  readonly url: string;
  /** The committed backup's id (see {@link StoredBackup.id}). */
  readonly backupId: string;
  readonly uploadedBytes: number;
  readonly contentBytes: number;
  readonly files: number;
  readonly chunked?: ChunkedBackupResult;
}

export interface RestoreResult {
  readonly format: BackupFormat;
  readonly url: string;
  readonly contentBytes: number;
  readonly transferredBytes: number;
}

export interface SnapshotResult {
  readonly url: string;
  readonly bucket: string;
  readonly name: string;
  readonly size: number;
}

export const readyMarkerPath = '.workbay/ready';
/** Log files uploaded with `DisposeWorkspace(backup_logs)`: `.workbay/prebuild-log-<task>`. */
const logPrefix = 'prebuild-log-';
/**
 * What one disposal uploads of them at most: the first {@link maxLogFiles} names, each its last {@link maxLogBytes}
 * bytes. The workspace writes them, and each disposal stores them anew under its instance: unbounded, a workspace's
 * stops would fill the storage with "logs" the size of its quota.
 */
export const maxLogFiles = 16;
export const maxLogBytes = 16 * 1024 * 1024;

/** The owner part of a per-owner bucket named by the owner's digest (`locateOwner`). */
const hashedOwnerBucket = /^h--[0-9a-f]{40}$/;

export class BackupStore {
  private readonly format: BackupFormat;
  private readonly compression: Compression;
  private readonly logger: PluginLogger;
  private readonly excluded: Set<string>;

  constructor(
    readonly storage: RemoteStorage,
    readonly layout: BucketLayout,
    private readonly options: BackupStoreOptions = {},
  ) {
    this.format = options.format ?? 'chunked';
    this.compression = options.compression ?? 'none';
    this.logger = options.logger ?? silentLogger;
    this.excluded = new Set([readyMarkerPath, ...(options.exclude ?? [])]);
  }

  private exclude = (path: string): boolean => this.excluded.has(path);

  target(ref: WorkspaceStorageRef): BackupTarget {
    const location = locateOwner(this.layout, ref.owner);
    return { storage: this.storage, bucket: location.bucket, prefix: workspacePrefix(location, ref.workspaceId) };
  }

  private tarName(ref: WorkspaceStorageRef): { bucket: string; name: string } {
    const location = locateOwner(this.layout, ref.owner);
    return { bucket: location.bucket, name: backupObjectName(location, ref.workspaceId) };
  }

  /** The newest committed backup of the workspace, if any. */
  async find(ref: WorkspaceStorageRef): Promise<StoredBackup | undefined> {
    const target = this.target(ref);
    const tar = this.tarName(ref);
    if (!(await this.storage.bucketExists(target.bucket))) return undefined;
    const [manifest, full] = await Promise.all([
      this.storage.stat(target.bucket, manifestName(target)),
      this.storage.stat(tar.bucket, tar.name),
    ]);
    const candidates: StoredBackup[] = [];
    if (manifest)
      candidates.push({
        format: 'chunked',
        bucket: target.bucket,
        name: manifest.name,
        size: manifest.size,
        lastModified: manifest.lastModified,
        id: storedBackupId('chunked', manifest),
      });
    if (full)
      candidates.push({
        format: 'tar',
        bucket: tar.bucket,
        name: full.name,
        size: full.size,
        lastModified: full.lastModified,
        id: storedBackupId('tar', full),
      });
    candidates.sort((a, b) => b.lastModified.getTime() - a.lastModified.getTime());
    return candidates[0];
  }

  /** Backs up `root`. The previous backup stays readable until this one is committed (invariant 3). */
  /** Reading as the content's owner, confined to it (see readTreeXattrs). */
  private xattrReader(options: ArchiveReadOptions): { xattrReader?: XattrReader } {
    if (!options.owner) return {};
    return { xattrReader: { uid: options.owner.uid, gid: options.owner.gid } };
  }

  async backup(root: string, ref: WorkspaceStorageRef, options: BackupOptions = {}): Promise<BackupResult> {
    const target = this.target(ref);
    await this.storage.ensureBucket(target.bucket);
    const warnings = new WarningBudget((message) => this.logger.warn({ workspaceId: ref.workspaceId }, message));
    try {
      return await this.backupWith(root, ref, options, warnings.warn);
    } finally {
      warnings.flush();
    }
  }

  private async backupWith(
    root: string,
    ref: WorkspaceStorageRef,
    options: BackupOptions,
    onWarning: (message: string) => void,
  ): Promise<BackupResult> {
    const target = this.target(ref);
    const expected = options.expectedBase;
    const assertBase = async (): Promise<void> => {
      if (expected === undefined) return;
      if (((await this.find(ref))?.id ?? null) !== expected) throw new BackupSupersededError(ref.workspaceId);
    };
    // Before the work, and again just before the commit (the other instance may commit meanwhile).
    await assertBase();
    const backupId = randomUUID();
    if (this.format === 'chunked') {
      const result = await createChunkedBackup(root, target, ref.workspaceId, {
        beforeCommit: assertBase,
        metadata: { [backupIdKey]: backupId },
        compression: this.compression,
        exclude: this.exclude,
        onWarning,
        ...(this.options.packSize !== undefined ? { packSize: this.options.packSize } : {}),
        ...(this.options.uploadConcurrency !== undefined ? { uploadConcurrency: this.options.uploadConcurrency } : {}),
        ...(this.options.xattrs !== undefined ? { xattrs: this.options.xattrs } : {}),
        ...this.xattrReader(options),
        ...(options.signal ? { signal: options.signal } : {}),
      });
      // The manifest is now the newest backup; an older plain full.tar would only confuse readers.
      const tar = this.tarName(ref);
      await this.storage.delete(tar.bucket, { name: tar.name });
      return {
        format: 'chunked',
        url: qualifyObject(target.bucket, result.manifestName),
        backupId,
        uploadedBytes: result.uploadedBytes,
        contentBytes: result.contentBytes,
        files: result.files,
        chunked: result,
      };
    }
    const tar = this.tarName(ref);
    const packed = packTree(root, {
      compression: this.compression,
      exclude: this.exclude,
      onWarning,
      ...(this.options.xattrs !== undefined ? { xattrs: this.options.xattrs } : {}),
      ...this.xattrReader(options),
      ...(options.signal ? { signal: options.signal } : {}),
    });
    const [info, stats] = await Promise.all([
      this.storage.upload(tar.bucket, tar.name, packed.stream, {
        contentType: 'application/x-tar',
        metadata: { 'workbay-backup-format': 'tar', [backupIdKey]: backupId },
        ...(options.signal ? { signal: options.signal } : {}),
      }),
      packed.done,
    ]);
    await this.storage.delete(target.bucket, { name: manifestName(target) });
    await this.storage.delete(target.bucket, { prefix: `${target.prefix}${chunksDirectory}` });
    return {
      format: 'tar',
      url: qualifyObject(tar.bucket, tar.name),
      backupId,
      uploadedBytes: info.size,
      contentBytes: stats.contentBytes,
      files: stats.files,
    };
  }

  /** Restores the newest backup into `root`; undefined when the workspace has none. */
  async restore(
    root: string,
    ref: WorkspaceStorageRef,
    options: RestoreOptions = {},
  ): Promise<RestoreResult | undefined> {
    const found = await this.find(ref);
    if (!found) return undefined;
    const url = qualifyObject(found.bucket, found.name);
    if (found.format === 'chunked') {
      const release = await this.options.restoreSlots?.acquire(ref.owner, options.signal);
      try {
        return await this.restoreChunked(root, ref, url, options);
      } finally {
        release?.();
      }
    }
    const stats = await this.extractObject(root, found.bucket, found.name, options);
    return { format: 'tar', url, contentBytes: stats.contentBytes, transferredBytes: found.size };
  }

  private async restoreChunked(
    root: string,
    ref: WorkspaceStorageRef,
    url: string,
    options: RestoreOptions,
  ): Promise<RestoreResult> {
    const target = this.target(ref);
    const manifest = await readManifest(target);
    if (!manifest) throw new NotFoundError(`backup manifest ${url} disappeared while restoring`);
    const warnings = new WarningBudget((message) => this.logger.warn({ workspaceId: ref.workspaceId }, message));
    const stats = await restoreChunkedBackup(root, target, manifest, {
      onWarning: warnings.warn,
      allowSpecialFiles: this.options.allowSpecialFiles ?? false,
      ...(options.owner ? { owner: options.owner } : {}),
      ...(options.signal ? { signal: options.signal } : {}),
    }).finally(() => warnings.flush());
    return { format: 'chunked', url, contentBytes: stats.contentBytes, transferredBytes: stats.transferredBytes };
  }

  private async extractObject(
    root: string,
    bucket: string,
    name: string,
    options: RestoreOptions,
  ): Promise<{ contentBytes: number }> {
    const { signal, owner } = options;
    const body = await this.storage.download(bucket, name, signal ? { signal } : {});
    const warnings = new WarningBudget((message) => this.logger.warn({ object: name }, message));
    return extractTree(body, root, {
      onWarning: warnings.warn,
      allowSpecialFiles: this.options.allowSpecialFiles ?? false,
      ...(owner ? { owner } : {}),
      ...(signal ? { signal } : {}),
    }).finally(() => warnings.flush());
  }

  /** Uploads a plain tar snapshot `snapshot-<unixnano>.tar`; the content is left as it is. */
  async snapshot(
    root: string,
    ref: WorkspaceStorageRef,
    options: { signal?: AbortSignal } = {},
  ): Promise<SnapshotResult> {
    const target = this.snapshotName(ref);
    return this.snapshotTo(root, target.bucket, target.name, options);
  }

  /** The name a snapshot will get, for answering before the upload finished. */
  snapshotName(ref: WorkspaceStorageRef): { bucket: string; name: string; url: string } {
    const location = locateOwner(this.layout, ref.owner);
    const name = snapshotObjectName(location, ref.workspaceId, unixNanoNow());
    return { bucket: location.bucket, name, url: qualifyObject(location.bucket, name) };
  }

  /**
   * Uploads a snapshot under a given name (see {@link snapshotName}). With `maxBytes`, an archive growing past it
   * fails the upload with RESOURCE_EXHAUSTED (nothing is stored): what the snapshot was admitted for.
   */
  async snapshotTo(
    root: string,
    bucket: string,
    name: string,
    options: ArchiveReadOptions & { readonly maxBytes?: number } = {},
  ): Promise<SnapshotResult> {
    await this.storage.ensureBucket(bucket);
    const packed = packTree(root, {
      compression: this.compression,
      exclude: this.exclude,
      ...(this.options.xattrs !== undefined ? { xattrs: this.options.xattrs } : {}),
      ...this.xattrReader(options),
      ...(options.signal ? { signal: options.signal } : {}),
    });
    const limited = options.maxBytes === undefined ? undefined : capBytes(packed.stream, options.maxBytes);
    try {
      const [info] = await Promise.all([
        this.storage.upload(bucket, name, limited?.stream ?? packed.stream, {
          contentType: 'application/x-tar',
          ...(options.signal ? { signal: options.signal } : {}),
        }),
        packed.done,
      ]);
      return { url: qualifyObject(bucket, name), bucket, name, size: info.size };
    } catch (error) {
      // The archive stopped because it passed the cap: that is why, whichever of the two failed first.
      throw limited?.exceeded() ?? error;
    }
  }

  /**
   * Restores a snapshot given as `<object>@<bucket>`. A missing snapshot is a NotFoundError; `field` names the
   * request field for a malformed name.
   */
  async restoreSnapshot(
    root: string,
    qualified: string,
    field: string,
    options: RestoreOptions = {},
  ): Promise<{ contentBytes: number; size: number }> {
    const { bucket, name } = parseQualifiedObject(qualified, field);
    let info;
    try {
      info = (await this.storage.bucketExists(bucket)) ? await this.storage.stat(bucket, name) : undefined;
    } catch (error) {
      if (isWorkbayError(error, 'invalid-argument'))
        throw new InvalidArgumentError(field, `'${qualified}': ${error.message}`, { cause: error });
      throw error;
    }
    if (!info) throw new NotFoundError(`snapshot '${qualified}' not found`);
    try {
      const stats = await this.extractObject(root, bucket, name, options);
      return { contentBytes: stats.contentBytes, size: info.size };
    } catch (error) {
      throw unreadableArchive(error, field, qualified) ?? error;
    }
  }

  /**
   * Checks that `<object>@<bucket>` names a snapshot this store writes (`[<owner>/]workspaces/<id>/snapshot-
   * <unixnano>.tar` in that owner's bucket) and returns its parts. Anything else (a backup's `full.tar` or
   * manifest, chunk packs, logs, another layout's bucket) is INVALID_ARGUMENT naming `field`, so that a snapshot
   * deletion can never reach backup data.
   */
  parseSnapshotName(qualified: string, field: string): { bucket: string; name: string; workspaceId: string } {
    const { bucket, name } = parseQualifiedObject(qualified, field);
    const refuse = (why: string): never => {
      throw new InvalidArgumentError(field, `'${qualified}' is not a snapshot: ${why}`);
    };
    let owner: string;
    let rest: string;
    if (this.layout.mode === 'shared') {
      if (bucket !== this.layout.bucket) refuse(`bucket '${bucket}' is not the storage bucket`);
      const slash = name.indexOf('/');
      owner = name.slice(0, Math.max(slash, 0));
      rest = name.slice(slash + 1);
    } else {
      const bucketPrefix = this.layout.bucketPrefix ?? defaultBucketPrefix;
      if (!bucket.startsWith(bucketPrefix)) refuse(`bucket '${bucket}' is not an owner's bucket`);
      owner = bucket.slice(bucketPrefix.length);
      rest = name;
    }
    const match = /^workspaces\/([^/]+)\/snapshot-([0-9]{1,30})\.tar$/.exec(rest);
    if (!owner || !match) refuse('expected workspaces/<id>/snapshot-<unixnano>.tar under the owner');
    const [, workspaceId, nanos] = match as RegExpExecArray;
    // Rebuilding the name with the same helpers that wrote it rules out every other spelling.
    let expected: { bucket: string; name: string } | undefined;
    try {
      // A hashed owner's bucket (see locateOwner) is that owner's location as it is: its name is all that is known.
      const location =
        this.layout.mode === 'per-owner' && hashedOwnerBucket.test(owner)
          ? { bucket, prefix: '' }
          : locateOwner(this.layout, owner);
      expected = { bucket: location.bucket, name: snapshotObjectName(location, workspaceId!, BigInt(nanos!)) };
    } catch (error) {
      if (!isWorkbayError(error, 'invalid-argument')) throw error;
    }
    if (!expected || expected.bucket !== bucket || expected.name !== name) refuse('not a name this daemon writes');
    return { bucket, name, workspaceId: workspaceId! };
  }

  /**
   * Deletes a snapshot given as `<object>@<bucket>` (see {@link parseSnapshotName}); NotFoundError when it does
   * not exist. Snapshots are self-contained tars, so nothing else (backups, chunk packs) is touched.
   */
  async deleteSnapshot(qualified: string, field = 'snapshot'): Promise<void> {
    const { bucket, name } = this.parseSnapshotName(qualified, field);
    const exists = (await this.storage.bucketExists(bucket)) && (await this.storage.stat(bucket, name)) !== undefined;
    // A concurrent delete may win between stat and delete: whoever deleted nothing reports NOT_FOUND.
    if (!exists || (await this.storage.delete(bucket, { name })) === 0) {
      throw new NotFoundError(`snapshot '${qualified}' not found`);
    }
  }

  /**
   * Uploads a workspace's log files (`.workbay/prebuild-log-*`) to
   * `workspaces/<workspaceId>/instances/<instanceId>/logs/<task>`. Best effort: failures are reported, not
   * thrown, so that logs never block a disposal.
   */
  async uploadLogs(
    root: string,
    ref: WorkspaceStorageRef,
    instanceId: string,
  ): Promise<{ uploaded: string[]; failed: string[] }> {
    const uploaded: string[] = [];
    const failed: string[] = [];
    const dir = join(root, '.workbay');
    let names: string[];
    try {
      // `.workbay` is content: a symlink planted there must not make the daemon list (and upload) a host dir.
      if (!(await lstat(dir)).isDirectory()) return { uploaded, failed };
      names = (await readdir(dir)).filter((name) => name.startsWith(logPrefix)).sort();
      if (names.length > maxLogFiles) {
        this.logger.warn(
          { workspaceId: ref.workspaceId, logs: names.length },
          `only the first ${maxLogFiles} log files are uploaded`,
        );
        names = names.slice(0, maxLogFiles);
      }
    } catch (error) {
      // No `.workbay` directory: no logs. Any other failure is logged (best effort, as documented above).
      const code = (error as NodeJS.ErrnoException).code;
      if (code !== 'ENOENT' && code !== 'ENOTDIR') {
        this.logger.warn({ workspaceId: ref.workspaceId, err: errorMessage(error) }, 'cannot list the logs to upload');
      }
      return { uploaded, failed };
    }
    const target = this.target(ref);
    await this.storage.ensureBucket(target.bucket);
    for (const name of names) {
      const task = name.slice(logPrefix.length) || 'default';
      const object = `${target.prefix}instances/${instanceId}/logs/${task}`;
      try {
        await retryWithBackoff(
          async () => {
            const handle = await open(
              join(dir, name),
              constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK,
            );
            try {
              // A FIFO or device planted under the name would block or never end: regular files only.
              const stats = await handle.stat();
              if (!stats.isFile()) throw new InvalidArgumentError('logs', `'${name}' is not a regular file`);
              // Its end, where a log's outcome is: at most maxLogBytes, read no further than its size now.
              const start = Math.max(0, stats.size - maxLogBytes);
              const body =
                stats.size === 0
                  ? Readable.from([])
                  : handle.createReadStream({ autoClose: false, start, end: stats.size - 1 });
              await this.storage.upload(target.bucket, object, body, { contentType: 'text/plain' });
            } finally {
              await handle.close();
            }
          },
          { attempts: 3, initialDelayMs: 200 },
        );
        uploaded.push(object);
      } catch (error) {
        failed.push(object);
        this.logger.warn({ workspaceId: ref.workspaceId, object, err: errorMessage(error) }, 'log upload failed');
      }
    }
    return { uploaded, failed };
  }

  /** Deletes every backup object of a workspace (not its snapshots). */
  async deleteBackups(ref: WorkspaceStorageRef): Promise<number> {
    const target = this.target(ref);
    const tar = this.tarName(ref);
    let count = await this.storage.delete(tar.bucket, { name: tar.name });
    count += await this.storage.delete(target.bucket, { name: manifestName(target) });
    count += await this.storage.delete(target.bucket, { prefix: `${target.prefix}${chunksDirectory}` });
    return count;
  }
}

/**
 * `stream`, failing with RESOURCE_EXHAUSTED once more than `maxBytes` went through (the source is destroyed then).
 * `exceeded` answers that error once it happened.
 */
function capBytes(stream: Readable, maxBytes: number): { stream: Readable; exceeded: () => Error | undefined } {
  let failure: Error | undefined;
  async function* counted(): AsyncGenerator<Buffer> {
    let total = 0;
    for await (const chunk of stream as AsyncIterable<Buffer>) {
      total += chunk.length;
      if (total > maxBytes) {
        failure = new ResourceExhaustedError(
          `the snapshot grew past the ${maxBytes} bytes it was admitted for (the content's size when it was asked for, with room to spare): the workspace wrote while it was taken, or its archive costs more than estimated`,
        );
        stream.destroy();
        throw failure;
      }
      yield chunk;
    }
  }
  return { stream: Readable.from(counted(), { objectMode: false }), exceeded: () => failure };
}

/**
 * The error for a snapshot whose bytes the archive reader refused (a tar header past its bounds, a corrupt gzip or
 * zstd stream): INVALID_ARGUMENT naming `field`, for the request named it; such errors reached the client as
 * INTERNAL "internal error" (red team round 13, S1). Undefined for every other failure (storage, the disk, domain
 * errors), which keep their own status.
 */
function unreadableArchive(error: unknown, field: string, qualified: string): InvalidArgumentError | undefined {
  if (isWorkbayError(error) || !(error instanceof Error)) return undefined;
  const code = (error as NodeJS.ErrnoException).code;
  // System calls fail with errno names (ENOSPC, EIO, ...): those are the node's, not the archive's.
  if (typeof code === 'string' && /^E[A-Z0-9]+$/.test(code)) return undefined;
  return new InvalidArgumentError(field, `'${qualified}' cannot be restored: ${errorMessage(error)}`, { cause: error });
}
