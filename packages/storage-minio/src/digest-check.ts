import { createHash } from 'node:crypto';
import { type Readable, Transform } from 'node:stream';
import { InternalError } from '@workbay/api';

/** The bytes of a download do not hash to the digest recorded with the object. */
export class DigestMismatchError extends InternalError {
  constructor(
    what: string,
    readonly expected: string,
    readonly actual: string,
  ) {
    super(`${what}: digest mismatch (recorded ${expected}, the bytes hash to ${actual})`);
  }
}

/**
 * Checks a stream's bytes against `expected` as they pass: `source` piped through a hashing Transform that
 * fails with {@link DigestMismatchError} instead of ending on a mismatch. It costs a stream hop and hashes on
 * the event loop (a worker fed through shared memory measured slower: see the package README).
 */
export function verifyingPassThrough(source: Readable, expected: string, what: string): Readable {
  const hash = createHash('sha256');
  const check = new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      hash.update(chunk);
      callback(null, chunk);
    },
    flush(callback) {
      const actual = `sha256:${hash.digest('hex')}`;
      callback(actual === expected ? null : new DigestMismatchError(what, expected, actual));
    },
  });
  source.once('error', (error) => check.destroy(error));
  check.once('close', () => source.destroy());
  return source.pipe(check);
}
