/**
 * Content a failed final backup leaves on the node stays its workspace's (red team round 9, K1 and K3): another
 * owner's start with that instance id, once the manager has purged the stopped record, fails and disposes nothing.
 * Real manager and daemon over gRPC.
 */
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { contentservice, isWorkbayError, wsman } from '@workbay/api';
import { startTestGitServer } from '../test-support/git-http.js';
import { startHarness, startRequest, waitForPhase } from '../test-support/harness.js';
import type { Harness } from '../test-support/harness.js';

describe('content kept after a failed final backup', () => {
  let h: Harness;
  beforeAll(async () => {
    h = await startHarness({ config: { stoppedRetention: '1s', timeouts: { checkInterval: '200ms' } } });
  });
  afterAll(async () => {
    await h?.close();
  });

  it("is not handed to another owner's start with its instance id, nor disposed by it, once the record is purged", async () => {
    const mallory = startRequest({ owner: 'mallory' });
    const id = mallory.id;
    await h.client.startWorkspace(mallory);
    await waitForPhase(h.client, id, 'running');
    // A name no archive carries (not UTF-8): the final backup fails (FAILED_PRECONDITION, not retried) and the daemon
    // keeps the content, the only copy of this work.
    const content = join(h.dir, 'workspaces', id);
    const work = Buffer.concat([Buffer.from(`${content}/caf`), Buffer.from([0xe9]), Buffer.from('.txt')]);
    writeFileSync(work, 'work that has no backup');
    await h.client.stopWorkspace({ id, policy: wsman.StopWorkspacePolicy.NORMALLY });
    const stopped = await waitForPhase(h.client, id, 'stopped', 30_000);
    expect(stopped.conditions!.failed).toMatch(/not valid UTF-8/);

    // The manager forgets the stopped workspace after stoppedRetention.
    const deadline = Date.now() + 15_000;
    for (;;) {
      const error = await h.client.describeWorkspace({ id }).then(
        () => undefined,
        (e: unknown) => e,
      );
      if (isWorkbayError(error, 'not-found')) break;
      expect(Date.now(), 'the stopped record was not purged').toBeLessThan(deadline);
      await new Promise((r) => setTimeout(r, 100));
    }

    // eve's start with the same id: the daemon refuses the content, and the failed start disposes nothing.
    await h.client.startWorkspace(startRequest({ id, owner: 'eve', metaId: 'eve-1' }));
    const refused = await waitForPhase(h.client, id, 'stopped', 30_000);
    expect(refused.conditions!.failed).toMatch(/holds another workspace's content/);
    expect(existsSync(work)).toBe(true);
    expect(existsSync(join(h.dir, 'workspaces', `${id}.workspace.json`))).toBe(true);
    expect(existsSync(join(h.dir, 'workspaces', `${id}.disposed.json`))).toBe(false);
  });

  // Red team round 15, G8: the remote's "not found" came back PERMISSION_DENIED, which the manager reads as another
  // workspace's content under the id, so the failed start disposed nothing: each left a mounted image and its disk
  // admission, and five of them refused every owner's start.
  it('is not what a start of a missing repository leaves: that start is disposed', async () => {
    const git = await startTestGitServer();
    try {
      const request = startRequest({
        owner: 'mallory',
        initializer: {
          spec: {
            $case: 'git',
            value: contentservice.GitInitializer.fromPartial({
              remoteUri: `${git.url}/does-not-exist.git`,
              cloneTaget: 'main',
              checkoutLocation: 'project',
            }),
          },
        },
      });
      await h.client.startWorkspace(request);
      const stopped = await waitForPhase(h.client, request.id, 'stopped', 30_000);
      expect(stopped.conditions!.failed).toMatch(/git access denied/);
      const session = join(h.dir, 'workspaces', `${request.id}.workspace.json`);
      const deadline = Date.now() + 10_000;
      while (existsSync(session) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
      expect(existsSync(session), 'the failed start left its content').toBe(false);
      expect(existsSync(join(h.dir, 'workspaces', request.id))).toBe(false);
    } finally {
      await git.close();
    }
  });
});
