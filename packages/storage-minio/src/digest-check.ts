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
 * Hashes every chunk the stream pushes and holds back its end until the digest is known: a match ends the
 * stream as usual, a mismatch fails it with {@link DigestMismatchError} instead, so a reader never sees the
 * end of bytes that differ from `expected`. Works on any stream that delivers its bytes through `push`
 * (Node's HTTP responses do), without an extra stream hop.
 */
export function verifyWhileStreaming(stream: Readable, expected: string, what: string): void {
  const hash = createHash('sha256');
  const push = stream.push.bind(stream);
  stream.push = (chunk: unknown, encoding?: BufferEncoding): boolean => {
    if (chunk === null) {
      const actual = `sha256:${hash.digest('hex')}`;
      if (actual === expected) return push(null);
      stream.destroy(new DigestMismatchError(what, expected, actual));
      return false;
    }
    hash.update(chunk as Buffer);
    return push(chunk, encoding);
  };
}

/**
 * The same check for a stream that may already have pushed bytes (Node's HTTP client pushes the first body
 * bytes before the response reaches us): `source` piped through a hashing Transform, which costs a stream hop.
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
