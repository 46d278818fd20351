import { createHash } from 'node:crypto';
import { InvalidArgumentError } from '../errors.js';

/**
 * Where an owner's objects live: one bucket per owner (`workbay-user-<owner>`, or `workbay-user-h--<hash>` for an owner
 * that is not a lower-case bucket name: see {@link locateOwner}), or one shared bucket with an `<owner>/` key prefix. Both the daemon and storage plugins use this so that they agree on names.
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

/**
 * Owners whose per-owner bucket is named after them as they are: lower-case letters, digits and hyphens, not starting
 * with the hashed names' `h--`. Any other owner (upper case, `_`, too long for a bucket name) gets a bucket named by
 * the SHA-256 of the owner. Owners are case-sensitive everywhere else, so the lower-casing this replaced gave `ALICE`
 * alice's bucket: her snapshots, her backups, and the last word on her next start (red team round 12, O1).
 */
const plainBucketOwner = /^(?!h--)[a-z0-9][a-z0-9-]*$/;

/** `h--` and 160 bits of the owner's SHA-256: no plain owner's name starts so (see {@link plainBucketOwner}). */
function hashedOwner(owner: string): string {
  return `h--${createHash('sha256').update(owner).digest('hex').slice(0, 40)}`;
}

export function locateOwner(layout: BucketLayout, owner: string): StorageLocation {
  if (!ownerPattern.test(owner)) {
    throw new InvalidArgumentError('owner', `owner '${owner}' may only contain letters, digits, '-' and '_'`);
  }
  if (layout.mode === 'shared') {
    return { bucket: layout.bucket, prefix: `${owner}/` };
  }
  const prefix = layout.bucketPrefix ?? defaultBucketPrefix;
  const named = `${prefix}${owner}`;
  const bucket =
    plainBucketOwner.test(owner) && bucketNamePattern.test(named) ? named : `${prefix}${hashedOwner(owner)}`;
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
