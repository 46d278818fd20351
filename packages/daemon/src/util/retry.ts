import { setTimeout as sleep } from 'node:timers/promises';

export interface BackoffOptions {
  /** Attempts in total, including the first (>= 1). Ignored when `maxElapsedMs` is set and still has time. */
  readonly attempts?: number;
  /** Give up once this much time has passed since the first attempt (checked before each retry). */
  readonly maxElapsedMs?: number;
  readonly initialDelayMs: number;
  readonly maxDelayMs?: number;
  readonly factor?: number;
  /** Return false for errors that retrying cannot fix (bad credentials, not found, ...). */
  readonly retryable?: (error: unknown) => boolean;
  readonly onRetry?: (error: unknown, attempt: number, delayMs: number) => void | Promise<void>;
  readonly signal?: AbortSignal;
}

/**
 * Runs `fn` until it succeeds, with exponential backoff between attempts. The last error is rethrown
 * unchanged so callers keep its class (and thus its gRPC status).
 */
export async function retryWithBackoff<T>(fn: (attempt: number) => Promise<T>, options: BackoffOptions): Promise<T> {
  const started = Date.now();
  const factor = options.factor ?? 2;
  const maxDelay = options.maxDelayMs ?? 30_000;
  let delay = options.initialDelayMs;
  for (let attempt = 1; ; attempt++) {
    options.signal?.throwIfAborted();
    try {
      return await fn(attempt);
    } catch (error) {
      if (options.retryable && !options.retryable(error)) throw error;
      const outOfAttempts =
        options.maxElapsedMs !== undefined
          ? Date.now() - started + delay > options.maxElapsedMs
          : attempt >= (options.attempts ?? 1);
      if (outOfAttempts) throw error;
      await options.onRetry?.(error, attempt, delay);
      await sleep(delay, undefined, { signal: options.signal });
      delay = Math.min(maxDelay, Math.round(delay * factor));
    }
  }
}
