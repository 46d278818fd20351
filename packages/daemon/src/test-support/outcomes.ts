/** TEST ONLY: small helpers for what a call or a path came to. */
import { access } from 'node:fs/promises';

/** Whether `path` exists (any type, links not followed past it). */
export const exists = (path: string): Promise<boolean> =>
  access(path).then(
    () => true,
    () => false,
  );

/** The error `promise` rejects with; fails the test when it fulfils. */
export async function errorOf(promise: Promise<unknown>): Promise<Error & { code?: string; field?: string }> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  if (!(error instanceof Error)) throw new Error('expected the call to fail');
  return error;
}
