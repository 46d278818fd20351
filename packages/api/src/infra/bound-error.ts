/**
 * The bounding every error gets before it leaves a server (manager or daemon) as a gRPC status: messages and
 * fields built from input must never grow with the input (an oversized grpc-message trailer stalls the HTTP/2
 * connection it travels on), never carry credentials, and stay encodable by grpc-js.
 *
 * @module
 */
import { InvalidArgumentError } from '../errors.js';
import { redactText } from './logger.js';

const loneSurrogate = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g;

/** `text` with every lone UTF-16 surrogate replaced by U+FFFD. */
export function wellFormed(text: string): string {
  return text.replace(loneSurrogate, '\ufffd');
}

/**
 * Caps an error's message before it becomes a gRPC status: a message built from input must never grow with the
 * input (an oversized grpc-message trailer stalls the HTTP/2 connection it travels on).
 */
export function boundErrorMessage(error: unknown, limit?: number): unknown {
  if (!(error instanceof Error)) return error;
  // An invalid argument's message names the field and quotes at most a short prefix of the value.
  const max = limit ?? (error instanceof InvalidArgumentError ? 256 : 1024);
  // The field travels in gRPC metadata, where anything but printable ASCII makes grpc-js throw.
  const field = (error as { field?: unknown }).field;
  if (typeof field === 'string' && (field.length > 256 || /[^\x20-\x7e]/.test(field))) {
    try {
      Object.defineProperty(error, 'field', { value: field.replace(/[^\x20-\x7e]/g, '?').slice(0, 256) });
    } catch {
      // See below.
    }
  }
  // Quoted values ('…') longer than a short prefix are cut, whoever built the message; lone UTF-16 surrogates
  // (from input, or from a cut) become U+FFFD, since grpc-js's encodeURI of the details throws on them.
  const redacted = wellFormed(
    redactText(error.message).replace(/'([^']{65,})'/g, (_m, v: string) => `'${v.slice(0, 61)}...'`),
  );
  if (redacted !== error.message && redacted.length <= max) {
    try {
      error.message = redacted;
    } catch {
      // See below.
    }
  }
  if (error.message.length > max) {
    try {
      error.message = wellFormed(`${redacted.slice(0, max - 3)}...`);
    } catch {
      // A frozen error keeps its message; toGrpcStatus still sends it, but nothing of ours builds one.
    }
  }
  return error;
}
