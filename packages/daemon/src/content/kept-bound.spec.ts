/**
 * Content a failed final backup keeps is bounded per owner (`backup.maxKeptPerOwner`), over real gRPC with the real
 * daemon and fs storage: a name that is not UTF-8 makes each final backup fail, the content stays, and past the
 * bound the owner's new workspaces are refused while other owners' start and the kept ones can still be resumed.
 * Once one of them is disposed after all, the owner starts again.
 */
import { writeFile, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { contentservice } from '@workbay/api';
import { startTestDaemon } from '../test-support/daemon-harness.js';
import type { TestDaemon } from '../test-support/daemon-harness.js';
import { exists, errorOf } from '../test-support/outcomes.js';

const empty: contentservice.WorkspaceInitializer = { spec: { $case: 'empty', value: {} } };
/** `caf\xe9.txt`: Latin-1, not UTF-8; no archive takes it. */
const unarchivable = Buffer.from('caf\xe9.txt', 'latin1');

describe('kept content is bounded per owner', () => {
  let t: TestDaemon;
  beforeAll(async () => {
    t = await startTestDaemon({ config: { backup: { maxKeptPerOwner: 2, attempts: 1 } } });
  });
  afterAll(async () => {
    await t.cleanup();
  });

  const init = (id: string, owner: string, metaId = `ws-${id}`): Promise<unknown> =>
    t.client.initWorkspace({ id, metadata: { owner, metaId }, initializer: empty });
  const badPath = (id: string): Buffer => Buffer.concat([Buffer.from(join(t.workingArea, id) + '/'), unarchivable]);

  /** Starts a workspace of `owner` whose final backup fails, and stops it: its content is kept. */
  const keep = async (id: string, owner: string): Promise<void> => {
    await init(id, owner);
    await writeFile(badPath(id), 'work');
    const failed = await errorOf(t.client.disposeWorkspace({ id, backup: true }));
    expect(failed.message).toMatch(/not valid UTF-8/);
    expect(await exists(join(t.workingArea, id))).toBe(true);
  };

  it("refuses the owner's new workspaces past the bound, not other owners' nor resuming a kept one", async () => {
    await keep('k-1', 'mallory');
    await keep('k-2', 'mallory');
    const refused = await errorOf(init('k-3', 'mallory'));
    expect(refused.code).toBe('resource-exhausted');
    expect(refused.message).toMatch(
      /owner 'mallory' has 2 workspaces on this node whose final backup failed \('k-1' of 'ws-k-1', 'k-2' of 'ws-k-2'\); resume one with its id/,
    );
    expect(await exists(join(t.workingArea, 'k-3'))).toBe(false);
    await init('a-1', 'alice');
    // Resuming kept content is how its owner gets it back (the manager takes ALREADY_EXISTS as its start under way).
    expect((await errorOf(init('k-1', 'mallory', 'ws-k-1'))).code).toBe('already-exists');
  });

  it('lets the owner start again once a kept workspace is disposed after all', async () => {
    await unlink(badPath('k-1'));
    await t.client.disposeWorkspace({ id: 'k-1', backup: true });
    expect(await exists(join(t.workingArea, 'k-1'))).toBe(false);
    await init('k-3', 'mallory');
    await t.client.disposeWorkspace({ id: 'k-3', backup: true });
  });
});
