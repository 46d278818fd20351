/**
 * The manager's logger: the shared factory of `@workbay/api` (one redaction list for every service) named
 * `workbay-manager`. Components take a {@link Logger} and bind their context with `child()`.
 *
 * @module
 */
import { createLogger as createServiceLogger } from '@workbay/api';
import type { Logger } from '@workbay/api';

export type { Logger } from '@workbay/api';
export { createSilentLogger, redactText, redactedFields } from '@workbay/api';

export interface ManagerLoggerOptions {
  readonly level?: string;
  /** Where to write (default stdout); tests pass a stream to capture lines. */
  readonly destination?: NodeJS.WritableStream;
}

export function createLogger(options: ManagerLoggerOptions = {}): Logger {
  return createServiceLogger({ name: 'workbay-manager', ...options });
}
