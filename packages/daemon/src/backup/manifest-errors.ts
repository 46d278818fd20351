/**
 * Errors of reading a backup manifest. The manifest lives in storage an attacker may have written, so what is
 * wrong with it is the caller's input, not a passing fault: both are invalid-argument (never retried), and name
 * what was refused so an operator can find it.
 */
import { FailedPreconditionError, InvalidArgumentError } from '../errors.js';
import type { WorkbayErrorOptions } from '@workbay/api';

/** A manifest that does not decode, or whose content does not have the manifest's shape; `field` says where. */
export class MalformedManifestError extends InvalidArgumentError {
  constructor(field: string, reason: string, options?: WorkbayErrorOptions) {
    super(field, `malformed backup manifest: ${reason}`, options);
  }
}

/** A manifest over one of the size limits (see ManifestLimits), refused before it is parsed in full. */
export class ManifestTooLargeError extends InvalidArgumentError {
  constructor(reason: string, options?: WorkbayErrorOptions) {
    super('manifest', `backup manifest too large: ${reason}`, options);
  }
}

/**
 * A backup whose manifest a restore would refuse (over one of the ManifestLimits): refused when it is written, while
 * the workspace and its content still exist, instead of stored and found unrestorable when it is needed. Not retried.
 */
export class UnrestorableBackupError extends FailedPreconditionError {
  constructor(reason: string, options?: WorkbayErrorOptions) {
    super(`the backup would not restore: ${reason}; the content is kept, not backed up`, options);
  }
}
