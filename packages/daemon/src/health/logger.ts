/**
 * The daemon's logger: the shared factory of `@workbay/api` (one redaction list for every service) named
 * `workbay-daemon`.
 *
 * @module
 */
import { createLogger as createServiceLogger } from '@workbay/api';
import type { Logger } from '@workbay/api';

export { redactedFields } from '@workbay/api';

export interface DaemonLoggerOptions {
  readonly level?: string;
  readonly name?: string;
  readonly destination?: NodeJS.WritableStream;
}

export function createLogger(options: DaemonLoggerOptions = {}): Logger {
  return createServiceLogger({ ...options, name: options.name ?? 'workbay-daemon' });
}
