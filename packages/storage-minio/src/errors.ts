import {
  AlreadyExistsError,
  CancelledError,
  InvalidArgumentError,
  NotFoundError,
  PermissionDeniedError,
  UnauthenticatedError,
  UnavailableError,
  isNetworkUnreachableCode,
  isWorkbayError,
} from '@workbay/api';

/** What an operation was doing, for error messages. Never holds the secret key. */
export interface ErrorContext {
  /** e.g. `upload`, `list`. */
  readonly op: string;
  readonly endpoint: string;
  readonly accessKey: string;
  readonly bucket?: string;
  readonly name?: string;
}

/** S3 error codes the server sends when it is overloaded or failing; worth a retry later. */
const unavailableCodes = new Set(['SlowDown', 'ServiceUnavailable', 'InternalError', 'XMinioServerNotInitialized']);

function target(ctx: ErrorContext): string {
  if (ctx.bucket && ctx.name !== undefined) return `'${ctx.name}' in bucket '${ctx.bucket}'`;
  if (ctx.bucket) return `bucket '${ctx.bucket}'`;
  return 'the store';
}

function codeOf(error: unknown): string | undefined {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : undefined;
}

/**
 * Turns an error from the minio client (S3 error codes, Node network errors, client-side validation) into a
 * Workbay domain error with a message naming the endpoint, access key, bucket and object as relevant. The
 * original is kept as `cause`. Anything unrecognised is wrapped in a plain Error with the same context.
 */
export function toStorageError(error: unknown, ctx: ErrorContext): Error {
  if (isWorkbayError(error)) return error;
  const code = codeOf(error);
  const name = (error as { name?: unknown } | null)?.name;
  const detail = error instanceof Error ? error.message : String(error);
  const options = { cause: error };
  const at = `at ${ctx.endpoint}`;

  if (name === 'AbortError' || code === 'ABORT_ERR') {
    return new CancelledError(`${ctx.op} of ${target(ctx)} ${at} was cancelled`, options);
  }
  switch (code) {
    case 'NoSuchBucket':
      return new NotFoundError(`bucket '${ctx.bucket}' does not exist ${at}`, options);
    case 'NoSuchKey':
    case 'NotFound':
      return new NotFoundError(`object ${target(ctx)} not found ${at}`, options);
    case 'InvalidAccessKeyId':
      return new UnauthenticatedError(
        `${ctx.endpoint} does not know access key '${ctx.accessKey}' (${ctx.op})`,
        options,
      );
    case 'SignatureDoesNotMatch':
      return new UnauthenticatedError(
        `${ctx.endpoint} rejected the signature of access key '${ctx.accessKey}': the secret key is wrong (${ctx.op})`,
        options,
      );
    case 'ExpiredToken':
    case 'InvalidToken':
    case 'TokenRefreshRequired':
      return new UnauthenticatedError(
        `${ctx.endpoint} rejected the session token of access key '${ctx.accessKey}' (${ctx.op})`,
        options,
      );
    case 'AccessDenied':
    case 'AllAccessDisabled':
      return new PermissionDeniedError(
        `access key '${ctx.accessKey}' may not ${ctx.op} ${target(ctx)} ${at} (or its secret key is wrong)`,
        options,
      );
    case 'BucketAlreadyExists':
      return new AlreadyExistsError(`bucket '${ctx.bucket}' ${at} already exists and belongs to someone else`, options);
    case 'InvalidBucketName':
      return new InvalidArgumentError('bucket', `'${ctx.bucket}' is not a valid bucket name`, options);
  }
  if (code === 'XAmzContentChecksumMismatch' || code === 'BadDigest') {
    // The bytes arrived other than they left (the store checked each PUT's checksum): nothing was stored,
    // and sending them again is the remedy.
    return new UnavailableError(
      `${ctx.endpoint} received other bytes than were sent for ${ctx.op} of ${target(ctx)} (${code}); nothing was stored`,
      options,
    );
  }
  if (code && unavailableCodes.has(code)) {
    return new UnavailableError(
      `${ctx.endpoint} could not serve ${ctx.op} of ${target(ctx)} right now (${code})`,
      options,
    );
  }
  if (isNetworkUnreachableCode(code)) {
    return new UnavailableError(`cannot reach the object store ${ctx.endpoint} for ${ctx.op} (${code})`, options);
  }
  // The minio client validates names itself before sending anything.
  if (name === 'InvalidBucketNameError') {
    return new InvalidArgumentError('bucket', `'${ctx.bucket}' is not a valid bucket name`, options);
  }
  if (name === 'InvalidObjectNameError') {
    return new InvalidArgumentError('name', `'${ctx.name}' is not a valid object name`, options);
  }
  return new Error(`${ctx.op} of ${target(ctx)} ${at} failed: ${detail}`, options);
}
