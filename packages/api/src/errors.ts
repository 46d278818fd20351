/**
 * Workbay's domain errors and their mapping to and from gRPC status codes.
 *
 * Rules:
 * 1. Code throws a {@link WorkbayError} subclass whenever the failure has a meaning a caller can act on
 *    (not found, invalid argument, ...). Anything else is "unknown" and becomes INTERNAL on the wire, with a
 *    generic message: internals (paths, stack traces, upstream responses) never leak to clients.
 * 2. Servers answer with {@link toGrpcStatus}; the typed clients reject with {@link fromGrpcError}, so both sides
 *    speak in the same classes. The domain code and, for invalid arguments, the field travel in metadata.
 * 3. `instanceof` and {@link isWorkbayError} work across duplicate copies of this package (two versions in one
 *    `node_modules` tree): instances carry a `Symbol.for` brand plus the brands of their whole class chain, and
 *    `instanceof` checks the class's own brand, so `instanceof GitCommandError` (a subclass of InternalError) is
 *    false for any other internal error. Subclasses keep their own `name`.
 *
 * @module
 */
import { Metadata, status } from '@grpc/grpc-js';

export type WorkbayErrorCode =
  | 'invalid-argument'
  | 'not-found'
  | 'already-exists'
  | 'failed-precondition'
  | 'permission-denied'
  | 'unauthenticated'
  | 'resource-exhausted'
  | 'unavailable'
  | 'deadline-exceeded'
  | 'aborted'
  | 'internal'
  | 'unimplemented'
  | 'cancelled';

/** Every code, in a stable order. */
export const workbayErrorCodes: readonly WorkbayErrorCode[] = Object.freeze([
  'invalid-argument',
  'not-found',
  'already-exists',
  'failed-precondition',
  'permission-denied',
  'unauthenticated',
  'resource-exhausted',
  'unavailable',
  'deadline-exceeded',
  'aborted',
  'internal',
  'unimplemented',
  'cancelled',
]);

/** Options of every Workbay error: the standard `cause`. */
export interface WorkbayErrorOptions {
  readonly cause?: unknown;
}

const brand = Symbol.for('workbay.error');
/** Non-enumerable list of the class brands of an instance (its class and every Workbay ancestor). */
const classBrands = Symbol.for('workbay.error.classes');

type ErrorClass = abstract new (...args: never[]) => object;

/**
 * The brand of an error class: a static `brand` string when the class declares one itself, else derived from
 * the class name (two copies of one package agree on it; unrelated classes with the same name are not told
 * apart, an accepted limit).
 */
function brandOf(ctor: ErrorClass): string {
  const own = Object.prototype.hasOwnProperty.call(ctor, 'brand')
    ? (ctor as { readonly brand?: unknown }).brand
    : undefined;
  return typeof own === 'string' ? own : `workbay.error.class.${ctor.name}`;
}

/** Metadata keys that carry domain details next to the gRPC status. */
export const errorMetadataKeys = Object.freeze({
  code: 'workbay-error-code',
  field: 'workbay-error-field',
});

/** The message sent for errors that are not Workbay errors. */
export const internalErrorMessage = 'internal error';

/**
 * Base class of all domain errors. Prefer the subclasses; `code` says which one an instance is.
 */
export class WorkbayError extends Error {
  readonly code: WorkbayErrorCode;

  constructor(code: WorkbayErrorCode, message: string, options?: WorkbayErrorOptions) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    Object.defineProperty(this, brand, { value: true, enumerable: false });
    const brands: string[] = [];
    for (
      let ctor: ErrorClass | null = new.target;
      ctor && ctor !== Error;
      ctor = Object.getPrototypeOf(ctor) as ErrorClass | null
    ) {
      brands.push(brandOf(ctor));
      if (ctor === (WorkbayError as ErrorClass)) break;
    }
    Object.defineProperty(this, classBrands, { value: Object.freeze(brands), enumerable: false });
    // The concrete class's own name (GitCommandError stays GitCommandError); the base class names itself by code.
    const name = new.target === WorkbayError ? errorNames[code] : new.target.name;
    Object.defineProperty(this, 'name', { value: name, enumerable: false, configurable: true, writable: true });
  }

  /**
   * `x instanceof C` is true when `x` was created by `C` or a subclass of it, whichever copy of this package
   * created it: the prototype chain answers for this copy, the class brands for another copy. Errors from a copy
   * that predates class brands are matched by code, and only against the classes of this module.
   */
  static override [Symbol.hasInstance](value: unknown): boolean {
    if (!isWorkbayError(value)) return false;
    if (Function.prototype[Symbol.hasInstance].call(this, value)) return true;
    const brands = (value as { [classBrands]?: unknown })[classBrands];
    if (Array.isArray(brands)) return brands.includes(brandOf(this));
    if (this === WorkbayError) return true;
    const code = Object.prototype.hasOwnProperty.call(this, 'errorCode')
      ? (this as { readonly errorCode?: WorkbayErrorCode }).errorCode
      : undefined;
    return code !== undefined && value.code === code;
  }
}

