import { Metadata, status } from '@grpc/grpc-js';
import { describe, expect, it } from 'vitest';
import {
  AbortedError,
  AlreadyExistsError,
  CancelledError,
  DeadlineExceededError,
  FailedPreconditionError,
  InternalError,
  InvalidArgumentError,
  NotFoundError,
  PermissionDeniedError,
  ResourceExhaustedError,
  UnauthenticatedError,
  UnavailableError,
  UnimplementedError,
  WorkbayError,
  createWorkbayError,
  errorMetadataKeys,
  fromGrpcError,
  grpcCodeOf,
  internalErrorMessage,
  isRetryableError,
  isWorkbayError,
  toGrpcStatus,
  workbayCodeOf,
  workbayErrorCodes,
} from './errors.js';
import type { WorkbayErrorCode } from './errors.js';

const classes = {
  'invalid-argument': InvalidArgumentError,
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
} satisfies Record<WorkbayErrorCode, unknown>;

/** What a grpc-js client sees for a status sent by toGrpcStatus. */
function asServiceError(
  sent: ReturnType<typeof toGrpcStatus>,
): Error & { code: number; details: string; metadata: Metadata } {
  return Object.assign(new Error(`${sent.code} ${status[sent.code]}: ${sent.details}`), {
    code: sent.code,
    details: sent.details,
    metadata: sent.metadata ?? new Metadata(),
  });
}

describe('WorkbayError classes', () => {
  it('has one class per code, each with its name, code and cause', () => {
    expect(Object.keys(classes).sort()).toEqual([...workbayErrorCodes].sort());
    for (const code of workbayErrorCodes) {
      const cause = new Error('root cause');
      const error = createWorkbayError(code, 'something happened', { cause, field: 'spec.id' });
      expect(error).toBeInstanceOf(classes[code]);
      expect(error).toBeInstanceOf(WorkbayError);
      expect(error).toBeInstanceOf(Error);
      expect(error.code).toBe(code);
      expect(error.name).toBe(classes[code].name);
      expect(error.cause).toBe(cause);
      expect(isWorkbayError(error)).toBe(true);
      expect(isWorkbayError(error, code)).toBe(true);
    }
  });

  it('InvalidArgumentError names the field', () => {
    const error = new InvalidArgumentError('spec.timeout', 'must be positive');
    expect(error.field).toBe('spec.timeout');
    expect(error.reason).toBe('must be positive');
    expect(error.message).toBe('spec.timeout: must be positive');
  });

  it('instanceof distinguishes the subclasses', () => {
    const error = new NotFoundError('gone');
    expect(error).toBeInstanceOf(NotFoundError);
    expect(error).not.toBeInstanceOf(AlreadyExistsError);
    expect(isWorkbayError(error, 'already-exists')).toBe(false);
    expect(new Error('plain')).not.toBeInstanceOf(WorkbayError);
  });

  it('recognises errors from another copy of the package by their brand', () => {
    // What a second copy of @workbay/api would create: a different class, the same Symbol.for brand.
    const foreign = Object.assign(new Error('workspace ws-1 not found'), { code: 'not-found', name: 'NotFoundError' });
    Object.defineProperty(foreign, Symbol.for('workbay.error'), { value: true });
    expect(isWorkbayError(foreign)).toBe(true);
    expect(foreign).toBeInstanceOf(NotFoundError);
    expect(foreign).toBeInstanceOf(WorkbayError);
    expect(foreign).not.toBeInstanceOf(AbortedError);

    const lookalike = Object.assign(new Error('x'), { code: 'not-found', name: 'NotFoundError' });
    expect(isWorkbayError(lookalike)).toBe(false);
    expect(lookalike).not.toBeInstanceOf(NotFoundError);
  });

  it('classifies retryable errors', () => {
    expect(isRetryableError(new UnavailableError('down'))).toBe(true);
    expect(isRetryableError(new AbortedError('conflict'))).toBe(true);
    expect(isRetryableError(new ResourceExhaustedError('quota'))).toBe(true);
    expect(isRetryableError(new NotFoundError('gone'))).toBe(false);
    expect(isRetryableError(new Error('plain'))).toBe(false);
  });
});

