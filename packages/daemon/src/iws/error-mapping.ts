import {
  AlreadyExistsError,
  DeadlineExceededError,
  FailedPreconditionError,
  InternalError,
  InvalidArgumentError,
  isWorkbayError,
  NotFoundError,
} from '@workbay/api';
import type { WorkbayError } from '@workbay/api';
import { isCgroupError, isNsinsiderError, isNsinsiderValidationError } from '@workbay/nsinsider';

// nsinsider's argument names are camelCase; the wire's are the proto field names.
const wireFields: Record<string, string> = {
  containerId: 'container_id',
  hostId: 'host_id',
  mappings: 'mapping',
  nsPid: 'pid',
  targetPid: 'pid',
};

function wireField(field: string): string {
  return field.replace(/[A-Za-z]+/g, (seg) => wireFields[seg] ?? seg);
}

/** What each nsinsider failure kind tells the workspace: the kind, never the tool's words. */
const kindSummaries: Record<string, string> = {
  failed: 'the operation failed',
  unsupported: 'not supported on this machine',
  'not-found': 'the process or namespace is gone',
  timeout: 'the operation did not finish in time',
  spawn: 'the operation could not be started',
  protocol: "could not run in the workspace's namespaces",
};

/** The common errno codes in words (the code itself follows in parentheses). */
const codeSummaries: Record<string, string> = {
  ENOENT: 'a path or process it names does not exist',
  EEXIST: 'it exists already',
  EPERM: 'not permitted',
  EACCES: 'permission denied',
  EBUSY: 'the target is busy',
  ENOTDIR: 'a path it names is not a directory',
  EINVAL: 'the kernel refused the arguments',
};

/** An errno-style code as reported by the tools, or nothing when it does not look like one. */
function errnoOf(code: string | undefined): string | undefined {
  return code !== undefined && /^E[A-Z0-9]{1,15}$/.test(code) ? code : undefined;
}

/**
 * Maps what the namespace layer throws to the api's domain errors: the one place where nsinsider's
 * failure kinds and errno codes get a meaning for clients. Domain errors pass through.
 *
 * The answer goes to the workspace, which is hostile: it says what failed (the RPC, the failure kind, the errno
 * code) and nothing else. Tool messages carry command lines with host pids, the node's paths and cgroup layout
 * and the tools' stderr; they stay in the error's `cause`, which the iws service logs (`onError`) for operators.
 */
export function toIwsError(error: unknown, what: string): WorkbayError {
  if (isWorkbayError(error)) return error;
  if (isNsinsiderValidationError(error)) {
    // The message describes the request's own arguments (checked before anything ran).
    return new InvalidArgumentError(wireField(error.field), error.message, { cause: error });
  }
  if (isNsinsiderError(error)) {
    const code = errnoOf(error.code);
    const summary = (code && error.kind === 'failed' ? codeSummaries[code] : undefined) ?? kindSummaries[error.kind];
    const detail = `${what}: ${summary ?? kindSummaries['failed']}${code ? ` (${code})` : ''}`;
    switch (error.kind) {
      case 'not-found':
        return new NotFoundError(detail, { cause: error });
      case 'unsupported':
        return new FailedPreconditionError(detail, { cause: error });
      case 'timeout':
        return new DeadlineExceededError(detail, { cause: error });
      case 'protocol':
        // The helper could not run in the workspace's namespaces (the workspace changed them under it): the
        // workspace's state, not ours.
        return new FailedPreconditionError(detail, { cause: error });
      default:
        break;
    }
    switch (code) {
      case 'EEXIST':
        return new AlreadyExistsError(detail, { cause: error });
      case 'ENOTMOUNTED':
        return new FailedPreconditionError(`${what}: target is not mounted`, { cause: error });
      case 'EPERM':
      case 'EBUSY':
        return new FailedPreconditionError(detail, { cause: error });
      case 'ENOENT':
        return new NotFoundError(detail, { cause: error });
      default:
        return new InternalError(detail, { cause: error });
    }
  }
  if (isCgroupError(error)) {
    // The cgroup's path is the node's layout: not the workspace's business.
    const code = errnoOf(error.code);
    if (code === 'ENOENT') return new NotFoundError(`${what}: the workspace's cgroup does not exist`, { cause: error });
    if (code === 'EINVAL')
      return new InvalidArgumentError('cgroup', `${what}: the kernel refused the value`, { cause: error });
    return new InternalError(`${what}: cgroup operation failed${code ? ` (${code})` : ''}`, { cause: error });
  }
  return new InternalError(`${what}: internal error`, { cause: error });
}
