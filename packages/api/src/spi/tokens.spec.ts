import 'reflect-metadata';
import { container } from 'tsyringe';
import { describe, expect, it } from 'vitest';
import { createToken, registerValue, resolveAllTokens, resolveToken } from './tokens.js';

describe('typed tokens', () => {
  it('resolves what was registered, typed', () => {
    const token = createToken<{ answer: number }>('workbay.test-answer');
    const child = container.createChildContainer();
    registerValue(child, token, { answer: 42 });
    expect(resolveToken(child, token).answer).toBe(42);
    expect(String(token)).toBe('token{workbay.test-answer}');
  });

  it('is the same key across copies (Symbol.for)', () => {
    expect(createToken('workbay.same').key).toBe(createToken('workbay.same').key);
  });

  it('collects multi-registrations and is empty when none', () => {
    const token = createToken<string>('workbay.test-multi');
    const child = container.createChildContainer();
    expect(resolveAllTokens(child, token)).toEqual([]);
    registerValue(child, token, 'a');
    registerValue(child, token, 'b');
    expect(resolveAllTokens(child, token)).toEqual(['a', 'b']);
  });

  it('requires namespaced ids', () => {
    expect(() => createToken('storage')).toThrow(/namespaced/);
  });
});