export class InvalidArgumentError extends WorkbayError {
  static readonly errorCode = 'invalid-argument';
  /**
   * Path of the offending input, e.g. `spec.timeout` or `plugin.id`. Empty when unknown (an error received
   * from a server that did not name the field).
   */
  readonly field: string;
  /** The message without the field prefix. */
  readonly reason: string;

  constructor(field: string, message: string, options?: WorkbayErrorOptions) {
    super('invalid-argument', field === '' ? message : `${field}: ${message}`, options);
    this.field = field;
    this.reason = message;
  }
}

export class NotFoundError extends WorkbayError {
  static readonly errorCode = 'not-found';
  constructor(message: string, options?: WorkbayErrorOptions) {
    super('not-found', message, options);
  }
}

export class AlreadyExistsError extends WorkbayError {
  static readonly errorCode = 'already-exists';
  constructor(message: string, options?: WorkbayErrorOptions) {
    super('already-exists', message, options);
  }
}

export class FailedPreconditionError extends WorkbayError {
  static readonly errorCode = 'failed-precondition';
  constructor(message: string, options?: WorkbayErrorOptions) {
    super('failed-precondition', message, options);
  }
}

export class PermissionDeniedError extends WorkbayError {
  static readonly errorCode = 'permission-denied';
  constructor(message: string, options?: WorkbayErrorOptions) {
    super('permission-denied', message, options);
  }
}

export class UnauthenticatedError extends WorkbayError {
  static readonly errorCode = 'unauthenticated';
  constructor(message: string, options?: WorkbayErrorOptions) {
    super('unauthenticated', message, options);
  }
}

export class ResourceExhaustedError extends WorkbayError {
  static readonly errorCode = 'resource-exhausted';
  constructor(message: string, options?: WorkbayErrorOptions) {
    super('resource-exhausted', message, options);
  }
}

export class UnavailableError extends WorkbayError {
  static readonly errorCode = 'unavailable';
  constructor(message: string, options?: WorkbayErrorOptions) {
    super('unavailable', message, options);
  }
}

export class DeadlineExceededError extends WorkbayError {
  static readonly errorCode = 'deadline-exceeded';
  constructor(message: string, options?: WorkbayErrorOptions) {
    super('deadline-exceeded', message, options);
  }
}

export class AbortedError extends WorkbayError {
  static readonly errorCode = 'aborted';
  constructor(message: string, options?: WorkbayErrorOptions) {
    super('aborted', message, options);
  }
}

export class InternalError extends WorkbayError {
  static readonly errorCode = 'internal';
  constructor(message: string, options?: WorkbayErrorOptions) {
    super('internal', message, options);
  }
}

export class UnimplementedError extends WorkbayError {
  static readonly errorCode = 'unimplemented';
  constructor(message: string, options?: WorkbayErrorOptions) {
    super('unimplemented', message, options);
  }
}

export class CancelledError extends WorkbayError {
  static readonly errorCode = 'cancelled';
  constructor(message: string, options?: WorkbayErrorOptions) {
    super('cancelled', message, options);
  }
}

const errorNames: Readonly<Record<WorkbayErrorCode, string>> = {
  'invalid-argument': 'InvalidArgumentError',
  'not-found': 'NotFoundError',
  'already-exists': 'AlreadyExistsError',
  'failed-precondition': 'FailedPreconditionError',
  'permission-denied': 'PermissionDeniedError',
  unauthenticated: 'UnauthenticatedError',
  'resource-exhausted': 'ResourceExhaustedError',
  unavailable: 'UnavailableError',
  'deadline-exceeded': 'DeadlineExceededError',
  aborted: 'AbortedError',
  internal: 'InternalError',
  unimplemented: 'UnimplementedError',
  cancelled: 'CancelledError',
};

