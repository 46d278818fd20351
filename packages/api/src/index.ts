export {
  WorkbayError,
  InvalidArgumentError,
  NotFoundError,
  FailedPreconditionError,
} from './errors.js';
export { protoRoot, protoFiles } from './proto-root.js';
export { WorkspaceManagerService } from './generated/wsman/core.js';
export type { WorkspaceManagerServer } from './generated/wsman/core.js';
