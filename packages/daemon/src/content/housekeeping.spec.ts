/**
 * Housekeeping failures reach the log or the caller (issue 9): a working area that cannot be listed is an error,
 * not an empty area, and a tombstone that cannot be removed is logged without stopping the others.
 */
import { access, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { PluginLogger } from '@workbay/api';
import type { DaemonMetrics } from '../health/metrics.js';
import type { HostOps } from '../host-ops/host-ops.js';
import { SessionStore } from '../session/session-store.js';
import { housekeeping } from './housekeeping.js';

describe('housekeeping failures', () => {
  let dir: string;
  const warnings: Array<Record<string, unknown>> = [];
  const logger = {
    info: () => undefined,
    debug: () => undefined,
    error: () => undefined,
    warn: (fields: Record<string, unknown>) => warnings.push(fields),
  } as unknown as PluginLogger;
  const metrics = { housekeepingRemoved: { inc: () => undefined } } as unknown as DaemonMetrics;
  const hostOps = { isMountPoint: async () => false } as unknown as HostOps;
  const run = (workingArea: string) =>
    housekeeping(
      {
        workingArea,
        isRegistered: () => false,
        store: new SessionStore(workingArea),
        hostOps,
        metrics,
        logger,
        orphanAgeMs: 1000,
        tombstoneTtlMs: 1000,
      },
      Date.now() + 365 * 24 * 3600 * 1000,
    );

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'workbay-housekeeping-'));
    warnings.length = 0;
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('treats a missing working area as empty', async () => {
    await expect(run(join(dir, 'missing'))).resolves.toEqual({ removed: [] });
  });

  it('rejects when the working area cannot be listed', async () => {
    const file = join(dir, 'not-a-directory');
    await writeFile(file, '');
    await expect(run(file)).rejects.toMatchObject({ code: 'ENOTDIR' });
  });

  it('logs a tombstone it cannot remove and still removes the others', async () => {
    const store = new SessionStore(dir);
    await mkdir(store.tombstonePath('stuck'));
    await writeFile(join(store.tombstonePath('stuck'), 'keep'), '');
    await writeFile(store.tombstonePath('gone'), '{}');
    await run(dir);
    await expect(access(store.tombstonePath('gone'))).rejects.toMatchObject({ code: 'ENOENT' });
    expect(warnings).toEqual([expect.objectContaining({ instanceId: 'stuck' })]);
  });
});
