// How deep content may nest directories before the walk (backups, snapshots) refuses it (red team, round 5).
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isWorkbayError } from '@workbay/api';
import { BackupStore } from '../backup/backup-store.js';
import { FsRemoteStorage } from '../storage/fs-storage.js';
import { errorOf } from '../test-support/outcomes.js';
import { maxTreeDepth, walkTreeSync } from './tree.js';

/** `levels` nested directories below `root`, one call per level (paths stay short: `d/d/d/…`). */
async function nest(root: string, levels: number): Promise<void> {
  let dir = root;
  for (let i = 0; i < levels; i++) {
    dir = join(dir, 'd');
    await mkdir(dir);
  }
}

describe('tree depth', () => {
  let base: string;
  beforeAll(async () => {
    base = await mkdtemp(join(tmpdir(), 'workbay-tree-depth-'));
  });
  afterAll(async () => {
    await rm(base, { recursive: true, force: true });
  });

  it(`walks ${maxTreeDepth} nested directories, and refuses one more with FAILED_PRECONDITION naming the depth`, async () => {
    const deep = join(base, 'deep');
    await mkdir(deep);
    await nest(deep, maxTreeDepth);
    expect([...walkTreeSync(deep)].length).toBe(maxTreeDepth);
    const deeper = join(base, 'deeper');
    await mkdir(deeper);
    await nest(deeper, maxTreeDepth + 1);
    let caught: unknown;
    try {
      for (const item of walkTreeSync(deeper)) void item;
    } catch (error) {
      caught = error;
    }
    expect(isWorkbayError(caught, 'failed-precondition')).toBe(true);
    expect(String((caught as Error).message)).toMatch(/more than 1024 deep/);
  });

  it('fails a backup of such content at once, and it is not a stack overflow', async () => {
    const content = join(base, 'content');
    await mkdir(content);
    await nest(content, maxTreeDepth + 5);
    const store = new BackupStore(
      new FsRemoteStorage({ root: join(base, 'storage') }),
      { mode: 'per-owner' },
      { format: 'chunked' },
    );
    const error = await errorOf(store.backup(content, { owner: 'o', workspaceId: 'deep' }));
    expect(isWorkbayError(error, 'failed-precondition')).toBe(true);
  });
});