/** The error class for each code (not for `invalid-argument`, whose constructor also takes a field). */
const simpleErrorClasses: Readonly<
  Record<
    Exclude<WorkbayErrorCode, 'invalid-argument'>,
    new (message: string, options?: WorkbayErrorOptions) => WorkbayError
  >
> = {
  'not-found': NotFoundError,
  'already-exists': AlreadyExistsError,
  'failed-precondition': FailedPreconditionError,
  'permission-denied': PermissionDeniedError,
  unauthenticated: UnauthenticatedError,
  'resource-exhausted': ResourceExhaustedError,
  unavailable: UnavailableError,
  'deadline-exceeded': DeadlineExceededError,
  aborted: AbortedError,
  internal: InternalError,
  unimplemented: UnimplementedError,
  cancelled: CancelledError,
};

/**
 * Creates the subclass that belongs to `code`. For `invalid-argument`, `field` names the input (default: none).
 */
export function createWorkbayError(
  code: WorkbayErrorCode,
  message: string,
  options?: WorkbayErrorOptions & { readonly field?: string },
): WorkbayError {
  if (code === 'invalid-argument') return new InvalidArgumentError(options?.field ?? '', message, options);
  return new simpleErrorClasses[code](message, options);
}

/** True for a Workbay error from any copy of this package; with `code`, only for that code. */
export function isWorkbayError(value: unknown, code?: WorkbayErrorCode): value is WorkbayError {
  if (typeof value !== 'object' || value === null) return false;
  if ((value as { [brand]?: unknown })[brand] !== true) return false;
  return code === undefined || (value as { code?: unknown }).code === code;
}

/** True for errors that are worth retrying after a delay: unavailable, aborted, resource-exhausted. */
export function isRetryableError(value: unknown): boolean {
  return (
    isWorkbayError(value, 'unavailable') ||
    isWorkbayError(value, 'aborted') ||
    isWorkbayError(value, 'resource-exhausted')
  );
}

const toGrpcCode: Readonly<Record<WorkbayErrorCode, status>> = {
  'invalid-argument': status.INVALID_ARGUMENT,
  'not-found': status.NOT_FOUND,
  'already-exists': status.ALREADY_EXISTS,
  'failed-precondition': status.FAILED_PRECONDITION,
  'permission-denied': status.PERMISSION_DENIED,
  unauthenticated: status.UNAUTHENTICATED,
  'resource-exhausted': status.RESOURCE_EXHAUSTED,
  unavailable: status.UNAVAILABLE,
  'deadline-exceeded': status.DEADLINE_EXCEEDED,
  aborted: status.ABORTED,
  internal: status.INTERNAL,
  unimplemented: status.UNIMPLEMENTED,
  cancelled: status.CANCELLED,
};

const fromGrpcCode: Readonly<Record<Exclude<status, status.OK>, WorkbayErrorCode>> = {
  [status.CANCELLED]: 'cancelled',
  [status.UNKNOWN]: 'internal',
  [status.INVALID_ARGUMENT]: 'invalid-argument',
  [status.DEADLINE_EXCEEDED]: 'deadline-exceeded',
  [status.NOT_FOUND]: 'not-found',
  [status.ALREADY_EXISTS]: 'already-exists',
  [status.PERMISSION_DENIED]: 'permission-denied',
  [status.RESOURCE_EXHAUSTED]: 'resource-exhausted',
  [status.FAILED_PRECONDITION]: 'failed-precondition',
  [status.ABORTED]: 'aborted',
  [status.OUT_OF_RANGE]: 'invalid-argument',
  [status.UNIMPLEMENTED]: 'unimplemented',
  [status.INTERNAL]: 'internal',
  [status.UNAVAILABLE]: 'unavailable',
  [status.DATA_LOSS]: 'internal',
  [status.UNAUTHENTICATED]: 'unauthenticated',
};

/** The gRPC status code for a domain code. */
export function grpcCodeOf(code: WorkbayErrorCode): status {
  return toGrpcCode[code];
}

/** The domain code for a gRPC status code (OK and unknown numbers map to `internal`). */
export function workbayCodeOf(code: number): WorkbayErrorCode {
  return (fromGrpcCode as Record<number, WorkbayErrorCode | undefined>)[code] ?? 'internal';
}

