import { describe, expect, it } from 'vitest';
import { XattrPolicy, maxRestoreXattrBytes, maxXattrsPerEntry } from './xattr-policy.js';

describe('XattrPolicy', () => {
  it('keeps ordinary attributes and refuses names setfattr could misread', () => {
    const policy = new XattrPolicy(false);
    const kept = policy.admit({
      'user.ok': Buffer.from('1'),
      'user.a\n# file: /etc/shadow': Buffer.from('x'),
      'security\\056capability': Buffer.from('x'),
      'user.a=b': Buffer.from('x'),
      'trusted.overlay.opaque': Buffer.from('y'),
      'system.posix_acl_access': Buffer.from('acl'),
    });
    expect(Object.keys(kept ?? {})).toEqual(['user.ok', 'system.posix_acl_access']);
    expect(policy.drops).toEqual({ capabilities: 0, names: 4, oversized: 0 });
  });

  it('bounds attributes per entry, and what a restore holds by names as well as values', () => {
    // Red-team round 2: empty values with long names were free under a budget of value bytes only.
    const policy = new XattrPolicy(false);
    const many = Object.fromEntries(Array.from({ length: 300 }, (_, i) => [`user.${i}`, Buffer.alloc(0)]));
    expect(Object.keys(policy.admit(many) ?? {})).toHaveLength(maxXattrsPerEntry);
    const longName = `user.${'n'.repeat(245)}`;
    let kept = 0;
    for (let i = 0; i * 310 < maxRestoreXattrBytes + 1_000_000; i++) {
      kept += Object.keys(policy.admit({ [longName]: Buffer.alloc(0) }) ?? {}).length;
    }
    expect(kept).toBeLessThan(maxRestoreXattrBytes / 250);
    expect(policy.drops.oversized).toBeGreaterThan(0);
  });
});
