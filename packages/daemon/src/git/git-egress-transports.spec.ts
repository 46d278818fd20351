/**
 * Every transport and every submodule of network git goes through the egress proxy: submodule URLs from the
 * content's `.gitmodules` (http and git://, recursively), git:// against a real `git daemon`, and ssh through the
 * ProxyCommand connect helper. Refused addresses are services on 127.0.0.2 that count their connections (always 0
 * here); 127.0.0.1 is allowed (git.allowedNetworks), as a public forge would be.
 */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { join } from 'node:path';
import type { PluginLogger } from '@workbay/api';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GitAddressRefusedError } from '../errors.js';
import { runGitInitializer } from '../initializer/git-initializer.js';
import type { InitializerContext } from '../initializer/context.js';
import type { CountingListener, GitHttpServer, TestRepo } from '../test-support/git-server.js';
import {
  createRepo,
  git,
  plainGitInitializer,
  scratch,
  startCountingListener,
  startGitHttpServer,
} from '../test-support/git-server.js';
import { startTinyproxy } from '../test-support/tinyproxy.js';
import { parseUpstreamProxy } from '../initializer/upstream-proxy.js';
import type { EgressRefusal } from './egress-proxy.js';
import { initializerContext } from '../test-support/initializer-context.js';
import type { EgressRules } from '../initializer/upstream-proxy.js';

const gitDaemon = '/usr/lib/git-core/git-daemon';

const spec = plainGitInitializer;
const allowLoopback1: EgressRules = { allowedNetworks: ['127.0.0.1/32'] };

/** A bare repository `<name>.git` in `root` whose tree has a file and a gitlink per submodule, with `.gitmodules`. */
async function repoWithSubmodules(
  root: string,
  name: string,
  modules: ReadonlyArray<{ path: string; url: string; commit: string }>,
): Promise<void> {
  const work = join(root, `${name}-work`);
  await mkdir(work, { recursive: true });
  git(work, 'init', '-q', '-b', 'main');
  await writeFile(join(work, `${name}.txt`), `${name}\n`);
  const sections = modules.map((m) => `[submodule "${m.path}"]\n\tpath = ${m.path}\n\turl = ${m.url}\n`);
  await writeFile(join(work, '.gitmodules'), sections.join(''));
  git(work, 'add', '.');
  // After `add .`, which would stage the (absent) submodule directories as deleted.
  for (const m of modules) git(work, 'update-index', '--add', '--cacheinfo', `160000,${m.commit},${m.path}`);
  git(work, 'commit', '-q', '-m', `${name} with submodules`);
  git(root, 'clone', '-q', '--bare', work, join(root, `${name}.git`));
}

/** A free port on 127.0.0.1 (listened on and closed again). */
async function freePort(): Promise<number> {
  const probe = await startCountingListener('127.0.0.1');
  await probe.close();
  return probe.port;
}

async function waitForListener(port: number): Promise<void> {
  for (let i = 0; i < 100; i++) {
    const up = await new Promise<boolean>((resolve) => {
      const socket = connect(port, '127.0.0.1', () => {
        socket.destroy();
        resolve(true);
      });
      socket.on('error', () => resolve(false));
    });
    if (up) return;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`nothing listens on 127.0.0.1:${port}`);
}