/** What a gRPC server sends for a failed call: the status code, its message and trailing metadata. */
export interface GrpcStatus {
  readonly code: status;
  readonly details: string;
  readonly metadata?: Metadata;
}

/** The shape grpc-js gives a client for a failed call (`ServiceError`), loosely typed. */
interface GrpcErrorLike {
  readonly code: number;
  readonly details?: string;
  readonly message?: string;
  readonly metadata?: Metadata;
}

function isGrpcErrorLike(value: unknown): value is GrpcErrorLike {
  if (typeof value !== 'object' || value === null) return false;
  const code = (value as { code?: unknown }).code;
  return typeof code === 'number' && Number.isInteger(code) && code > status.OK && code <= status.UNAUTHENTICATED;
}

function errorName(value: unknown): string | undefined {
  return typeof value === 'object' && value !== null && typeof (value as { name?: unknown }).name === 'string'
    ? (value as { name: string }).name
    : undefined;
}

/**
 * Turns anything a server handler threw into the status to answer with.
 * - Workbay errors keep their code and message; the domain code (and field) go into metadata.
 * - A gRPC error from a downstream call (code + details) is passed on with its code.
 * - `AbortError` becomes CANCELLED and `TimeoutError` DEADLINE_EXCEEDED.
 * - Everything else becomes INTERNAL with the generic message {@link internalErrorMessage}.
 */
export function toGrpcStatus(error: unknown): GrpcStatus {
  const metadata = new Metadata();
  if (isWorkbayError(error)) {
    metadata.set(errorMetadataKeys.code, error.code);
    if (error instanceof InvalidArgumentError) metadata.set(errorMetadataKeys.field, metadataSafe(error.field));
    return { code: toGrpcCode[error.code], details: error.message, metadata };
  }
  if (isGrpcErrorLike(error)) {
    const details = error.details ?? error.message ?? '';
    return { code: error.code as status, details, metadata };
  }
  const name = errorName(error);
  if (name === 'AbortError') return { code: status.CANCELLED, details: 'cancelled', metadata };
  if (name === 'TimeoutError') return { code: status.DEADLINE_EXCEEDED, details: 'deadline exceeded', metadata };
  return { code: status.INTERNAL, details: internalErrorMessage, metadata };
}

/**
 * A value grpc-js accepts in ASCII metadata (printable ASCII only; it throws on anything else), bounded in size:
 * a field name built from client input (an annotation key) must never make the status mapping itself fail.
 */
function metadataSafe(value: string): string {
  const escaped = value
    .slice(0, 256)
    .replace(/[^\x20-\x7e]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
  return escaped.length > 256 ? escaped.slice(0, 256) : escaped;
}

function metadataString(metadata: Metadata | undefined, key: string): string | undefined {
  const value = metadata?.get(key)[0];
  return typeof value === 'string' && value.length > 0 ? value : undefined;
}

/**
 * Turns a failed client call (grpc-js `ServiceError`) into the matching Workbay error, with the original as
 * `cause`. A Workbay error is returned unchanged; any other value becomes an {@link InternalError}.
 */
export function fromGrpcError(error: unknown): WorkbayError {
  if (isWorkbayError(error)) return error;
  if (!isGrpcErrorLike(error)) {
    const name = errorName(error);
    if (name === 'AbortError') return new CancelledError('cancelled', { cause: error });
    if (name === 'TimeoutError') return new DeadlineExceededError('deadline exceeded', { cause: error });
    const message = error instanceof Error ? error.message : String(error);
    return new InternalError(message, { cause: error });
  }
  const sent = metadataString(error.metadata, errorMetadataKeys.code);
  const code =
    sent !== undefined && (workbayErrorCodes as readonly string[]).includes(sent)
      ? (sent as WorkbayErrorCode)
      : workbayCodeOf(error.code);
  const details = error.details ?? error.message ?? '';
  if (code === 'invalid-argument') {
    const field = metadataString(error.metadata, errorMetadataKeys.field) ?? '';
    const reason = field !== '' && details.startsWith(`${field}: `) ? details.slice(field.length + 2) : details;
    return new InvalidArgumentError(field, reason, { cause: error });
  }
  return createWorkbayError(code, details, { cause: error });
}
