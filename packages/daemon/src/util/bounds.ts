/**
 * Size limits of what a request may carry into the daemon, and the one way an error message quotes input
 * (invariant 7: a message names the problem, stays small, and never grows with the input; an oversized
 * grpc-message trailer once stalled every call on its HTTP/2 connection).
 *
 * The limits match the manager's for the fields it passes through, so that anything the manager accepts the
 * daemon accepts too.
 */
import { InvalidArgumentError } from '../errors.js';

export const limits = {
  /** Instance ids, workspace (meta) ids and owners. */
  id: 128,
  /** Remote URIs, download URLs, OTS URLs. */
  url: 4096,
  /** `<object>@<bucket>` snapshot names. */
  snapshot: 1024,
  /** Checkout, target and file locations inside the content. */
  location: 1024,
  cloneTarget: 1024,
  digest: 256,
  username: 256,
  password: 4096,
  customConfig: { entries: 64, key: 256, value: 4096 },
  /** Children of one composite, git initializers of one prebuild. */
  children: 32,
  files: 1000,
  /** Composite nesting. */
  depth: 8,
  /** Initializers in one tree, all levels together. */
  nodes: 256,
  /** The whole gRPC message (grpc-js refuses larger ones with RESOURCE_EXHAUSTED before decoding). */
  messageBytes: 4 * 1024 * 1024,
} as const;

const quoteMax = 64;

/** A short, printable prefix of a value for an error message: `'abc...' (1048576 characters)`. */
export function quote(value: string, max = quoteMax): string {
  const head = value.length > max ? value.slice(0, max) : value;
  // eslint-disable-next-line no-control-regex -- control characters (C0, DEL, C1) are exactly what is replaced
  const printable = head.replace(/[\u0000-\u001f\u007f-\u009f]/g, '?');
  return value.length > max ? `'${printable}...' (${value.length} characters)` : `'${printable}'`;
}

/** Refuses a string longer than `max` (INVALID_ARGUMENT naming `field`, quoting nothing of it). */
export function checkLength(value: string, field: string, max: number): string {
  if (value.length > max)
    throw new InvalidArgumentError(field, `is too long (${value.length} characters; at most ${max})`);
  return value;
}

/** Refuses a list longer than `max`. */
export function checkCount(count: number, field: string, max: number): void {
  if (count > max) throw new InvalidArgumentError(field, `has too many elements (${count}; at most ${max})`);
}
