import { pino } from 'pino';
import type { DestinationStream, Logger, LevelWithSilent } from 'pino';

/** Keys whose values never reach a log line, wherever they appear (one level deep and at the top). */
export const redactedKeys = [
  'password',
  'authPassword',
  'auth_password',
  'secret',
  'token',
  'authorization',
  'credentials',
  'otsUrl',
  'authOts',
  'auth_ots',
];

export interface LoggerOptions {
  readonly level?: LevelWithSilent;
  readonly name?: string;
  readonly destination?: DestinationStream;
}

/** pino, JSON lines, with credentials redacted by key. */
export function createLogger(options: LoggerOptions = {}): Logger {
  const paths = redactedKeys.flatMap((key) => [key, `*.${key}`, `*.*.${key}`]);
  const config = {
    name: options.name ?? 'workbay-daemon',
    level: options.level ?? 'info',
    redact: { paths, censor: '[redacted]' },
  };
  return options.destination ? pino(config, options.destination) : pino(config);
}
