import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  DEFAULT_MAX_WORKSPACE_LINKS,
  MIN_FLOWS_PER_WORKSPACE,
  readConntrackMax,
  sharedFlowLimit,
  splitFlowBudget,
  WORKSPACE_CLOSED_FLOW_SECONDS,
  WORKSPACE_FLOW_SHARE,
} from './flow-share.js';

describe('sharedFlowLimit', () => {
  it('keeps the configured limit while the most links the node takes fit their share of the table', () => {
    expect(sharedFlowLimit(4096, 262_144, 1)).toBe(4096);
    expect(sharedFlowLimit(4096, 262_144, 48)).toBe(4096);
  });

  it('divides the share by the most links the node takes, so that together they stay within it (red team rounds 14, 15)', () => {
    // 64 workspaces at 4,096 filled a 262,144-entry table; now they hold three quarters of it at most.
    const limit = sharedFlowLimit(4096, 262_144, DEFAULT_MAX_WORKSPACE_LINKS);
    expect(limit).toBe(3072);
    expect(limit * DEFAULT_MAX_WORKSPACE_LINKS).toBeLessThanOrEqual(262_144 * WORKSPACE_FLOW_SHARE);
    expect(sharedFlowLimit(4096, 262_144, 500) * 500).toBeLessThanOrEqual(262_144 * WORKSPACE_FLOW_SHARE);
    // Round 15's table of 16,384 entries: 5 workspaces at 4,096, 3,072 and 2,457 filled it; 64 links now get 192 each.
    expect(
      sharedFlowLimit(4096, 16_384, DEFAULT_MAX_WORKSPACE_LINKS) * DEFAULT_MAX_WORKSPACE_LINKS,
    ).toBeLessThanOrEqual(16_384 * WORKSPACE_FLOW_SHARE);
    // Within the share however many links the node takes (a floor let 1,024 links take 65,536 of 16,384: round 15b).
    expect(sharedFlowLimit(4096, 16_384, 1024) * 1024).toBeLessThanOrEqual(16_384 * WORKSPACE_FLOW_SHARE);
    expect(sharedFlowLimit(4096, 16_384, 1024)).toBeLessThan(MIN_FLOWS_PER_WORKSPACE);
    expect(sharedFlowLimit(4096, 1000, 100_000)).toBe(1);
  });

  it('splits a share so that open flows and the closed ones they leave stay within it at the worst moment (round 15b, R1)', () => {
    for (const share of [1, 15, 64, 3072, 4096, 1_000_000]) {
      const { maxFlows, newFlowsPerSecond } = splitFlowBudget(share);
      expect(maxFlows).toBeGreaterThanOrEqual(1);
      expect(newFlowsPerSecond).toBeGreaterThanOrEqual(1);
      // Open ones, those open a timeout ago and closed since, and the new ones of that time plus a burst.
      if (share >= 15)
        expect(2 * maxFlows + (WORKSPACE_CLOSED_FLOW_SECONDS + 1) * newFlowsPerSecond).toBeLessThanOrEqual(share);
    }
    expect(splitFlowBudget(3072)).toEqual({ maxFlows: 1228, newFlowsPerSecond: 204 });
  });

  it('leaves the limit alone where the table size is unknown', () => {
    expect(sharedFlowLimit(4096, undefined, 1000)).toBe(4096);
    expect(sharedFlowLimit(4096, 0, 1000)).toBe(4096);
  });
});

describe('readConntrackMax', () => {
  it('reads a size, and says nothing for a missing or garbled file', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'wb-ct-'));
    try {
      await writeFile(path.join(dir, 'max'), '262144\n');
      await writeFile(path.join(dir, 'bad'), 'lots\n');
      expect(await readConntrackMax(path.join(dir, 'max'))).toBe(262_144);
      expect(await readConntrackMax(path.join(dir, 'bad'))).toBeUndefined();
      expect(await readConntrackMax(path.join(dir, 'missing'))).toBeUndefined();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
