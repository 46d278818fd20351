import { describe, expect, it } from 'vitest';
import {
  backupObjectName,
  locateOwner,
  parseQualifiedObject,
  qualifyObject,
  snapshotObjectName,
  unixNanoNow,
} from './storage-layout.js';

describe('storage layout', () => {
  it('puts each owner in a bucket of their own by default', () => {
    const location = locateOwner({ mode: 'per-owner' }, 'u-123');
    expect(location).toEqual({ bucket: 'workbay-user-u-123', prefix: '' });
    expect(backupObjectName(location, 'ws-1')).toBe('workspaces/ws-1/full.tar');
  });

  it('gives owners that differ only in case buckets of their own (red team round 12, O1)', () => {
    const perOwner = { mode: 'per-owner' } as const;
    const buckets = ['alice', 'ALICE', 'Alice', 'a_lice', 'h--x'].map((owner) => locateOwner(perOwner, owner).bucket);
    expect(buckets[0]).toBe('workbay-user-alice');
    expect(new Set(buckets).size).toBe(buckets.length);
    expect(buckets[1]).toMatch(/^workbay-user-h--[0-9a-f]{40}$/);
    // The same owner always gets the same bucket; a plain owner cannot name itself after a hashed one.
    expect(locateOwner(perOwner, 'ALICE').bucket).toBe(buckets[1]);
    expect(() => locateOwner(perOwner, buckets[1]!.slice('workbay-user-'.length))).not.toThrow();
    expect(locateOwner(perOwner, buckets[1]!.slice('workbay-user-'.length)).bucket).not.toBe(buckets[1]);
    // Owners too long for a bucket name of their own are hashed too, instead of refused.
    expect(locateOwner(perOwner, 'a'.repeat(100)).bucket).toMatch(/^workbay-user-h--[0-9a-f]{40}$/);
  });

  it('prefixes objects with the owner in a shared bucket', () => {
    const location = locateOwner({ mode: 'shared', bucket: 'workbay' }, 'u-123');
    expect(backupObjectName(location, 'ws-1')).toBe('u-123/workspaces/ws-1/full.tar');
    expect(snapshotObjectName(location, 'ws-1', 1700000000000000001n)).toBe(
      'u-123/workspaces/ws-1/snapshot-1700000000000000001.tar',
    );
  });

  it('refuses owners and workspace ids that would escape their prefix', () => {
    expect(() => locateOwner({ mode: 'per-owner' }, '../x')).toThrow(/owner/);
    expect(() => backupObjectName({ bucket: 'b', prefix: '' }, '../ws')).toThrow(/workspace id/);
  });

  it('round-trips qualified snapshot names and rejects malformed ones', () => {
    const qualified = qualifyObject('workbay-user-u', 'workspaces/ws/snapshot-1.tar');
    expect(qualified).toBe('workspaces/ws/snapshot-1.tar@workbay-user-u');
    expect(parseQualifiedObject(qualified)).toEqual({ bucket: 'workbay-user-u', name: 'workspaces/ws/snapshot-1.tar' });
    for (const bad of ['no-at-sign', 'a@b@c', '@bucket', 'object@']) {
      expect(() => parseQualifiedObject(bad)).toThrow(/<object>@<bucket>/);
    }
  });

  it('makes increasing nanosecond timestamps', () => {
    const a = unixNanoNow();
    expect(a > BigInt(Date.now() - 1000) * 1_000_000n).toBe(true);
  });
});
