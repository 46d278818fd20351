/**
 * Network git connects only where the daemon's address policy allows (git.allowedNetworks): the request's remote,
 * every redirect hop and whatever the content's config says, checked at the address connected to. Real git, the
 * repository's smart-HTTP server on 127.0.0.1 (allowed here, as a public forge would be) and "loopback-only
 * services" on 127.0.0.2 (refused), each of which counts the connections it gets: a refusal must leave it at 0.
 * Controls show each refused service is live (it is reached once its address is allowed).
 */
import { appendFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GitAddressRefusedError, InvalidArgumentError } from '../errors.js';
import { runGitInitializer } from '../initializer/git-initializer.js';
import type { InitializerContext } from '../initializer/context.js';
import type { AddressRules } from '../initializer/address-policy.js';
import type { CountingListener, GitHttpServer } from '../test-support/git-server.js';
import {
  createRepo,
  git as plainGit,
  plainGitInitializer,
  scratch,
  startCountingListener,
  startGitHttpServer,
} from '../test-support/git-server.js';
import { Git } from './git.js';
import { initializerContext } from '../test-support/initializer-context.js';

const allowLoopback1: AddressRules = { allowedNetworks: ['127.0.0.1/32'] };

const spec = plainGitInitializer;

describe('network git and the address policy (real git, real servers)', () => {
  let root: Awaited<ReturnType<typeof scratch>>;
  let forge: GitHttpServer;
  let internal: CountingListener; // 127.0.0.2: a loopback-only service
  let redirector: Server;
  let n = 0;

  beforeAll(async () => {
    root = await scratch('workbay-git-egress-');
    await createRepo(root.path, 'repo');
    forge = await startGitHttpServer(root.path);
    internal = await startCountingListener('127.0.0.2');
    // An allowed server that sends git elsewhere: to the internal service.
    redirector = createServer((req, res) => {
      res.writeHead(302, { location: `http://127.0.0.2:${internal.port}${req.url ?? '/'}` }).end();
    });
    await new Promise<void>((resolve) => redirector.listen(0, '127.0.0.1', () => resolve()));
  });
  afterAll(async () => {
    await forge?.close();
    await internal?.close();
    redirector?.closeAllConnections();
    await new Promise<void>((resolve) => (redirector ? redirector.close(() => resolve()) : resolve()));
    await root?.cleanup();
  });

  const context = (addresses: AddressRules = allowLoopback1): Promise<InitializerContext> =>
    initializerContext(root.path, { addresses });
  /** Runs the initializer; the refused listener is checked first (nothing reached it), then the error. */
  const refusal = async (
    url: string,
    addresses?: AddressRules,
    listener: CountingListener = internal,
  ): Promise<GitAddressRefusedError> => {
    const error = await runGitInitializer(spec(url), await context(addresses), 'initializer.git').then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(listener.connections()).toBe(0);
    expect(error).toBeInstanceOf(GitAddressRefusedError);
    return error as GitAddressRefusedError;
  };

  it('clones from an allowed address through the egress proxy', async () => {
    const ctx = await context();
    const served = forge.served;
    await runGitInitializer(spec(`${forge.url}/repo.git`), ctx, 'initializer.git');
    expect(plainGit(join(ctx.root, 'project'), 'log', '-1', '--format=%s')).toBe('second');
    expect(forge.served).toBeGreaterThan(served);
  });

  it.each([
    ['http', (port: number) => `http://127.0.0.2:${port}/repo.git`],
    ['https (CONNECT)', (port: number) => `https://127.0.0.2:${port}/repo.git`],
  ])(
    'a %s remote on a loopback service not allowed: INVALID_ARGUMENT naming host, kind and key; no connection',
    async (_name, url) => {
      const error = await refusal(url(internal.port));
      expect(error).toBeInstanceOf(InvalidArgumentError);
      expect(error.field).toBe('initializer.git.remote_uri');
      expect(error.message).toContain(`127.0.0.2:${internal.port}`);
      expect(error.message).toContain('loopback address');
      expect(error.message).toMatch(/git\.allowedNetworks.*git\.allowPrivateAddresses/);
      expect(error.message.length).toBeLessThan(400);
      expect(internal.connections()).toBe(0);
    },
  );

  it('an open and a closed refused port give the same answer (no port scanning)', async () => {
    const closed = await startCountingListener('127.0.0.2');
    await closed.close();
    const open = await refusal(`http://127.0.0.2:${internal.port}/x.git`);
    const shut = await refusal(`http://127.0.0.2:${closed.port}/x.git`);
    expect(shut.message.replace(String(closed.port), 'P')).toBe(open.message.replace(String(internal.port), 'P'));
    const cause = (e: GitAddressRefusedError): string =>
      String((e.cause as { stderr?: string } | undefined)?.stderr ?? '');
    expect(cause(shut).replace(String(closed.port), 'P')).toBe(cause(open).replace(String(internal.port), 'P'));
    expect(internal.connections()).toBe(0);
  });

  it('control: allowed by git.allowedNetworks, a service on 127.0.0.2 is reached', async () => {
    const other = await startCountingListener('127.0.0.2');
    try {
      const ctx = await context({ allowedNetworks: ['127.0.0.1/32', '127.0.0.2/32'] });
      await expect(
        runGitInitializer(spec(`http://127.0.0.2:${other.port}/repo.git`), ctx, 'initializer.git'),
      ).rejects.not.toBeInstanceOf(GitAddressRefusedError);
      expect(other.connections()).toBeGreaterThan(0);
    } finally {
      await other.close();
    }
  });

  it('a redirect from an allowed server to a refused address: the refused one gets nothing', async () => {
    const port = (redirector.address() as AddressInfo).port;
    const error = await refusal(`http://127.0.0.1:${port}/repo.git`);
    expect(error.message).toContain(`127.0.0.2:${internal.port}`);
    expect(internal.connections()).toBe(0);
  });

  it('NO_PROXY and *_proxy in the daemon environment do not route around the proxy', async () => {
    const saved = { ...process.env };
    Object.assign(process.env, { NO_PROXY: '*', no_proxy: '*', http_proxy: '', HTTPS_PROXY: '', ALL_PROXY: '' });
    try {
      await refusal(`http://127.0.0.2:${internal.port}/repo.git`);
      await refusal(`https://127.0.0.2:${internal.port}/repo.git`);
    } finally {
      for (const key of ['NO_PROXY', 'no_proxy', 'http_proxy', 'HTTPS_PROXY', 'ALL_PROXY']) delete process.env[key];
      Object.assign(process.env, saved);
    }
    expect(internal.connections()).toBe(0);
  });

  describe('proxy keys of the repository config (a working copy whose origin is the internal service)', () => {
    const plantedCopy = async (config: string): Promise<{ dir: string; git: Git }> => {
      const ctx = await context();
      await runGitInitializer(spec(`${forge.url}/repo.git`), ctx, 'initializer.git');
      const dir = join(ctx.root, 'project');
      plainGit(dir, 'remote', 'set-url', 'origin', `http://127.0.0.2:${internal.port}/repo.git`);
      await appendFile(join(dir, '.git', 'config'), config);
      return { dir, git: ctx.git };
    };
    it.each([
      ['remote.origin.proxy = ""', '[remote "origin"]\n\tproxy = ""\n'],
      ['http.<url>.proxy = ""', `[http "http://127.0.0.2:PORT/"]\n\tproxy = ""\n`],
      [
        'http.<url>.proxy = <another proxy>',
        `[http "http://127.0.0.2:PORT/repo.git"]\n\tproxy = http://127.0.0.1:9/\n`,
      ],
      ['http.proxy = ""', '[http]\n\tproxy = ""\n'],
    ])('%s: fetch origin is still refused, the service gets nothing', async (_name, config) => {
      const { dir, git } = await plantedCopy(config.replace('PORT', String(internal.port)));
      const result = await git.tryRun(['fetch', 'origin'], { cwd: dir, contentRoot: dir });
      expect(internal.connections()).toBe(0);
      expect(result.code).not.toBe(0);
      expect(result.refused[0]).toEqual({ target: `127.0.0.2:${internal.port}`, kind: 'loopback' });
      expect(internal.connections()).toBe(0);
    });
  });

  it('a local command (checkout) of a partial clone fetches lazily from its promisor only through the proxy', async () => {
    // Content restored from a prebuild may be a partial clone naming its own promisor remote.
    const bare = join(root.path, 'repo.git');
    plainGit(bare, 'config', 'uploadpack.allowFilter', 'true');
    const dir = join(root.path, `partial${++n}`);
    plainGit(root.path, 'clone', '-q', '--filter=blob:none', '--no-checkout', `file://${bare}`, dir);
    plainGit(dir, 'remote', 'set-url', 'origin', `http://127.0.0.2:${internal.port}/repo.git`);
    const git = new Git(join(root.path, 'tmp'), { addresses: allowLoopback1 });
    const result = await git.tryRun(['checkout', '-q', 'main'], { cwd: dir, contentRoot: dir });
    expect(internal.connections()).toBe(0);
    expect(result.code).not.toBe(0);
    expect(result.refused[0]).toEqual({ target: `127.0.0.2:${internal.port}`, kind: 'loopback' });
  });

  describe('DNS rebinding (the address policy resolve seam)', () => {
    it('a name resolving to an allowed and a refused address: only the allowed one is connected to', async () => {
      const port = Number(new URL(forge.url).port);
      const twin = await startCountingListener('127.0.0.2', port).catch(() => undefined);
      const resolve = (): Promise<Array<{ address: string; family: number }>> =>
        Promise.resolve([
          { address: '127.0.0.2', family: 4 },
          { address: '127.0.0.1', family: 4 },
        ]);
      try {
        const ctx = await context({ ...allowLoopback1, resolve });
        // `.test` never resolves: the clone working proves git resolved nothing itself.
        await runGitInitializer(spec(`http://forge.test:${port}/repo.git`), ctx, 'initializer.git');
        expect(plainGit(join(ctx.root, 'project'), 'log', '-1', '--format=%s')).toBe('second');
        expect(twin?.connections() ?? 0).toBe(0);
      } finally {
        await twin?.close();
      }
    });

    it('a name that rebinds to a refused address between connections: every connection is checked anew', async () => {
      const port = Number(new URL(forge.url).port);
      const twin = await startCountingListener('127.0.0.2', port);
      let lookups = 0;
      const resolve = (): Promise<Array<{ address: string; family: number }>> =>
        Promise.resolve([{ address: lookups++ === 0 ? '127.0.0.1' : '127.0.0.2', family: 4 }]);
      try {
        const error = await refusal(`http://rebind.test:${port}/repo.git`, { ...allowLoopback1, resolve }, twin);
        expect(error.message).toContain(`rebind.test:${port}`);
        expect(lookups).toBeGreaterThan(1);
        expect(twin.connections()).toBe(0);
      } finally {
        await twin.close();
      }
    });
  });
});
