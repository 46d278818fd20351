/**
 * The one logger factory of Workbay (pino, JSON lines) with the one redaction list. Components take a
 * {@link Logger} and bind their context with `child()` (e.g. `{ workspace: id }`).
 *
 * Two defences, both always on: fields that hold credentials are censored by name ({@link redactedFields}, at the
 * top and two levels down), and every string that reaches a line (messages, error messages and stacks, bound
 * values) is scrubbed of credentials in URLs, credential-like query parameters and authorization headers
 * ({@link redactText}), which the gRPC edges and workspace status messages use too.
 *
 * @module
 */
import { pino } from 'pino';
import type { Logger as PinoLogger } from 'pino';

export type Logger = PinoLogger;

export interface LoggerOptions {
  /** The `name` field of every line: `workbay-manager`, `workbay-daemon`. */
  readonly name: string;
  readonly level?: string;
  /** Where to write (default stdout); tests pass a stream to capture lines. */
  readonly destination?: NodeJS.WritableStream;
}

/** Keys whose values never reach a log line, wherever they stand (top level and two levels down). */
const redactedKeys = [
  'ownerToken',
  'token',
  'tokens',
  'password',
  'authPassword',
  'auth_password',
  'secret',
  'credentials',
  'authorization',
  'otsUrl',
  'authOts',
  'auth_ots',
  'initializer',
];

/** Field paths whose values never reach a log line (pino redaction paths). */
export const redactedFields: readonly string[] = [
  ...redactedKeys.flatMap((key) => [key, `*.${key}`, `*.*.${key}`]),
  'headers.cookie',
  '*.headers.cookie',
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

/** A pino logger with the redaction list and text scrubbing applied. */
export function createLogger(options: LoggerOptions): Logger {
  return pino(
    {
      name: options.name,
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
