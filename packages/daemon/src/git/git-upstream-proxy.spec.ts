/**
 * Network git through the operator's forward proxy (git.upstreamProxy): real git, the repository's smart-HTTP
 * server on 127.0.0.1 (allowed here, as a public forge would be), a "loopback-only service" on 127.0.0.2 that
 * counts its connections, and Debian's tinyproxy as the upstream proxy, whose log says which tunnels it was asked
 * for. The egress proxy asks it for the checked address, never the name, and never for a refused one.
 */
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GitAddressRefusedError } from '../errors.js';
import { runGitInitializer } from '../initializer/git-initializer.js';
import type { InitializerContext } from '../initializer/context.js';
import type { CountingListener, GitHttpServer } from '../test-support/git-server.js';
import {
  createRepo,
  git as plainGit,
  plainGitInitializer,
  scratch,
  startCountingListener,
  startGitHttpServer,
} from '../test-support/git-server.js';
import type { Tinyproxy } from '../test-support/tinyproxy.js';
import { startTinyproxy } from '../test-support/tinyproxy.js';
import { describeUpstream, parseUpstreamProxy } from '../initializer/upstream-proxy.js';
import type { EgressRules } from '../initializer/upstream-proxy.js';
import { initializerContext } from '../test-support/initializer-context.js';

describe('parseUpstreamProxy', () => {
  it('takes http://[user:password@]host:port and keeps the credentials for Proxy-Authorization only', () => {
    const proxy = parseUpstreamProxy('http://alice:p%40ss@proxy.corp:3128', ['10.0.0.0/8']);
    expect(proxy).toEqual({
      host: 'proxy.corp',
      port: 3128,
      authorization: Buffer.from('alice:p@ss').toString('base64'),
      direct: ['10.0.0.0/8'],
    });
    expect(describeUpstream(proxy)).toBe('proxy.corp:3128');
    expect(describeUpstream(parseUpstreamProxy('http://[fd00::1]:8080'))).toBe('[fd00::1]:8080');
  });

  it.each([
    ['https://proxy:3128', 'http://'],
    ['socks5://proxy:1080', 'http://'],
    ['http://proxy', 'needs a port'],
    ['http://proxy:3128/path', 'no path'],
    ['proxy:3128', 'http://'],
    ['not a url', 'not a URL'],
  ])('refuses %s, saying why', (url, why) => {
    expect(() => parseUpstreamProxy(url)).toThrow(why);
  });

  it('never repeats the password in its messages', () => {
    expect(() => parseUpstreamProxy('https://alice:hunter2@proxy:3128')).toThrow(/^((?!hunter2).)*$/);
    expect(() => parseUpstreamProxy('http://alice:hunter2@proxy:3128', ['nonsense'])).toThrow(/^((?!hunter2).)*$/);
  });
});

describe('network git through an upstream proxy (real git, real tinyproxy)', () => {
  let root: Awaited<ReturnType<typeof scratch>>;
  let forge: GitHttpServer;
  let internal: CountingListener;
  let proxy: Tinyproxy;

  beforeAll(async () => {
    root = await scratch('workbay-git-upstream-');
    await createRepo(root.path, 'repo');
    forge = await startGitHttpServer(root.path);
    internal = await startCountingListener('127.0.0.2');
    proxy = await startTinyproxy('alice', 's3cret');
  });
  afterAll(async () => {
    await proxy?.stop();
    await forge?.close();
    await internal?.close();
    await root?.cleanup();
  });

  const rules = (url: string, direct: string[] = []): EgressRules => ({
    allowedNetworks: ['127.0.0.1/32'],
    upstreamProxy: parseUpstreamProxy(url, direct),
  });
  const context = (addresses: EgressRules): Promise<InitializerContext> =>
    initializerContext(root.path, { addresses, maxElapsedMs: 1_000 });
  const clone = async (addresses: EgressRules, url = `${forge.url}/repo.git`): Promise<InitializerContext> => {
    const ctx = await context(addresses);
    await runGitInitializer(plainGitInitializer(url), ctx, 'initializer.git');
    return ctx;
  };
  const failure = async (addresses: EgressRules, url = `${forge.url}/repo.git`): Promise<Error> => {
    const error = await clone(addresses, url).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(Error);
    return error as Error;
  };

  it('clones through the proxy, which is asked for the checked address, never the name', async () => {
    const before = (await proxy.connects()).length;
    const forgePort = new URL(forge.url).port;
    // The name resolves (through the resolver seam) to the forge's address: the proxy is asked for that address.
    const ctx = await clone(
      {
        ...rules(`http://alice:s3cret@127.0.0.1:${proxy.port}`),
        resolve: async () => [{ address: '127.0.0.1', family: 4 }],
      },
      `http://forge.example:${forgePort}/repo.git`,
    );
    expect(plainGit(join(ctx.root, 'project'), 'log', '-1', '--format=%s')).toBe('second');
    const asked = (await proxy.connects()).slice(before);
    expect(asked.length).toBeGreaterThan(0);
    expect(new Set(asked)).toEqual(new Set([`127.0.0.1:${forgePort}`]));
  });

  it('a refused address is refused before the proxy is asked: neither it nor the service sees a connection', async () => {
    const before = (await proxy.connects()).length;
    const error = await failure(
      rules(`http://alice:s3cret@127.0.0.1:${proxy.port}`),
      `http://127.0.0.2:${internal.port}/repo.git`,
    );
    expect(error).toBeInstanceOf(GitAddressRefusedError);
    expect(internal.connections()).toBe(0);
    expect((await proxy.connects()).slice(before)).toEqual([]);
  });

  it('wrong credentials: the error names the proxy and its answer, never the password, and is not retried', async () => {
    const started = Date.now();
    const error = await failure(rules(`http://alice:wrong-secret@127.0.0.1:${proxy.port}`));
    expect(error.message).toContain(`upstream proxy 127.0.0.1:${proxy.port} answered "HTTP/1.`);
    // tinyproxy answers 401 where RFC 9110 says 407; either is a refusal of the credentials.
    expect(error.message).toMatch(/answered "HTTP\/1\.[01] 40[17]/);
    expect(JSON.stringify(error, Object.getOwnPropertyNames(error))).not.toContain('wrong-secret');
    // Not the transient kind: the initializer gave up without its retries (1 s of them here).
    expect(Date.now() - started).toBeLessThan(30_000);
  });

  it('addresses in `direct` are connected to without the proxy, even with the proxy down', async () => {
    const before = (await proxy.connects()).length;
    const ctx = await clone(rules('http://alice:s3cret@127.0.0.1:9', ['127.0.0.1/32']));
    expect(plainGit(join(ctx.root, 'project'), 'log', '-1', '--format=%s')).toBe('second');
    expect((await proxy.connects()).slice(before)).toEqual([]);
  });

  it('an unreachable proxy is named in the error', async () => {
    const error = await failure(rules('http://alice:s3cret@127.0.0.1:9'));
    expect(error.message).toContain('upstream proxy 127.0.0.1:9 is unreachable (ECONNREFUSED)');
  });
});
