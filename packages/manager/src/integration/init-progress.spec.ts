/**
 * Issue 11, "transient failures show their retries in the workspace's status message": against the real manager,
 * the real daemon (a child process), real git and a real HTTP git server behind a proxy that answers 503 to the
 * first requests. While the daemon retries the clone, DescribeWorkspace and Subscribe show INITIALIZING with the
 * attempt and git's failure line; once the clone succeeds the workspace is RUNNING without it. The
 * credentials in the clone URL never appear in any status.
 *
 * No timing is asserted: the proxy holds the request after the failures until the test has seen the message, so
 * the clone cannot finish before the retry was observed.
 */
import { randomBytes } from 'node:crypto';
import { createServer, request as httpRequest } from 'node:http';
import type { Server } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { contentservice, workspacePhase, wsman } from '@workbay/api';
import { startTestGitServer } from '../test-support/git-http.js';
import type { TestGitServer } from '../test-support/git-http.js';
import { startHarness, startRequest, waitForPhase, waitForStatus } from '../test-support/harness.js';
import type { Harness } from '../test-support/harness.js';

interface FlakyProxy {
  readonly url: string;
  /** Requests answered so far (503s included). */
  readonly count: () => number;
  /** Lets the held requests (and every later one) through to the git server. */
  release(): void;
  close(): Promise<void>;
}

/**
 * In front of `target`: answers the first `failures` requests with 503, then holds each request until
 * {@link FlakyProxy.release}, then forwards it.
 */
async function startFlakyProxy(target: string, failures: number): Promise<FlakyProxy> {
  let seen = 0;
  let release!: () => void;
  const released = new Promise<void>((resolve) => (release = resolve));
  const upstream = new URL(target);
  const server: Server = createServer((req, res) => {
    seen += 1;
    if (seen <= failures) {
      req.resume();
      res.writeHead(503, { 'content-type': 'text/plain', 'retry-after': '1' }).end('try again later\n');
      return;
    }
    void released.then(() => {
      const forward = httpRequest(
        {
          host: upstream.hostname,
          port: upstream.port,
          method: req.method,
          path: req.url,
          headers: { ...req.headers, host: upstream.host },
        },
        (answer) => {
          res.writeHead(answer.statusCode ?? 502, answer.headers);
          answer.pipe(res);
        },
      );
      forward.on('error', () => res.destroy());
      req.pipe(forward);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as { port: number }).port}`,
    count: () => seen,
    release,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

describe('initialization progress in the workspace status', () => {
  let h: Harness;
  let git: TestGitServer;
  let proxy: FlakyProxy;

  beforeAll(async () => {
    git = await startTestGitServer();
    await git.createRepo('flaky', { 'README.md': 'hello\n' });
    h = await startHarness();
  });
  afterAll(async () => {
    await h?.close();
    await proxy?.close();
    await git?.close();
  });

  it('shows the git retries while INITIALIZING, then RUNNING without them; never the URL credentials', async () => {
    // Two 503s: the daemon's test config retries after 100 ms and 200 ms, well within its 3 s budget.
    proxy = await startFlakyProxy(git.url, 2);
    const token = `tok-${randomBytes(12).toString('hex')}`;
    const request = startRequest({
      owner: 'retry-owner',
      initializer: {
        spec: {
          $case: 'git',
          value: contentservice.GitInitializer.fromPartial({
            remoteUri: `${proxy.url.replace('http://', `http://git-user:${token}@`)}/flaky.git`,
            cloneTaget: 'main',
            checkoutLocation: 'project',
          }),
        },
      },
    });
    // Every update after this version, replayed from the history: nothing can fall between subscribing and
    // starting.
    const stream = h.client.subscribe({
      resumeFromStatusVersion: h.running.core.statusVersion,
      mustMatch: { owner: 'retry-owner', metaId: '', annotations: {} },
    });
    const updates: wsman.WorkspaceStatus[] = [];
    const running = (async () => {
      for await (const update of stream) {
        if (update.status?.id !== request.id) continue;
        updates.push(update.status);
        if (workspacePhase.fromProto(update.status.phase) === 'running') break;
      }
    })();

    await h.client.startWorkspace(request);
    const retrying = await waitForStatus(h.client, request.id, (s) => /attempt \d/.test(s.message));
    expect(workspacePhase.fromProto(retrying.phase)).toBe('initializing');
    expect(retrying.message).toMatch(/^git clone failed, retrying \(attempt [23] of at most \d+\): fatal: .*503/);
    expect(proxy.count()).toBeGreaterThanOrEqual(2);

    proxy.release();
    const done = await waitForPhase(h.client, request.id, 'running');
    // RUNNING carries the runtime's notice (isolation) if any, never the retries of the finished clone.
    expect(done.message).not.toMatch(/retrying|attempt/);
    await running;
    stream.cancel();

    // Subscribe saw the same: a retry message while INITIALIZING, before RUNNING, and RUNNING without it.
    const phases = updates.map((s) => workspacePhase.fromProto(s.phase));
    const retryIndex = updates.findIndex((s) => /retrying \(attempt/.test(s.message));
    expect(retryIndex).toBeGreaterThanOrEqual(0);
    expect(phases[retryIndex]).toBe('initializing');
    expect(phases.at(-1)).toBe('running');
    expect(updates.at(-1)!.message).not.toMatch(/retrying|attempt/);
    // The clone URL's credentials are in no status message (the daemon strips them, both sides scrub).
    for (const status of [...updates, retrying, done]) {
      expect(status.message).not.toContain(token);
      expect(JSON.stringify(status)).not.toContain(token);
    }

    await h.client.stopWorkspace({ id: request.id, policy: wsman.StopWorkspacePolicy.ABORT });
    await waitForPhase(h.client, request.id, 'stopped');
  });
});