describe('gRPC status mapping', () => {
  it('round-trips every code through toGrpcStatus and fromGrpcError', () => {
    for (const code of workbayErrorCodes) {
      const original = createWorkbayError(code, 'the message', { field: 'metadata.owner' });
      const sent = toGrpcStatus(original);
      expect(sent.code).toBe(grpcCodeOf(code));
      expect(sent.metadata?.get(errorMetadataKeys.code)).toEqual([code]);
      const received = fromGrpcError(asServiceError(sent));
      expect(received).toBeInstanceOf(classes[code]);
      expect(received.message).toBe(original.message);
      expect(received.cause).toBeInstanceOf(Error);
    }
  });

  it('keeps the field of an invalid argument across the wire', () => {
    const sent = toGrpcStatus(new InvalidArgumentError('spec.timeout', "invalid duration 'x'"));
    expect(sent.code).toBe(status.INVALID_ARGUMENT);
    expect(sent.details).toBe("spec.timeout: invalid duration 'x'");
    const received = fromGrpcError(asServiceError(sent));
    expect(received).toBeInstanceOf(InvalidArgumentError);
    expect((received as InvalidArgumentError).field).toBe('spec.timeout');
    expect((received as InvalidArgumentError).reason).toBe("invalid duration 'x'");
  });

  it('answers unknown errors with INTERNAL and a generic message', () => {
    const sent = toGrpcStatus(new Error('ENOENT: /var/lib/workbay/secret-path'));
    expect(sent).toMatchObject({ code: status.INTERNAL, details: internalErrorMessage });
    expect(sent.details).not.toContain('secret');
    expect(toGrpcStatus('a string').code).toBe(status.INTERNAL);
    expect(toGrpcStatus(undefined).code).toBe(status.INTERNAL);
  });

  it('maps AbortError and TimeoutError', () => {
    expect(toGrpcStatus(new DOMException('aborted', 'AbortError')).code).toBe(status.CANCELLED);
    expect(toGrpcStatus(new DOMException('timed out', 'TimeoutError')).code).toBe(status.DEADLINE_EXCEEDED);
    expect(fromGrpcError(new DOMException('aborted', 'AbortError'))).toBeInstanceOf(CancelledError);
    expect(fromGrpcError(new DOMException('timed out', 'TimeoutError'))).toBeInstanceOf(DeadlineExceededError);
  });

  it('passes on the code of a downstream gRPC error', () => {
    const downstream = Object.assign(new Error('5 NOT_FOUND: no such object'), {
      code: status.NOT_FOUND,
      details: 'no such object',
    });
    expect(toGrpcStatus(downstream)).toMatchObject({ code: status.NOT_FOUND, details: 'no such object' });
  });

  it('maps gRPC codes from servers that send no Workbay metadata', () => {
    const cases: [status, WorkbayErrorCode][] = [
      [status.CANCELLED, 'cancelled'],
      [status.UNKNOWN, 'internal'],
      [status.INVALID_ARGUMENT, 'invalid-argument'],
      [status.DEADLINE_EXCEEDED, 'deadline-exceeded'],
      [status.NOT_FOUND, 'not-found'],
      [status.ALREADY_EXISTS, 'already-exists'],
      [status.PERMISSION_DENIED, 'permission-denied'],
      [status.RESOURCE_EXHAUSTED, 'resource-exhausted'],
      [status.FAILED_PRECONDITION, 'failed-precondition'],
      [status.ABORTED, 'aborted'],
      [status.OUT_OF_RANGE, 'invalid-argument'],
      [status.UNIMPLEMENTED, 'unimplemented'],
      [status.INTERNAL, 'internal'],
      [status.UNAVAILABLE, 'unavailable'],
      [status.DATA_LOSS, 'internal'],
      [status.UNAUTHENTICATED, 'unauthenticated'],
    ];
    for (const [grpcCode, code] of cases) {
      expect(workbayCodeOf(grpcCode)).toBe(code);
      const error = fromGrpcError(Object.assign(new Error('x'), { code: grpcCode, details: 'from upstream' }));
      expect(error.code).toBe(code);
      expect(error.message).toBe('from upstream');
    }
    expect(workbayCodeOf(99)).toBe('internal');
  });

  it('wraps non-gRPC failures as InternalError and returns Workbay errors unchanged', () => {
    const plain = new Error('socket hang up');
    const wrapped = fromGrpcError(plain);
    expect(wrapped).toBeInstanceOf(InternalError);
    expect(wrapped.cause).toBe(plain);
    const domain = new NotFoundError('gone');
    expect(fromGrpcError(domain)).toBe(domain);
  });
});

