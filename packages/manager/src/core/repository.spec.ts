import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { WorkspaceRecord } from '../domain/types.js';
import { createSilentLogger } from '../logger.js';
import { FileWorkspaceStore } from '../store/file-store.js';
import { makeRecord } from '../test-support/records.js';
import { FileWorkspaceRepository } from './repository.js';

describe('FileWorkspaceRepository', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'workbay-repo-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('keeps subscribers taken before load: the bus is never replaced, load only sets its starting version', async () => {
    const first = new FileWorkspaceRepository({
      store: new FileWorkspaceStore(dir),
      historySize: 10,
      logger: createSilentLogger(),
    });
    await first.load();
    await first.create(makeRecord({ id: 'ws-old', statusVersion: 0 }));
    await first.close();

    const repo = new FileWorkspaceRepository({
      store: new FileWorkspaceStore(dir),
      historySize: 10,
      logger: createSilentLogger(),
    });
    const early: WorkspaceRecord[] = [];
    repo.status$.subscribe((r) => early.push(r));
    const resumed: string[] = [];
    repo.updatesSince(0).subscribe((u) => resumed.push(u.kind));
    await repo.load();
    expect(repo.get('ws-old')).toBeDefined();
    const created = await repo.create(makeRecord({ id: 'ws-new', statusVersion: 0 }));
    // Above every version the previous process handed out.
    expect(created.statusVersion).toBeGreaterThan(repo.get('ws-old')!.statusVersion);
    expect(early.map((r) => r.id)).toEqual(['ws-new']);
    expect(resumed).toEqual(['update']);
    await repo.close();
  });
});
