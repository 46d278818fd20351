import { isWorkbayError } from '@workbay/api';
import type { WorkbayErrorCode } from '@workbay/api';

/**
 * What the `workbay` CLI's exit status means. Scripts can rely on these.
 *
 * | code | meaning |
 * |---|---|
 * | 0 | success |
 * | 1 | usage error or invalid argument (bad flag, bad value, rejected by the manager as INVALID_ARGUMENT) |
 * | 2 | not found (no such workspace) |
 * | 3 | precondition: already exists, wrong phase, maintenance mode (ALREADY_EXISTS, FAILED_PRECONDITION) |
 * | 4 | the manager is unavailable (not running, unreachable, shutting down) |
 * | 5 | timed out (waiting for a phase, or a call's deadline) |
 * | 6 | the workspace failed (`--wait` saw it stop with `conditions.failed`) |
 * | 10 | anything else (internal error, permission denied, …) |
 * | 130 | interrupted (Ctrl+C) while waiting |
 */
export const ExitCode = {
  ok: 0,
  usage: 1,
  notFound: 2,
  precondition: 3,
  unavailable: 4,
  timedOut: 5,
  workspaceFailed: 6,
  other: 10,
  interrupted: 130,
} as const;

export type ExitCode = (typeof ExitCode)[keyof typeof ExitCode];

const byErrorCode: Readonly<Record<WorkbayErrorCode, ExitCode>> = {
  'invalid-argument': ExitCode.usage,
  'not-found': ExitCode.notFound,
  'already-exists': ExitCode.precondition,
  'failed-precondition': ExitCode.precondition,
  unavailable: ExitCode.unavailable,
  'deadline-exceeded': ExitCode.timedOut,
  'permission-denied': ExitCode.other,
  unauthenticated: ExitCode.other,
  'resource-exhausted': ExitCode.other,
  aborted: ExitCode.other,
  internal: ExitCode.other,
  unimplemented: ExitCode.other,
  cancelled: ExitCode.other,
};

/** The exit code for an error a command failed with. */
export function exitCodeFor(error: unknown): ExitCode {
  if (error instanceof CliError) return error.exitCode;
  if (isWorkbayError(error)) return byErrorCode[error.code];
  return ExitCode.other;
}

/** An error the CLI itself raises, with the exit code it ends the process with. */
export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode: ExitCode,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'CliError';
  }
}

/**
 * An error as one JSON object, for `--json`: `{"error": {"message", "exitCode", "code"?, "field"?}}`, where
 * `code` is the error code (`invalid-argument`, `not-found`, …) and `field` the offending key or flag.
 */
export function errorJson(error: unknown, exitCode: number): { error: Record<string, unknown> } {
  const message = error instanceof Error ? error.message.replace(/^error: /, '') : String(error);
  const source = error instanceof CliError && error.cause !== undefined ? error.cause : error;
  const out: Record<string, unknown> = { message, exitCode };
  if (isWorkbayError(source)) {
    out['code'] = source.code;
    const field = (source as { field?: unknown }).field;
    if (typeof field === 'string' && field) out['field'] = field;
  } else if (exitCode === ExitCode.usage) {
    out['code'] = 'usage';
  }
  return { error: out };
}
