/**
 * Small async tools of the core: abortable sleep and retries of calls that fail with a retryable error (a
 * daemon restarting). The start slots use the shared `Semaphore` of `@workbay/api`.
 *
 * @module
 */
import { isRetryableError } from '@workbay/api';
import { redactText } from '../logger.js';

/** Thrown when an effect was aborted (by a stop, a forced stop or shutdown); never a workspace failure. */
export class FlowAborted extends Error {
  constructor() {
    super('flow aborted');
    this.name = 'FlowAborted';
  }
}

/** The message of a thrown value; it may become conditions.failed (persisted and shown): never with credentials. */
export function errorMessage(error: unknown): string {
  return redactText(error instanceof Error ? error.message : String(error));
}

export function checkAborted(signal: AbortSignal): void {
  if (signal.aborted) throw new FlowAborted();
}

export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(new FlowAborted());
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(new FlowAborted());
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

export interface RetryPolicy {
  readonly attempts: number;
  readonly backoffMs: number;
}

/** Calls `call` until it succeeds, fails with a non-retryable error, or the attempts are used up. */
export async function withRetries<T>(
  call: () => Promise<T>,
  policy: RetryPolicy,
  signal: AbortSignal,
  onRetry: (error: unknown, attempt: number) => void,
  retryable: (error: unknown) => boolean = isRetryableError,
): Promise<T> {
  let delay = policy.backoffMs;
  for (let attempt = 1; ; attempt += 1) {
    try {
      return await call();
    } catch (error) {
      if (signal.aborted || attempt >= policy.attempts || !retryable(error)) throw error;
      onRetry(error, attempt);
      await sleep(delay, signal);
      delay = Math.min(delay * 2, 30_000);
    }
  }
}