describe('network git transports and submodules behind the egress proxy (real git, real servers)', () => {
  let root: Awaited<ReturnType<typeof scratch>>;
  let forge: GitHttpServer;
  let sub: TestRepo;
  let internal: CountingListener; // 127.0.0.2, refused
  let internalGit: CountingListener; // 127.0.0.2, refused, "git://" port
  let daemon: ChildProcess | undefined;
  let daemonPort = 0;

  beforeAll(async () => {
    root = await scratch('workbay-git-egress-t-');
    await createRepo(root.path, 'repo');
    sub = await createRepo(root.path, 'sub', { 'sub.txt': 'sub\n' });
    forge = await startGitHttpServer(root.path);
    internal = await startCountingListener('127.0.0.2');
    internalGit = await startCountingListener('127.0.0.2');
    const anyCommit = sub.commits['main'] as string;
    await repoWithSubmodules(root.path, 'mid', [
      { path: 'nested', url: `http://127.0.0.2:${internal.port}/nested.git`, commit: anyCommit },
    ]);
    const mid = git(join(root.path, 'mid-work'), 'rev-parse', 'HEAD');
    await repoWithSubmodules(root.path, 'top', [
      { path: 'a-allowed', url: `${forge.url}/sub.git`, commit: anyCommit },
      { path: 'b-http', url: `http://127.0.0.2:${internal.port}/x.git`, commit: anyCommit },
      { path: 'c-git', url: `git://127.0.0.2:${internalGit.port}/x.git`, commit: anyCommit },
    ]);
    await repoWithSubmodules(root.path, 'outer', [{ path: 'mid', url: `${forge.url}/mid.git`, commit: mid }]);
    daemonPort = await freePort();
    daemon = spawn(gitDaemon, [
      '--reuseaddr',
      '--export-all',
      `--base-path=${root.path}`,
      '--listen=127.0.0.1',
      `--port=${daemonPort}`,
      root.path,
    ]);
    await waitForListener(daemonPort);
  });
  afterAll(async () => {
    daemon?.kill();
    await forge?.close();
    await internal?.close();
    await internalGit?.close();
    await root?.cleanup();
  });

  const context = (warnings: object[] = [], addresses: EgressRules = allowLoopback1): Promise<InitializerContext> => {
    const logger: PluginLogger = {
      debug: () => undefined,
      info: () => undefined,
      warn: (obj) => void warnings.push(typeof obj === 'string' ? { msg: obj } : obj),
      error: () => undefined,
      child: () => logger,
    };
    return initializerContext(root.path, { addresses, logger });
  };
  const refusedIn = (warnings: object[]): EgressRefusal[] =>
    warnings.flatMap((w) => (w as { refused?: EgressRefusal[] }).refused ?? []);

  it('.gitmodules at refused addresses (http, git://): no connection; the clone succeeds, allowed submodules are fetched', async () => {
    const warnings: object[] = [];
    const ctx = await context(warnings);
    await runGitInitializer(spec(`${forge.url}/top.git`), ctx, 'initializer.git');
    expect(internal.connections()).toBe(0);
    expect(internalGit.connections()).toBe(0);
    const project = join(ctx.root, 'project');
    expect(await readFile(join(project, 'top.txt'), 'utf8')).toBe('top\n');
    // The allowed submodule was cloned through the proxy as well (git checks none out when another clone failed).
    expect(git(join(project, '.git', 'modules', 'a-allowed'), 'cat-file', '-t', sub.commits['main'] as string)).toBe(
      'commit',
    );
    const refused = refusedIn(warnings).map((r) => r.target);
    expect(refused).toEqual(expect.arrayContaining([`127.0.0.2:${internal.port}`, `127.0.0.2:${internalGit.port}`]));
    expect(internal.connections()).toBe(0);
    expect(internalGit.connections()).toBe(0);
  });

  it('recursive: a submodule of an (allowed) submodule at a refused address gets no connection', async () => {
    const warnings: object[] = [];
    const ctx = await context(warnings);
    await runGitInitializer(spec(`${forge.url}/outer.git`), ctx, 'initializer.git');
    expect(internal.connections()).toBe(0);
    expect(await readFile(join(ctx.root, 'project', 'mid', 'mid.txt'), 'utf8')).toBe('mid\n');
    expect(refusedIn(warnings)).toContainEqual({ target: `127.0.0.2:${internal.port}`, kind: 'loopback' });
    expect(internal.connections()).toBe(0);
  });

  it('git:// through git daemon: an allowed address clones, a refused one gets no connection', async () => {
    const ctx = await context();
    await runGitInitializer(spec(`git://127.0.0.1:${daemonPort}/repo.git`), ctx, 'initializer.git');
    expect(git(join(ctx.root, 'project'), 'log', '-1', '--format=%s')).toBe('second');
    const error = await runGitInitializer(
      spec(`git://127.0.0.2:${internalGit.port}/repo.git`),
      await context(),
      'initializer.git',
    ).catch((e: unknown) => e);
    expect(internalGit.connections()).toBe(0);
    expect(error).toBeInstanceOf(GitAddressRefusedError);
    expect((error as Error).message).toContain(`127.0.0.2:${internalGit.port} (loopback address;`);
    expect(internalGit.connections()).toBe(0);
  });

  it('git:// through an upstream proxy (tinyproxy): tunnelled to the checked address', async () => {
    const proxy = await startTinyproxy('alice', 's3cret');
    try {
      const ctx = await context([], {
        ...allowLoopback1,
        upstreamProxy: parseUpstreamProxy(`http://alice:s3cret@127.0.0.1:${proxy.port}`),
      });
      await runGitInitializer(spec(`git://127.0.0.1:${daemonPort}/repo.git`), ctx, 'initializer.git');
      expect(git(join(ctx.root, 'project'), 'log', '-1', '--format=%s')).toBe('second');
      expect(await proxy.connects()).toEqual([`127.0.0.1:${daemonPort}`]);
    } finally {
      await proxy.stop();
    }
  });

  it.each([
    ['ssh://', (port: number) => `ssh://git@127.0.0.2:${port}/repo.git`],
    ['scp-like', () => `git@127.0.0.2:repo.git`],
  ])('ssh (%s) to a refused address: ProxyCommand refused, no connection', async (_name, url) => {
    const error = await runGitInitializer(spec(url(internal.port)), await context(), 'initializer.git').catch(
      (e: unknown) => e,
    );
    expect(internal.connections()).toBe(0);
    expect(error).toBeInstanceOf(GitAddressRefusedError);
    expect((error as Error).message).toMatch(/127\.0\.0\.2:\d+ \(loopback address;/);
    expect(internal.connections()).toBe(0);
  });

  it('control: ssh to an allowed address connects through the proxy', async () => {
    const sshd = await startCountingListener('127.0.0.1');
    try {
      const error = await runGitInitializer(
        spec(`ssh://git@127.0.0.1:${sshd.port}/repo.git`),
        await context(),
        'initializer.git',
      ).catch((e: unknown) => e);
      expect(error).not.toBeInstanceOf(GitAddressRefusedError);
      expect(sshd.connections()).toBeGreaterThan(0);
    } finally {
      await sshd.close();
    }
  });
});
