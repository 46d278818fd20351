/**
 * Structured logging with pino. Components take a {@link Logger} and bind their context with `child()`
 * (e.g. `{ workspace: id }`), so every line about a workspace carries its id.
 *
 * @module
 */
import { pino } from 'pino';
import type { Logger as PinoLogger } from 'pino';

export type Logger = PinoLogger;

export interface LoggerOptions {
  readonly level?: string;
  /** Where to write (default stdout); tests pass a stream to capture lines. */
  readonly destination?: NodeJS.WritableStream;
}

export function createLogger(options: LoggerOptions = {}): Logger {
  return pino(
    {
      name: 'workbay-manager',
      level: options.level ?? 'info',
      // Owner tokens must never reach a log line.
      redact: {
        paths: ['ownerToken', '*.ownerToken', 'auth.ownerToken', 'headers.cookie', 'token'],
        censor: '[redacted]',
      },
      base: { pid: process.pid },
    },
    (options.destination as pino.DestinationStream | undefined) ?? pino.destination({ sync: false }),
  );
}

/** A logger that writes nothing. */
export function createSilentLogger(): Logger {
  return pino({ level: 'silent' });
}
