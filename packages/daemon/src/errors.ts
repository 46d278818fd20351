/**
 * The daemon's errors. It reuses the api's domain error classes (mapped to gRPC status only at the server edge
 * by `toGrpcStatus`) and adds a few with their own meaning, each a subclass of one of those classes so the
 * status code follows from the class.
 */
import {
  FailedPreconditionError,
  InternalError,
  InvalidArgumentError,
  NotFoundError,
  ResourceExhaustedError,
  UnauthenticatedError,
} from '@workbay/api';
import type { WorkbayErrorOptions } from '@workbay/api';

export {
  AbortedError,
  AlreadyExistsError,
  CancelledError,
  DeadlineExceededError,
  FailedPreconditionError,
  InternalError,
  InvalidArgumentError,
  NotFoundError,
  PermissionDeniedError,
  ResourceExhaustedError,
  UnauthenticatedError,
  UnavailableError,
  WorkbayError,
  isWorkbayError,
} from '@workbay/api';

/** An archive entry would be written outside the target directory (invariant 6). */
export class ArchiveEscapeError extends InvalidArgumentError {
  constructor(entryPath: string, reason: string, options?: WorkbayErrorOptions) {
    super('archive', `refusing entry '${entryPath}': ${reason}`, options);
  }
}

/** Git refused the credentials (or had none for a private repository). Never retried. */
export class GitAuthenticationError extends UnauthenticatedError {
  constructor(remote: string, detail: string, options?: WorkbayErrorOptions) {
    super(`git authentication failed for ${remote}: ${detail}`, options);
  }
}

/**
 * The remote said no: repository missing or access forbidden. Never retried. FAILED_PRECONDITION, not
 * PERMISSION_DENIED: the manager keeps the content of a start that failed PERMISSION_DENIED (the daemon holds
 * another workspace's content under its id), and red team round 15 (G8) left a mounted 10 GiB image per start of a
 * missing repository that way, until no owner could start for disk admission.
 */
export class GitAccessDeniedError extends FailedPreconditionError {
  constructor(remote: string, detail: string, options?: WorkbayErrorOptions) {
    super(`git access denied for ${remote}: ${detail}`, options);
  }
}

/**
 * Network git was refused a connection by the daemon's address policy (its egress proxy): the request's remote, a
 * redirect or a submodule named a loopback, link-local, private or other non-public address. As for a download
 * refused by the same policy, INVALID_ARGUMENT naming the request field; never retried.
 */
export class GitAddressRefusedError extends InvalidArgumentError {
  /** `host:port` git was refused (the first refusal of the command). */
  readonly target: string;
  /** The kind of address (`loopback`, `link-local`, `private`, ...). */
  readonly kind: string;

  constructor(field: string, target: string, kind: string, options?: WorkbayErrorOptions) {
    super(
      field,
      // Short, the config keys early: status lines that show it cut long messages.
      `git was refused a connection to ${target} (${kind} address; non-public addresses only with daemon config ` +
        'git.allowedNetworks or git.allowPrivateAddresses)',
      options,
    );
    this.target = target;
    this.kind = kind;
  }
}

/** A workspace with no backup was asked to restore one (invariant 1: fail loudly, never start empty). */
export class NoBackupFoundError extends NotFoundError {
  constructor(workspaceId: string, options?: WorkbayErrorOptions) {
    super(`no backup found for workspace '${workspaceId}'`, options);
  }
}

/** Stored data does not match its recorded digest. */
export class DataCorruptionError extends InternalError {
  constructor(what: string, expected: string, actual: string, options?: WorkbayErrorOptions) {
    super(`${what}: digest mismatch (expected ${expected}, got ${actual})`, options);
  }
}

/** The workspace is not in a state that allows the operation; the message says which state it is in. */
export class WorkspaceStateError extends FailedPreconditionError {
  constructor(workspaceId: string, state: string, operation: string, options?: WorkbayErrorOptions) {
    super(`workspace '${workspaceId}' is ${state}; cannot ${operation}`, options);
  }
}

/**
 * A loop-image disk quota the node's disk cannot back: admitting it would promise more than the filesystem holding
 * the images has free above the node's reserve. Nothing was created. RESOURCE_EXHAUSTED on the wire.
 */
export class DiskOvercommitError extends ResourceExhaustedError {
  readonly requestedBytes: number;
  readonly availableBytes: number;

  constructor(requestedBytes: number, availableBytes: number, options?: WorkbayErrorOptions) {
    super(
      // Short, the config keys early: status lines that show it cut long messages. No paths (clients see it).
      `disk quota of ${requestedBytes} bytes refused: ${availableBytes} bytes available on this node ` +
        '(daemon config quota.reserveBytes, quota.reserveFraction, quota.overcommitRatio)',
      options,
    );
    this.requestedBytes = requestedBytes;
    this.availableBytes = availableBytes;
  }
}

/** Human-readable text of any thrown value, for logs and wrapped messages. */
export function errorMessage(error: unknown): string {
  if (error instanceof Error) return error.message;
  return String(error);
}
