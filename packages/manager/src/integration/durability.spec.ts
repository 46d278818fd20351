/**
 * Durable means durable: StartWorkspace answers OK only once the record is on disk, a failed persist fails the
 * call and leaves nothing behind, and records written while the disk is full reach it once there is space again.
 * Fault injection with a real tmpfs state directory (root only).
 */
import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isWorkbayError } from '@workbay/api';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startHarness, startRequest, waitForPhase } from '../test-support/harness.js';
import type { Harness } from '../test-support/harness.js';
import { mountSmallDisk, smallDiskSupported } from '../test-support/small-disk.js';
import type { SmallDisk } from '../test-support/small-disk.js';

describe.skipIf(!smallDiskSupported)('durable state (tmpfs state dir)', () => {
  let stateDir: string;
  // The record directory on its own tiny disk: nothing else (runtime state, logs) writes there.
  let disk: SmallDisk;
  let h: Harness;

  beforeAll(async () => {
    stateDir = await mkdtemp(join(tmpdir(), 'wb-durable-'));
    disk = await mountSmallDisk(256, join(stateDir, 'workspaces'));
    h = await startHarness({ config: { stateDir } });
  }, 60_000);

  afterAll(async () => {
    await h?.close();
    await disk?.close();
    await rm(stateDir, { recursive: true, force: true });
  });

  async function recordFiles(): Promise<string[]> {
    // Temp files of writes in flight (the start flow's next update) are not records.
    return (await readdir(disk.dir)).filter((n) => n.endsWith('.json')).sort();
  }

  it('a StartWorkspace whose record cannot be written fails and leaves nothing behind; with space it succeeds', async () => {
    await disk.fill();
    const request = startRequest();
    const failure = await h.client.startWorkspace(request).catch((error: unknown) => error);
    expect(isWorkbayError(failure, 'unavailable')).toBe(true);
    expect((failure as Error).message).toMatch(/cannot persist workspace .*ENOSPC/);
    expect((failure as Error).message).not.toContain(stateDir);
    expect(await recordFiles()).toEqual([]);
    const { status } = await h.client.getWorkspaces({});
    expect(status.map((s) => s.id)).not.toContain(request.id);
    expect(await h.running.runtime.inspect(request.id)).toBeUndefined();

    await disk.free();
    await h.client.startWorkspace(request);
    // Answered OK: the record file is already there.
    expect(await recordFiles()).toEqual([`${request.id}.json`]);
    await waitForPhase(h.client, request.id, 'running');
  });

  it('changes made while the disk refuses writes reach it once it accepts them again', async () => {
    const request = startRequest();
    await h.client.startWorkspace(request);
    await waitForPhase(h.client, request.id, 'running');
    // Read-only rather than full: a full tmpfs regains space whenever a rename replaces an older record.
    await disk.setReadOnly(true);
    await h.client.stopWorkspace({ id: request.id, policy: 0 });
    await waitForPhase(h.client, request.id, 'stopped');
    const file = join(disk.dir, `${request.id}.json`);
    const phaseOnDisk = async (): Promise<string> =>
      (JSON.parse(await readFile(file, 'utf8')) as { record: { phase: string } }).record.phase;
    expect(await phaseOnDisk()).not.toBe('stopped');
    await disk.setReadOnly(false);
    while ((await phaseOnDisk()) !== 'stopped') await new Promise((r) => setTimeout(r, 100));
  });
});
