/**
 * Errors of @workbay/nsinsider. Every failure of a namespace operation reaches callers as one of these,
 * so the daemon maps them to its own domain errors in one place.
 *
 * Guards match on `name` as well as `instanceof`: the errors cross package copies (and, as JSON, the
 * process boundary between the library and the CLI).
 */

/** Why an operation failed, as far as the library can tell. */
export type NsinsiderFailureKind =
  /** The operation ran and reported a failure (a syscall or tool error). */
  | 'failed'
  /** The operation cannot work on this machine (missing kernel feature or tool). */
  | 'unsupported'
  /** The target process or namespace is gone. */
  | 'not-found'
  /** The helper did not finish in time and was killed. */
  | 'timeout'
  /** nsenter or node could not be started. */
  | 'spawn'
  /** The helper ended without a readable result line. */
  | 'protocol';

export interface NsinsiderErrorOptions {
  op: string;
  kind: NsinsiderFailureKind;
  /** errno-style code reported by the helper (`EEXIST`, `EPERM`, …), when there is one. */
  code?: string;
  exitCode?: number | null;
  stderr?: string;
  cause?: unknown;
}

/** A namespace operation failed. */
export class NsinsiderError extends Error {
  readonly op: string;
  readonly kind: NsinsiderFailureKind;
  readonly code: string | undefined;
  readonly exitCode: number | null;
  readonly stderr: string;

  constructor(message: string, options: NsinsiderErrorOptions) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'NsinsiderError';
    this.op = options.op;
    this.kind = options.kind;
    this.code = options.code;
    this.exitCode = options.exitCode ?? null;
    this.stderr = options.stderr ?? '';
  }
}

/** An operation was called with bad arguments; nothing was run. `field` names the bad argument. */
export class NsinsiderValidationError extends Error {
  readonly op: string;
  readonly field: string;

  constructor(op: string, field: string, message: string) {
    super(`${op}: invalid ${field}: ${message}`);
    this.name = 'NsinsiderValidationError';
    this.op = op;
    this.field = field;
  }
}

/** A cgroup operation failed (`path` is the cgroup, relative to the hierarchy root). */
export class CgroupError extends Error {
  readonly op: string;
  readonly path: string;
  readonly code: string | undefined;

  constructor(message: string, options: { op: string; path: string; code?: string; cause?: unknown }) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'CgroupError';
    this.op = options.op;
    this.path = options.path;
    this.code = options.code;
  }
}

function hasName(e: unknown, name: string): boolean {
  return typeof e === 'object' && e !== null && (e as { name?: unknown }).name === name;
}

export function isNsinsiderError(e: unknown): e is NsinsiderError {
  return e instanceof NsinsiderError || hasName(e, 'NsinsiderError');
}

export function isNsinsiderValidationError(e: unknown): e is NsinsiderValidationError {
  return e instanceof NsinsiderValidationError || hasName(e, 'NsinsiderValidationError');
}

export function isCgroupError(e: unknown): e is CgroupError {
  return e instanceof CgroupError || hasName(e, 'CgroupError');
}

/**
 * Raised by the operations (inside.ts): the library turns it into an {@link NsinsiderError}; the CLI into its JSON
 * error line (which the library's CLI mode turns back into an {@link NsinsiderError}).
 * @internal
 */
export class OpFailure extends Error {
  readonly code: string;
  readonly kind: NsinsiderFailureKind;
  /** Exit code and stderr of the tool that failed, when a tool did. */
  readonly exitCode: number | null;
  readonly stderr: string;

  constructor(
    code: string,
    message: string,
    kind: NsinsiderFailureKind = 'failed',
    tool: { exitCode?: number | null; stderr?: string } = {},
  ) {
    super(message);
    this.name = 'OpFailure';
    this.code = code;
    this.kind = kind;
    this.exitCode = tool.exitCode ?? null;
    this.stderr = tool.stderr ?? '';
  }
}

/** The errno code of a Node system error (`ENOENT`, …), if it is one. */
export function errnoCode(e: unknown): string | undefined {
  const code = (e as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : undefined;
}
