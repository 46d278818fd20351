/**
 * DisposeWorkspace of a workspace restored from a backup returns the Git status of its working copy (issue 9):
 * the backup initializer's checkout location, and the working copies the restored content holds, are where the
 * disposal looks.
 */
import { chmod, mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestDaemon } from '../test-support/daemon-harness.js';
import type { TestDaemon } from '../test-support/daemon-harness.js';
import { createRepo, scratch } from '../test-support/git-server.js';
import type { TestRepo } from '../test-support/git-server.js';

describe('git status of a workspace restored from its backup', () => {
  let t: TestDaemon;
  let repos: Awaited<ReturnType<typeof scratch>>;
  let repo: TestRepo;

  beforeAll(async () => {
    repos = await scratch();
    repo = await createRepo(repos.path);
    const root = await mkdtemp(join(tmpdir(), 'workbay-dispose-status-'));
    await chmod(root, 0o755);
    t = await startTestDaemon({ root });
  });
  afterAll(async () => {
    await t.cleanup();
    await repos.cleanup();
  });

  it('is returned for a backup initializer with a checkout location', async () => {
    const metadata = { owner: 'carol', metaId: 'ws-status' };
    const first = await t.client.initWorkspace({
      id: 'status-1',
      metadata,
      initializer: { spec: { $case: 'git', value: { remoteUri: repo.url, checkoutLocation: 'repo' } } } as never,
    });
    await writeFile(join(first.contentLocation, 'repo/work-in-progress.txt'), 'wip\n');
    const disposed = await t.client.disposeWorkspace({ id: 'status-1', backup: true });
    expect(disposed.gitStatus?.untrackedFiles).toEqual(['work-in-progress.txt']);

    const second = await t.client.initWorkspace({
      id: 'status-2',
      metadata,
      initializer: { spec: { $case: 'backup', value: { checkoutLocation: 'repo', fromVolumeSnapshot: false } } },
    });
    expect(second.contentSource).toBe('from-backup');
    await writeFile(join(second.contentLocation, 'repo/after-restore.txt'), 'more\n');
    const again = await t.client.disposeWorkspace({ id: 'status-2', backup: false });
    expect(again.gitStatus).toMatchObject({ branch: 'main', totalUntrackedFiles: 2 });
    expect(again.gitStatus?.untrackedFiles.sort()).toEqual(['after-restore.txt', 'work-in-progress.txt']);
  });
});
