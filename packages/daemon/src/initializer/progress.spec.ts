/**
 * Initialization progress (issue 11): what a retrying git clone reports, that the report never carries a
 * credential (the spec's own, URL user info, query tokens, forge tokens, authorization values), and the
 * InitProgress RPC of the real daemon.
 */
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createSilentLogger, isWorkbayError } from '@workbay/api';
import { Git } from '../git/git.js';
import { createRepo, git, plainGitInitializer, scratch, startGitHttpServer } from '../test-support/git-server.js';
import type { GitHttpServer, TestRepo } from '../test-support/git-server.js';
import { startTestDaemon } from '../test-support/daemon-harness.js';
import type { TestDaemon } from '../test-support/daemon-harness.js';
import { runGitInitializer } from './git-initializer.js';
import type { InitProgress } from './progress.js';
import { maxAttemptsWithin, maxErrorChars, progressErrorText } from './progress.js';

describe('progressErrorText', () => {
  it('removes credentials of every shape a failure line can carry', () => {
    const secrets = ['hunter2-pass', 'qtok-123456', 'ghp_abcdefghijklmnopqrstuvwxyz0123', 'Zm9vOmJhcmJhemJheg=='];
    const text = progressErrorText(
      `fatal: unable to access 'https://alice:${secrets[0]}@git.example.com/r.git/?access_token=${secrets[1]}': ` +
        `token ${secrets[2]} rejected, Authorization: Basic ${secrets[3]}`,
    );
    for (const secret of secrets) expect(text).not.toContain(secret);
    expect(text).toContain('git.example.com/r.git');
    expect(text).toContain('[redacted]');
  });

  it('keeps one line, without control characters, bounded', () => {
    expect(progressErrorText('\n\n  fatal: first\nsecond line')).toBe('fatal: first');
    expect(progressErrorText('fatal: a\u001b[31mred\u0007')).toBe('fatal: a [31mred ');
    const long = progressErrorText(`fatal: ${'x'.repeat(10_000)}`);
    expect(long.length).toBe(maxErrorChars);
    expect(long.endsWith('...')).toBe(true);
  });
});

describe('maxAttemptsWithin', () => {
  it('counts the attempts exponential backoff fits into the budget', () => {
    // 100 + 200 + 400 = 700 ms of delays fit into 1 s; the next (800 ms) does not.
    expect(maxAttemptsWithin(100, 1_000)).toBe(4);
    // The defaults: 1 s doubling to 30 s, 5 minutes.
    expect(maxAttemptsWithin(1_000, 300_000)).toBe(14);
    expect(maxAttemptsWithin(1_000, 0)).toBe(1);
  });
});

describe('git clone retries report progress (real git over HTTP)', () => {
  const password = 'progress-Pa55word-xyz';
  let repos: Awaited<ReturnType<typeof scratch>>;
  let repo: TestRepo;
  let server: GitHttpServer;

  beforeAll(async () => {
    repos = await scratch();
    repo = await createRepo(repos.path, 'repo', { 'README.md': 'hello\n' });
    server = await startGitHttpServer(repos.path, { username: 'alice', password });
  });
  afterAll(async () => {
    await server.close();
    await repos.cleanup();
  });

  it('each retry reports its attempt and the failure line, never the credentials in the URL', async () => {
    const work = await scratch('workbay-progress-');
    try {
      const reports: InitProgress[] = [];
      server.failNext(2);
      const spec = plainGitInitializer(`${server.url.replace('http://', `http://alice:${password}@`)}/repo.git`);
      const root = join(work.path, 'content');
      await mkdir(root);
      await runGitInitializer(
        spec,
        {
          root,
          git: new Git(join(work.path, 'tmp'), { addresses: { allowedNetworks: ['127.0.0.1/32'] } }),
          owner: 'o',
          workspaceId: 'w',
          logger: createSilentLogger(),
          gitRetry: { initialDelayMs: 10, maxElapsedMs: 5_000 },
          downloadTimeoutMs: 5_000,
          progress: (p) => reports.push(p),
        },
        'initializer.git',
      );
      expect(git(join(root, 'project'), 'rev-parse', 'HEAD')).toBe(repo.commits['main']);
      expect(reports.map((r) => r.attempt)).toEqual([2, 3]);
      for (const report of reports) {
        expect(report.step).toBe('git clone');
        expect(report.maxAttempts).toBe(maxAttemptsWithin(10, 5_000));
        expect(report.lastError).toMatch(/^fatal: .*503/);
        expect(JSON.stringify(report)).not.toContain(password);
      }
    } finally {
      await work.cleanup();
    }
  });
});

describe('the InitProgress RPC', () => {
  let t: TestDaemon;
  beforeAll(async () => {
    t = await startTestDaemon();
  });
  afterAll(async () => {
    await t.cleanup();
  });

  it('answers NOT_FOUND for an unknown workspace and not initializing once init ended', async () => {
    const unknown = await t.client.initProgress({ id: 'no-such-workspace' }).catch((e: unknown) => e);
    expect(isWorkbayError(unknown, 'not-found')).toBe(true);
    await t.client.initWorkspace({
      id: 'progress-1',
      metadata: { owner: 'tester', metaId: 'meta-progress-1' },
      initializer: { spec: { $case: 'empty', value: {} } },
    });
    expect(await t.client.initProgress({ id: 'progress-1' })).toEqual({
      initializing: false,
      step: '',
      attempt: 0,
      maxAttempts: 0,
      lastError: '',
    });
  });
});
