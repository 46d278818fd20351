/**
 * Structured logging with pino. Components take a {@link Logger} and bind their context with `child()`
 * (e.g. `{ workspace: id }`), so every line about a workspace carries its id.
 *
 * One redaction list for the whole manager: fields that hold credentials are censored by name
 * ({@link redactedFields}), and every string that reaches a line (messages, error messages and stacks, bound
 * values) is scrubbed of credentials in URLs, credential-like query parameters and authorization headers
 * ({@link redactText}), which the gRPC edge and workspace status messages use too.
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

/** Field names whose values never reach a log line. */
export const redactedFields: readonly string[] = [
  'ownerToken',
  '*.ownerToken',
  'auth.ownerToken',
  'token',
  '*.token',
  'tokens',
  '*.tokens',
  'password',
  '*.password',
  'otsUrl',
  '*.otsUrl',
  'initializer',
  '*.initializer',
  'headers.cookie',
  'headers.authorization',
  '*.headers.cookie',
  '*.headers.authorization',
  'authorization',
];

const credentialParam =
  /([?&;][^=&#\s"']*(?:token|secret|signature|sig|password|passwd|pwd|key|credential|auth|ots)[^=&#\s"']*=)[^&#\s"']+/gi;
const urlUserinfo = /\b([a-z][a-z0-9+.-]*:\/\/)[^/?#\s@"']+@/gi;
const authHeader = /\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}/gi;

/** Removes credentials from free text: URL userinfo, credential-like query parameters, authorization values. */
export function redactText(text: string): string {
  return text
    .replace(urlUserinfo, '$1[redacted]@')
    .replace(credentialParam, '$1[redacted]')
    .replace(authHeader, '$1 [redacted]');
}

function scrub(value: unknown, depth: number): unknown {
  if (typeof value === 'string') return redactText(value);
  if (depth > 4 || value === null || typeof value !== 'object') return value;
  if (Array.isArray(value)) return value.map((v) => scrub(v, depth + 1));
  if (value instanceof Error) return value;
  const out: Record<string, unknown> = {};
  for (const [key, child] of Object.entries(value)) out[key] = scrub(child, depth + 1);
  return out;
}

function errSerializer(error: unknown): unknown {
  const serialized = pino.stdSerializers.err(error as Error) as unknown as Record<string, unknown>;
  return scrub(serialized, 0);
}

export function createLogger(options: LoggerOptions = {}): Logger {
  return pino(
    {
      name: 'workbay-manager',
      level: options.level ?? 'info',
      redact: { paths: [...redactedFields], censor: '[redacted]' },
      serializers: { err: errSerializer, error: errSerializer },
      formatters: { log: (object) => scrub(object, 0) as Record<string, unknown> },
      hooks: {
        logMethod(args, method) {
          const scrubbed = args.map((a) => (typeof a === 'string' ? redactText(a) : a)) as typeof args;
          method.apply(this, scrubbed);
        },
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