describe('error class brands', () => {
  class GitLikeError extends InternalError {
    constructor(readonly stderr: string) {
      super(`git failed: ${stderr}`);
    }
  }

  it('a subclass is not matched by every error of its parent code', () => {
    const plain = new InternalError('disk on fire');
    expect(plain).not.toBeInstanceOf(GitLikeError);
    const git = new GitLikeError('fatal');
    expect(git).toBeInstanceOf(GitLikeError);
    expect(git).toBeInstanceOf(InternalError);
    expect(git).toBeInstanceOf(WorkbayError);
    expect(git).not.toBeInstanceOf(NotFoundError);
    expect(isRetryableError(plain)).toBe(false);
  });

  it('subclasses keep their own name, and may set another', () => {
    expect(new GitLikeError('x').name).toBe('GitLikeError');
    class Renamed extends NotFoundError {
      constructor() {
        super('gone');
        this.name = 'SomethingElse';
      }
    }
    expect(new Renamed().name).toBe('SomethingElse');
    expect(new WorkbayError('not-found', 'x').name).toBe('NotFoundError');
  });

  it('matches by class brand across copies of the package', () => {
    // A second copy's GitLikeError: a different class object with the same brands.
    const foreign = Object.assign(new Error('git failed'), { code: 'internal', name: 'GitLikeError' });
    Object.defineProperty(foreign, Symbol.for('workbay.error'), { value: true });
    Object.defineProperty(foreign, Symbol.for('workbay.error.classes'), {
      value: [
        'workbay.error.class.GitLikeError',
        'workbay.error.class.InternalError',
        'workbay.error.class.WorkbayError',
      ],
    });
    expect(foreign).toBeInstanceOf(GitLikeError);
    expect(foreign).toBeInstanceOf(InternalError);
    expect(foreign).not.toBeInstanceOf(NotFoundError);
    // Another copy's plain internal error is not a GitLikeError.
    const otherInternal = Object.assign(new Error('x'), { code: 'internal' });
    Object.defineProperty(otherInternal, Symbol.for('workbay.error'), { value: true });
    Object.defineProperty(otherInternal, Symbol.for('workbay.error.classes'), {
      value: ['workbay.error.class.InternalError', 'workbay.error.class.WorkbayError'],
    });
    expect(otherInternal).not.toBeInstanceOf(GitLikeError);
    expect(otherInternal).toBeInstanceOf(InternalError);
  });
});

describe('toGrpcStatus with hostile field names', () => {
  it('a field built from client input (unicode, control characters, huge) never makes the mapping throw', () => {
    const field = `metadata.annotations['\u202e\uffff\u2f5d\n${'k'.repeat(10_000)}']`;
    const sent = toGrpcStatus(new InvalidArgumentError(field, 'is too long'));
    const value = sent.metadata?.get(errorMetadataKeys.field)[0] as string;
    expect(value).toMatch(/^[\x20-\x7e]{1,256}$/);
    expect(value.startsWith("metadata.annotations['\\u202e\\uffff\\u2f5d\\u000a")).toBe(true);
    expect(sent.code).toBe(grpcCodeOf('invalid-argument'));
  });
});
