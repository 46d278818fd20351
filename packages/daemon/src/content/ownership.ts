/**
 * Owner confinement of storage locations (invariant 11): a location a request names (a snapshot or prebuild
 * to restore) must lie in the requesting owner's storage, the bucket `workbay-user-<owner>` in the per-owner
 * layout, or the `<owner>/` prefix of the shared bucket. Anything else is refused before a byte is read.
 */
import type { BucketLayout } from '@workbay/api';
import { locateOwner, snapshotObjectName } from '@workbay/api';
import { InvalidArgumentError, PermissionDeniedError } from '../errors.js';
import { checkLength, limits, quote } from '../util/bounds.js';

/** Splits `<object>@<bucket>` (exactly one `@`, both parts set) without echoing more than a prefix of it. */
export function splitQualified(qualified: string, field: string): { bucket: string; name: string } {
  checkLength(qualified, field, limits.snapshot);
  const parts = qualified.split('@');
  if (parts.length !== 2 || !parts[0] || !parts[1])
    throw new InvalidArgumentError(field, `${quote(qualified)} is not of the form <object>@<bucket>`);
  return { name: parts[0], bucket: parts[1] };
}

/**
 * Object names are compared as strings: a `.` or `..` segment (which some backends normalize), an empty
 * segment or a backslash could make two spellings of one object, or one that leaves the owner's prefix.
 */
function checkObjectName(name: string, qualified: string, field: string): void {
  // eslint-disable-next-line no-control-regex -- control characters are exactly what is refused
  if (/[\\\u0000-\u001f\u007f]/.test(name))
    throw new InvalidArgumentError(field, `${quote(qualified)}: the object name has control characters or '\\'`);
  for (const segment of name.split('/')) {
    if (segment === '' || segment === '.' || segment === '..')
      throw new InvalidArgumentError(field, `${quote(qualified)}: the object name has an empty, '.' or '..' segment`);
  }
}

/**
 * Throws unless `<object>@<bucket>` lies in `owner`'s storage: INVALID_ARGUMENT for a malformed name,
 * PERMISSION_DENIED (naming `field`) for anybody else's location.
 */
export function assertOwnedLocation(layout: BucketLayout, owner: string, qualified: string, field: string): void {
  const { bucket, name } = splitQualified(qualified, field);
  checkObjectName(name, qualified, field);
  const own = locateOwner(layout, owner);
  if (bucket !== own.bucket || !name.startsWith(own.prefix)) {
    throw new PermissionDeniedError(
      `${field}: ${quote(qualified)} is not in the storage of owner ${quote(owner)}; a workspace may only restore its owner's snapshots`,
    );
  }
}

/**
 * {@link assertOwnedLocation}, and the object is a snapshot as the daemon names them
 * (`[<owner>/]workspaces/<id>/snapshot-<unixnano>.tar`, spelled exactly so): INVALID_ARGUMENT naming `field` for any
 * other object of the owner's. Any object was taken before: a backup pack of incompressible data is a file of the
 * workspace byte for byte, so an owner handed the extractor archives of her own making, past every bound a snapshot
 * the daemon made keeps (red team round 13, S1).
 */
export function assertOwnedSnapshot(layout: BucketLayout, owner: string, qualified: string, field: string): void {
  assertOwnedLocation(layout, owner, qualified, field);
  const { name } = splitQualified(qualified, field);
  const own = locateOwner(layout, owner);
  const match = /^workspaces\/([^/]+)\/snapshot-([1-9][0-9]{0,29})\.tar$/.exec(name.slice(own.prefix.length));
  let expected: string | undefined;
  try {
    expected = match ? snapshotObjectName(own, match[1] as string, BigInt(match[2] as string)) : undefined;
  } catch {
    // Deliberate: a workspace id the layout refuses names no snapshot; refused below.
  }
  if (expected !== name) {
    throw new InvalidArgumentError(
      field,
      `${quote(qualified)} is not a snapshot (expected workspaces/<id>/snapshot-<unixnano>.tar of the owner's)`,
    );
  }
}
