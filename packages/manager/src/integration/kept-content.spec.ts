/**
 * Content a failed final backup leaves on the node stays its workspace's (red team round 9, K1 and K3): its record stays
 * listed past the retention period (round 17, L5), another owner's start with that instance id is refused and disposes
 * nothing, and its owner resumes it. Real manager and daemon over gRPC.
 */
import { existsSync, readFileSync, unlinkSync, writeFileSync } from 'node:fs';
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

  it("stays listed while the node keeps it, is not handed to another owner's start, and its owner resumes it", async () => {
    const mallory = startRequest({ owner: 'mallory' });
    const id = mallory.id;
    await h.client.startWorkspace(mallory);
    await waitForPhase(h.client, id, 'running');
    // A name no archive carries (not UTF-8): the final backup fails (FAILED_PRECONDITION, not retried) and the daemon
    // keeps the content, the only copy of this work.
    const content = join(h.dir, 'workspaces', id);
    const work = Buffer.concat([Buffer.from(`${content}/caf`), Buffer.from([0xe9]), Buffer.from('.txt')]);
    writeFileSync(work, 'work that has no backup');
    writeFileSync(join(content, 'notes.txt'), 'more work');
    await h.client.stopWorkspace({ id, policy: wsman.StopWorkspacePolicy.NORMALLY });
    const stopped = await waitForPhase(h.client, id, 'stopped', 30_000);
    expect(stopped.conditions!.failed).toMatch(/not valid UTF-8/);

    // Well past stoppedRetention the record is still there: it is how mallory finds the kept content (red team round
    // 17, L5: the purged record left it where nobody could see it).
    await new Promise((r) => setTimeout(r, 2_500));
    const listed = await h.client.getWorkspaces({});
    expect(listed.status.map((s) => s.id)).toContain(id);

    // eve's start with the same id is refused, and disposes nothing.
    const foreign = await h.client.startWorkspace(startRequest({ id, owner: 'eve', metaId: 'eve-1' })).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(isWorkbayError(foreign, 'already-exists')).toBe(true);
    expect(String((foreign as Error).message)).toMatch(/belongs to another workspace/);
    expect(existsSync(work)).toBe(true);

    // mallory resumes it: the same content runs again; once it can be backed up, its stop disposes it and the record
    // goes after the retention period.
    await h.client.startWorkspace(mallory);
    await waitForPhase(h.client, id, 'running', 30_000);
    expect(readFileSync(join(content, 'notes.txt'), 'utf8')).toBe('more work');
    unlinkSync(work);
    await h.client.stopWorkspace({ id, policy: wsman.StopWorkspacePolicy.NORMALLY });
    const backedUp = await waitForPhase(h.client, id, 'stopped', 30_000);
    expect(backedUp.conditions!.failed).toBe('');
    expect(existsSync(content)).toBe(false);
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
