/**
 * grpc-js answers a request it cannot decode (a message nested past protobufjs's limit, say) with INTERNAL, before
 * any handler runs. Bad input must get INVALID_ARGUMENT instead (invariant 7): decoding failures become a marked
 * request that the handler turns into that status.
 */
import type { ServiceDefinition } from '@grpc/grpc-js';
import { InvalidArgumentError } from '../errors.js';

const undecodable = Symbol('undecodable');

/** A request decoder that never throws: what it cannot decode comes back marked, with the reason. */
export function tolerantDecoder<T>(decode: (bytes: Buffer) => T): (bytes: Buffer) => T {
  return (bytes) => {
    try {
      return decode(bytes);
    } catch (error) {
      return { [undecodable]: error instanceof Error ? error.message : String(error) } as unknown as T;
    }
  };
}

/** The service definition with every request decoder made tolerant. */
export function withTolerantDecoding<D extends ServiceDefinition>(definition: D): D {
  return Object.fromEntries(
    Object.entries(definition).map(([name, method]) => [
      name,
      { ...method, requestDeserialize: tolerantDecoder(method.requestDeserialize) },
    ]),
  ) as D;
}

/** Throws INVALID_ARGUMENT for a request a tolerant decoder could not decode; returns it unchanged otherwise. */
export function assertDecoded<T>(request: T): T {
  if (request !== null && typeof request === 'object' && undecodable in request) {
    const why = String((request as { [undecodable]: unknown })[undecodable]).slice(0, 64);
    throw new InvalidArgumentError('request', `cannot be decoded (${why}); nested too deeply or malformed`);
  }
  return request;
}
