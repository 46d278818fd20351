/**
 * Progress of an initialization under way, as the daemon reports it (the `InitProgress` extension RPC): which
 * step retries, the attempt, and the last transient failure. The manager shows it in the workspace's status
 * message while the workspace is INITIALIZING, so that a start that keeps retrying a flaky git server says so
 * instead of sitting silent for minutes.
 *
 * The failure text reaches API clients: it is one line, bounded, and scrubbed of credentials here (URL user
 * info, credential-like query parameters, authorization values and well-known token shapes), whatever produced
 * it. The git layer already removes the spec's own secrets from git's stderr before it gets here.
 *
 * @module
 */
import { redactText } from '@workbay/api';

/** What a retrying initializer step last reported. */
export interface InitProgress {
  /** The step that reported: `git clone`, `download`, ... */
  readonly step: string;
  /** The attempt under way or about to start, from 1. */
  readonly attempt: number;
  /** The most attempts the step makes (an upper bound for time-bounded retries); 0 when unknown. */
  readonly maxAttempts: number;
  /** The last transient failure: one line, at most {@link maxErrorChars} characters, without credentials. */
  readonly lastError: string;
}

/** Where an initializer reports progress; the content service keeps the latest per workspace. */
export type InitProgressSink = (progress: InitProgress) => void;

export const maxErrorChars = 256;

/**
 * Token shapes of common forges and CI systems: they are credentials wherever they appear, even outside a URL
 * (a server may echo one back in its error text).
 */
const tokenShapes =
  /\b(?:gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}|glpat-[A-Za-z0-9_-]{20,}|xox[abprs]-[A-Za-z0-9-]{10,}|AKIA[0-9A-Z]{16})\b/g;

/** One line of failure text fit for a status message: credentials removed, control characters gone, bounded. */
export function progressErrorText(text: string): string {
  const line =
    text
      .split('\n')
      .map((l) => l.trim())
      .find((l) => l !== '') ?? '';
  // eslint-disable-next-line no-control-regex -- control characters are exactly what is removed here
  const clean = redactText(line.replace(/[\u0000-\u001f\u007f]/g, ' ')).replace(tokenShapes, '[redacted]');
  return clean.length > maxErrorChars ? `${clean.slice(0, maxErrorChars - 3)}...` : clean;
}

/**
 * The most attempts exponential backoff makes within `maxElapsedMs` when every attempt fails at once (slower
 * attempts make fewer): what "attempt n of m" says for time-bounded retries.
 */
export function maxAttemptsWithin(
  initialDelayMs: number,
  maxElapsedMs: number,
  factor = 2,
  maxDelayMs = 30_000,
): number {
  let attempts = 1;
  let elapsed = 0;
  let delay = Math.max(1, initialDelayMs);
  // Bounded: the delay grows to maxDelayMs, so the loop ends after at most maxElapsedMs / 1 ms rounds (far
  // fewer in practice); 10,000 caps it anyway for absurd settings.
  while (elapsed + delay <= maxElapsedMs && attempts < 10_000) {
    elapsed += delay;
    attempts += 1;
    delay = Math.min(maxDelayMs, Math.round(delay * factor));
  }
  return attempts;
}
