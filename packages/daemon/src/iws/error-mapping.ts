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

/**
 * Maps what the namespace layer throws to the api's domain errors: the one place where nsinsider's
 * failure kinds and errno codes get a meaning for clients. Domain errors pass through.
 */
export function toIwsError(error: unknown, what: string): WorkbayError {
  if (isWorkbayError(error)) return error;
  if (isNsinsiderValidationError(error)) {
    return new InvalidArgumentError(wireField(error.field), error.message, { cause: error });
  }
  if (isNsinsiderError(error)) {
    const detail = `${what}: ${error.message}`;
    switch (error.kind) {
      case 'not-found':
        return new NotFoundError(detail, { cause: error });
      case 'unsupported':
        return new FailedPreconditionError(`${detail} (not supported on this machine)`, { cause: error });
      case 'timeout':
        return new DeadlineExceededError(detail, { cause: error });
      case 'protocol':
        // The helper could not run in the workspace's namespaces (the workspace changed them under it): the
        // workspace's state, not ours; its stderr stays in the cause for the log, never in the answer.
        return new FailedPreconditionError(`${what}: could not run in the workspace's namespaces`, { cause: error });
      default:
        break;
    }
    switch (error.code) {
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
    if (error.code === 'ENOENT')
      return new NotFoundError(`${what}: cgroup '${error.path}' does not exist`, { cause: error });
    if (error.code === 'EINVAL') return new InvalidArgumentError('cgroup', error.message, { cause: error });
    return new InternalError(`${what}: ${error.message}`, { cause: error });
  }
  return new InternalError(`${what}: ${error instanceof Error ? error.message : String(error)}`, { cause: error });
}
