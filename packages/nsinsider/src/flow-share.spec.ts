import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { MIN_FLOWS_PER_WORKSPACE, readConntrackMax, sharedFlowLimit, WORKSPACE_FLOW_SHARE } from './flow-share.js';

describe('sharedFlowLimit', () => {
  it('keeps the configured limit while the workspaces fit their share of the table', () => {
    expect(sharedFlowLimit(4096, 262_144, 1)).toBe(4096);
    expect(sharedFlowLimit(4096, 262_144, 48)).toBe(4096);
  });

  it('shrinks it as workspaces come, so that together they stay within the share (red team round 14, F3)', () => {
    // 64 workspaces at 4,096 filled a 262,144-entry table; now they hold three quarters of it at most.
    const limit = sharedFlowLimit(4096, 262_144, 64);
    expect(limit).toBe(3072);
    expect(limit * 64).toBeLessThanOrEqual(262_144 * WORKSPACE_FLOW_SHARE);
    expect(sharedFlowLimit(4096, 262_144, 500) * 500).toBeLessThanOrEqual(262_144 * WORKSPACE_FLOW_SHARE);
    // Never below a floor an honest workspace needs.
    expect(sharedFlowLimit(4096, 262_144, 100_000)).toBe(MIN_FLOWS_PER_WORKSPACE);
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
