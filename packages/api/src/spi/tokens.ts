import 'reflect-metadata';
import type { DependencyContainer } from 'tsyringe';

/**
 * A DI token that carries the type it resolves to. tsyringe's own tokens are bare strings or symbols,
 * so nothing stops `container.resolve('storage')` from returning the wrong thing; this wrapper does.
 */
export interface Token<T> {
  /** Namespaced id, e.g. `workbay.storageBackend`. */
  readonly id: string;
  /** The tsyringe key: `Symbol.for(id)`, so that duplicate copies of this package agree on it. */
  readonly key: symbol;
  /** Phantom: only the type checker reads it. */
  readonly __type?: T;
}

const tokenIdPattern = /^[a-z][a-zA-Z0-9]*(\.[a-z][a-zA-Z0-9-]*)+$/;

export function createToken<T>(id: string): Token<T> {
  if (!tokenIdPattern.test(id)) {
    throw new TypeError(`token id '${id}' must be namespaced like 'workbay.storageBackend'`);
  }
  const key = Symbol.for(id);
  return Object.freeze({ id, key, toString: () => `token{${id}}` });
}

export function registerValue<T>(container: DependencyContainer, token: Token<T>, value: T): void {
  container.register(token.key, { useValue: value });
}

export function resolveToken<T>(container: DependencyContainer, token: Token<T>): T {
  return container.resolve<T>(token.key);
}

/** All registrations of a multi-registered token (empty when none). */
export function resolveAllTokens<T>(container: DependencyContainer, token: Token<T>): T[] {
  return container.isRegistered(token.key, true) ? container.resolveAll<T>(token.key) : [];
}
