import { InvalidArgumentError } from '../errors.js';

/**
 * Where an owner's objects live: one bucket per owner (`workbay-user-<owner>`), or one shared bucket with an
 * `<owner>/` key prefix. Both the daemon and storage plugins use this so that they agree on names.
 */
export type BucketLayout =
  { readonly mode: 'per-owner'; readonly bucketPrefix?: string } | { readonly mode: 'shared'; readonly bucket: string };

export interface StorageLocation {
  readonly bucket: string;
  /** Key prefix for this owner inside the bucket: '' or `<owner>/`. */
  readonly prefix: string;
}

export const defaultBucketPrefix = 'workbay-user-';

// S3 bucket names: 3–63 chars of lower-case letters, digits, dots and hyphens.
const bucketNamePattern = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/;
const ownerPattern = /^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$/;
const workspaceIdPattern = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

export function locateOwner(layout: BucketLayout, owner: string): StorageLocation {
  if (!ownerPattern.test(owner)) {
    throw new InvalidArgumentError('owner', `owner '${owner}' may only contain letters, digits, '-' and '_'`);
  }
  if (layout.mode === 'shared') {
    return { bucket: layout.bucket, prefix: `${owner}/` };
  }
  const bucket = `${layout.bucketPrefix ?? defaultBucketPrefix}${owner.toLowerCase()}`;
  if (!bucketNamePattern.test(bucket)) {
    throw new InvalidArgumentError('owner', `owner '${owner}' does not make a valid bucket name ('${bucket}')`);
  }
  return { bucket, prefix: '' };
}

export function assertWorkspaceId(workspaceId: string, field = 'workspace_id'): void {
  if (!workspaceIdPattern.test(workspaceId)) {
    throw new InvalidArgumentError(field, `'${workspaceId}' is not a valid workspace id`);
  }
}

/** `[<owner>/]workspaces/<workspaceId>/` */
export function workspacePrefix(location: StorageLocation, workspaceId: string): string {
  assertWorkspaceId(workspaceId);
  return `${location.prefix}workspaces/${workspaceId}/`;
}

/** The backup object, keyed by the workspace (meta) id so that every restart restores the latest stop backup. */
export function backupObjectName(location: StorageLocation, workspaceId: string): string {
  return `${workspacePrefix(location, workspaceId)}full.tar`;
}

export function snapshotObjectName(location: StorageLocation, workspaceId: string, unixNano: bigint): string {
  return `${workspacePrefix(location, workspaceId)}snapshot-${unixNano.toString()}.tar`;
}

/** Current time in nanoseconds since the epoch, for snapshot names. */
export function unixNanoNow(): bigint {
  return BigInt(Date.now()) * 1_000_000n + (process.hrtime.bigint() % 1_000_000n);
}

/** `<object>@<bucket>`: how snapshots are named to clients. */
export function qualifyObject(bucket: string, name: string): string {
  return `${name}@${bucket}`;
}

/** Splits `<object>@<bucket>`; exactly one `@` is allowed. */
export function parseQualifiedObject(qualified: string, field = 'snapshot'): { bucket: string; name: string } {
  const parts = qualified.split('@');
  if (parts.length !== 2 || !parts[0] || !parts[1]) {
    throw new InvalidArgumentError(field, `'${qualified}' is not of the form <object>@<bucket>`);
  }
  return { name: parts[0], bucket: parts[1] };
}
