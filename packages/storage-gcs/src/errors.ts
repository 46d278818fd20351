import {
  AlreadyExistsError,
  CancelledError,
  FailedPreconditionError,
  InvalidArgumentError,
  NotFoundError,
  PermissionDeniedError,
  UnauthenticatedError,
  UnavailableError,
  isNetworkUnreachableCode,
  isWorkbayError,
} from '@workbay/api';

/** What an operation was doing, for error messages. Never holds key material. */
export interface ErrorContext {
  readonly op: string;
  /** The JSON-API endpoint, e.g. `https://storage.googleapis.com`. */
  readonly endpoint: string;
  /** The service account, when one is configured. */
  readonly principal?: string;
  readonly bucket?: string;
  readonly name?: string;
}

/** The HTTP status of an ApiError (`code`) or GaxiosError (`status`, `response.status`). */
export function httpStatusOf(error: unknown): number | undefined {
  const e = error as { code?: unknown; status?: unknown; response?: { status?: unknown } } | null;
  for (const value of [e?.code, e?.status, e?.response?.status]) {
    if (typeof value === 'number' && value >= 100 && value < 600) return value;
  }
  return undefined;
}

function target(ctx: ErrorContext): string {
  if (ctx.bucket && ctx.name !== undefined) return `'${ctx.name}' in bucket '${ctx.bucket}'`;
  if (ctx.bucket) return `bucket '${ctx.bucket}'`;
  return 'the store';
}

/**
 * Turns an error from `@google-cloud/storage` (ApiError, GaxiosError, auth errors, Node network errors) into a
 * Workbay domain error naming the endpoint, principal, bucket and object as relevant; the original is kept as
 * `cause`. A 404 on an upload means the bucket is missing (objects need not exist to be written).
 */
export function toStorageError(error: unknown, ctx: ErrorContext): Error {
  if (isWorkbayError(error)) return error;
  const options = { cause: error };
  const detail = error instanceof Error ? error.message : String(error);
  const name = (error as { name?: unknown } | null)?.name;
  const code = (error as { code?: unknown } | null)?.code;
  const who = ctx.principal ? `service account '${ctx.principal}'` : 'the configured credentials';
  const at = `at ${ctx.endpoint}`;

  if (name === 'AbortError' || code === 'ABORT_ERR') {
    return new CancelledError(`${ctx.op} of ${target(ctx)} ${at} was cancelled`, options);
  }
  if (isNetworkUnreachableCode(code)) {
    return new UnavailableError(`cannot reach the object store ${ctx.endpoint} for ${ctx.op} (${code})`, options);
  }
  // google-auth-library failures to get a token: the key is wrong, revoked or for another project.
  if (/invalid_grant|invalid_client|unauthorized_client|Could not load the default credentials/i.test(detail)) {
    return new UnauthenticatedError(`${ctx.endpoint} refused ${who} (${ctx.op}): ${detail}`, options);
  }
  const status = httpStatusOf(error);
  switch (status) {
    case 400:
      return new InvalidArgumentError(ctx.name !== undefined ? 'name' : 'bucket', `${target(ctx)}: ${detail}`, options);
    case 401:
      return new UnauthenticatedError(`${ctx.endpoint} did not accept ${who} (${ctx.op} of ${target(ctx)})`, options);
    case 403:
      return new PermissionDeniedError(`${who} may not ${ctx.op} ${target(ctx)} ${at}`, options);
    case 404:
      if (ctx.op === 'upload' || ctx.name === undefined) {
        return new NotFoundError(`bucket '${ctx.bucket}' does not exist ${at}`, options);
      }
      return new NotFoundError(`object ${target(ctx)} not found ${at}`, options);
    case 409:
      return new AlreadyExistsError(`${target(ctx)} ${at} already exists`, options);
    case 412:
      return new FailedPreconditionError(`${ctx.op} of ${target(ctx)} ${at}: precondition failed`, options);
    case 408:
    case 429:
    case 500:
    case 502:
    case 503:
    case 504:
      return new UnavailableError(
        `${ctx.endpoint} could not serve ${ctx.op} of ${target(ctx)} right now (${status})`,
        options,
      );
  }
  return new Error(`${ctx.op} of ${target(ctx)} ${at} failed: ${detail}`, options);
}
