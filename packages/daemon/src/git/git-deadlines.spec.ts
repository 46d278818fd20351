/**
 * Network git has deadlines (red team round 12, G2): a remote answering a byte every few seconds held a clone, a
 * start slot and the workspace's stop for as long as it liked. Real git through the egress proxy, against a real
 * HTTP server on loopback that answers slowly.
 */
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isWorkbayError } from '../errors.js';
import { runGitInitializer } from '../initializer/git-initializer.js';
import { initializerContext } from '../test-support/initializer-context.js';
import { plainGitInitializer, processesNaming, scratch, startGitTarpit } from '../test-support/git-server.js';
import { GitCommandError } from './git-errors.js';
import { Git } from './git.js';

type Tarpit = Awaited<ReturnType<typeof startGitTarpit>>;

describe('network git deadlines (real git, a slow server)', () => {
  let root: Awaited<ReturnType<typeof scratch>>;
  let trickle: Tarpit;
  let steady: Tarpit;
  let n = 0;
  beforeAll(async () => {
    root = await scratch('workbay-git-deadlines-');
    trickle = await startGitTarpit(1, 500);
    steady = await startGitTarpit(4096, 100);
  });
  afterAll(async () => {
    trickle?.close();
    steady?.close();
    await root?.cleanup();
  });

  const clone = async (git: Git, url: string): Promise<{ ms: number; error: unknown; stderr: string }> => {
    const dir = join(root.path, `clone-${++n}`);
    await mkdir(dir);
    const started = performance.now();
    try {
      const result = await git.tryRun(['clone', '--quiet', '--', url, '.'], { cwd: dir, newRepository: true });
      return { ms: performance.now() - started, error: undefined, stderr: result.code === 0 ? '' : result.stderr };
    } catch (error) {
      return { ms: performance.now() - started, error, stderr: '' };
    }
  };

  it('gives up an http transfer slower than git.lowSpeedLimit for git.lowSpeedTime', async () => {
    const git = new Git(join(root.path, 'tmp'), {
      addresses: { allowedNetworks: ['127.0.0.1/32'] },
      lowSpeed: { bytesPerSecond: 1000, seconds: 2 },
    });
    const result = await clone(git, trickle.url);
    expect(result.error).toBeUndefined();
    expect(result.stderr).toMatch(/too slow/i);
    expect(result.ms).toBeLessThan(20_000);
  });

  it('a clone given up as too slow is not retried: one attempt, FAILED_PRECONDITION saying why', async () => {
    let requests = 0;
    const counted = await startGitTarpit(1, 500);
    counted.server.on('request', () => requests++);
    try {
      const base = await initializerContext(root.path, { maxElapsedMs: 60_000 });
      const ctx = {
        ...base,
        git: new Git(join(root.path, 'tmp'), {
          addresses: { allowedNetworks: ['127.0.0.1/32'] },
          lowSpeed: { bytesPerSecond: 1000, seconds: 1 },
        }),
      };
      const error = await runGitInitializer(plainGitInitializer(counted.url), ctx, 'initializer.git').then(
        () => undefined,
        (e: unknown) => e as Error,
      );
      expect(isWorkbayError(error, 'failed-precondition'), String(error)).toBe(true);
      expect(error?.message).toMatch(/too slowly/);
      expect(requests).toBe(1);
    } finally {
      counted.close();
    }
  });

  it('ends a network command at git.networkCommandTimeout, however fast the trickle', async () => {
    const git = new Git(join(root.path, 'tmp'), {
      addresses: { allowedNetworks: ['127.0.0.1/32'] },
      networkCommandTimeoutMs: 2_000,
    });
    const { url } = steady;
    const result = await clone(git, url);
    expect(result.error).toBeInstanceOf(GitCommandError);
    expect((result.error as GitCommandError).stderr).toContain('timed out after 2000 ms');
    expect(result.ms).toBeLessThan(15_000);
    // Git's own children go with it: the git-remote-http that was reading the trickle is gone too.
    expect(processesNaming(url)).toEqual([]);
  });
});
