import { createHash } from 'node:crypto';
import { createServer } from 'node:http';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { access, readFile, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { createServer as createNetServer } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isWorkbayError } from '@workbay/api';
import type { InvalidArgumentError, contentservice } from '@workbay/api';
import { createLogger } from '../health/logger.js';
import { createRepo, git, scratch, startGitHttpServer, startOtsServer } from '../test-support/git-server.js';
import type { GitHttpServer, TestRepo } from '../test-support/git-server.js';
import { startTestDaemon } from '../test-support/daemon-harness.js';
import type { TestDaemon } from '../test-support/daemon-harness.js';
import { errorOf } from '../test-support/outcomes.js';

const password = 's3cr3t-Pa55word';

async function grepTree(dir: string, needle: string): Promise<string[]> {
  const hits: string[] = [];
  async function visit(path: string): Promise<void> {
    for (const entry of await readdir(path, { withFileTypes: true })) {
      const child = join(path, entry.name);
      if (entry.isDirectory()) await visit(child);
      else if (entry.isFile() && (await readFile(child)).includes(needle)) hits.push(child);
    }
  }
  await visit(dir);
  return hits;
}

describe('initializers (real git, real HTTP, through gRPC)', () => {
  let t: TestDaemon;
  let repos: Awaited<ReturnType<typeof scratch>>;
  let repo: TestRepo;
  let privateServer: GitHttpServer;
  let publicServer: GitHttpServer;
  const logLines: string[] = [];
  let n = 0;
  const nextId = (): string => `w${++n}`;

  beforeAll(async () => {
    repos = await scratch();
    repo = await createRepo(repos.path, 'repo', { 'docs/guide.md': 'guide\n' });
    privateServer = await startGitHttpServer(repos.path, { username: 'alice', password });
    publicServer = await startGitHttpServer(repos.path);
    const sink = new Writable({
      write(chunk: Buffer, _encoding, callback) {
        logLines.push(chunk.toString());
        callback();
      },
    });
    t = await startTestDaemon({ overrides: { logger: createLogger({ level: 'debug', destination: sink }) } });
  });
  afterAll(async () => {
    await t.cleanup();
    await privateServer.close();
    await publicServer.close();
    await repos.cleanup();
  });

  const init = (initializer: contentservice.WorkspaceInitializer, id = nextId()) =>
    t.client.initWorkspace({ id, metadata: { owner: 'tester', metaId: `meta-${id}` }, initializer });
  const gitSpec = (value: Partial<contentservice.GitInitializer>): contentservice.WorkspaceInitializer => ({
    spec: { $case: 'git', value: { remoteUri: repo.url, ...value } as contentservice.GitInitializer },
  });

  describe('clone modes', () => {
    it('REMOTE_HEAD: a shallow clone of the default branch', async () => {
      const { contentLocation } = await init(gitSpec({}));
      expect(git(contentLocation, 'rev-parse', 'HEAD')).toBe(repo.commits['main']);
      expect(git(contentLocation, 'rev-parse', '--abbrev-ref', 'HEAD')).toBe('main');
      expect(git(contentLocation, 'rev-list', '--count', 'HEAD')).toBe('1');
      expect(git(contentLocation, 'config', '--get', 'remote.origin.fetch')).toBe(
        '+refs/heads/*:refs/remotes/origin/*',
      );
      expect(git(contentLocation, 'status', '--porcelain')).toBe('');
    });

    it('full_clone: the whole history', async () => {
      const { contentLocation } = await init(gitSpec({ fullClone: true }));
      expect(git(contentLocation, 'rev-list', '--count', 'HEAD')).toBe('2');
      expect(git(contentLocation, 'rev-parse', '--is-shallow-repository')).toBe('false');
    });

    it('REMOTE_COMMIT: a detached checkout of the commit', async () => {
      const { contentLocation } = await init(gitSpec({ targetMode: 1, cloneTaget: repo.commits['first'] }));
      expect(git(contentLocation, 'rev-parse', 'HEAD')).toBe(repo.commits['first']);
      expect(git(contentLocation, 'rev-parse', '--abbrev-ref', 'HEAD')).toBe('HEAD');
      expect(await readFile(join(contentLocation, 'README.md'), 'utf8')).toBe('# first\n');
    });

    it('REMOTE_COMMIT: an unknown commit fails with FAILED_PRECONDITION naming the field', async () => {
      const error = await errorOf(
        init(gitSpec({ targetMode: 1, cloneTaget: 'deadbeefdeadbeefdeadbeefdeadbeefdeadbeef' })),
      );
      expect(isWorkbayError(error, 'failed-precondition')).toBe(true);
      expect(error.message).toMatch(/initializer\.git\.clone_taget: commit 'deadbeef.*' does not exist/);
    });

    it('REMOTE_BRANCH: the branch, tracking origin', async () => {
      const { contentLocation } = await init(gitSpec({ targetMode: 2, cloneTaget: 'feature' }));
      expect(git(contentLocation, 'rev-parse', '--abbrev-ref', 'HEAD')).toBe('feature');
      expect(git(contentLocation, 'rev-parse', 'HEAD')).toBe(repo.commits['feature']);
      expect(git(contentLocation, 'rev-parse', '--abbrev-ref', '@{upstream}')).toBe('origin/feature');
    });

    it('REMOTE_BRANCH: a branch that does not exist leaves the default branch (as the original)', async () => {
      const { contentLocation } = await init(gitSpec({ targetMode: 2, cloneTaget: 'gone' }));
      expect(git(contentLocation, 'rev-parse', '--abbrev-ref', 'HEAD')).toBe('main');
    });

    it('LOCAL_BRANCH: a new local branch from origin/HEAD, without upstream', async () => {
      const { contentLocation } = await init(gitSpec({ targetMode: 3, cloneTaget: 'my-work' }));
      expect(git(contentLocation, 'rev-parse', '--abbrev-ref', 'HEAD')).toBe('my-work');
      expect(git(contentLocation, 'rev-parse', 'HEAD')).toBe(repo.commits['main']);
      expect(() => git(contentLocation, 'rev-parse', '--abbrev-ref', '@{upstream}')).toThrow();
    });

    it('custom config, upstream remote and checkout location', async () => {
      const { contentLocation } = await init(
        gitSpec({
          checkoutLocation: 'projects/app',
          upstreamRemoteUri: `${publicServer.url}/repo.git`,
          config: {
            customConfig: { 'core.autocrlf': 'input', 'user.name': 'Workspace User' },
            authentication: 0,
            authUser: '',
            authPassword: '',
            authOts: '',
          },
        }),
      );
      const checkout = join(contentLocation, 'projects/app');
      expect(git(checkout, 'config', '--get', 'core.autocrlf')).toBe('input');
      expect(git(checkout, 'config', '--get', 'user.name')).toBe('Workspace User');
      expect(git(checkout, 'remote', 'get-url', 'upstream')).toBe(`${publicServer.url}/repo.git`);
      expect(await readFile(join(checkout, 'docs/guide.md'), 'utf8')).toBe('guide\n');
    });

    it('clones over smart HTTP (git http-backend) too', async () => {
      const { contentLocation } = await init(
        gitSpec({ remoteUri: `${publicServer.url}/repo.git`, targetMode: 2, cloneTaget: 'feature' }),
      );
      expect(git(contentLocation, 'rev-parse', 'HEAD')).toBe(repo.commits['feature']);
    });
  });

  describe('authentication', () => {
    const basic = (user: string, pass: string) => ({
      customConfig: {},
      authentication: 1,
      authUser: user,
      authPassword: pass,
      authOts: '',
    });

    it('basic auth: clones, and the password reaches neither .git/config, nor the files, nor the logs', async () => {
      const remote = `${privateServer.url}/repo.git`;
      const { contentLocation } = await init(gitSpec({ remoteUri: remote, config: basic('alice', password) }));
      expect(git(contentLocation, 'rev-parse', 'HEAD')).toBe(repo.commits['main']);
      expect(git(contentLocation, 'remote', 'get-url', 'origin')).toBe(remote);
      expect(await grepTree(contentLocation, password)).toEqual([]);
      expect(await grepTree(t.workingArea, password)).toEqual([]);
      expect(logLines.join('')).not.toContain(password);
    });

    it('credentials in the URL are used, but not written to .git/config', async () => {
      const remote = `${privateServer.url.replace('http://', `http://alice:${password}@`)}/repo.git`;
      const { contentLocation } = await init(gitSpec({ remoteUri: remote }));
      expect(git(contentLocation, 'remote', 'get-url', 'origin')).toBe(`${privateServer.url}/repo.git`);
      expect(await grepTree(t.workingArea, password)).toEqual([]);
      expect(logLines.join('')).not.toContain(password);
    });

    it('a wrong password fails at once with UNAUTHENTICATED (no retries)', async () => {
      const before = privateServer.unauthorized;
      const error = await errorOf(
        init(gitSpec({ remoteUri: `${privateServer.url}/repo.git`, config: basic('alice', 'wrong-password') })),
      );
      expect(isWorkbayError(error, 'unauthenticated')).toBe(true);
      expect(error.message).toMatch(/git authentication failed/);
      expect(error.message).not.toContain('wrong-password');
      expect(privateServer.unauthorized - before).toBeLessThanOrEqual(2); // one attempt: anonymous, then with credentials
    });

    it('no credentials for a private repository: UNAUTHENTICATED', async () => {
      const error = await errorOf(init(gitSpec({ remoteUri: `${privateServer.url}/repo.git` })));
      expect(isWorkbayError(error, 'unauthenticated')).toBe(true);
    });

    it('one-time secret: fetched once, then used for the clone', async () => {
      const ots = await startOtsServer(`alice:${password}`);
      try {
        const { contentLocation } = await init(
          gitSpec({
            remoteUri: `${privateServer.url}/repo.git`,
            config: { customConfig: {}, authentication: 2, authUser: '', authPassword: '', authOts: ots.url },
          }),
        );
        expect(git(contentLocation, 'rev-parse', 'HEAD')).toBe(repo.commits['main']);
        expect(ots.fetches()).toBe(1);
        expect(await grepTree(t.workingArea, password)).toEqual([]);
        expect(logLines.join('')).not.toContain(password);
      } finally {
        await ots.close();
      }
    });

    it('retries transient failures with backoff, and stops on access denied', async () => {
      publicServer.failNext(2);
      const { contentLocation } = await init(gitSpec({ remoteUri: `${publicServer.url}/repo.git` }));
      expect(git(contentLocation, 'rev-parse', 'HEAD')).toBe(repo.commits['main']);
      expect(logLines.some((line) => line.includes('git clone failed, retrying'))).toBe(true);
      const served = publicServer.served;
      const missing = await errorOf(init(gitSpec({ remoteUri: `${publicServer.url}/does-not-exist.git` })));
      expect(isWorkbayError(missing, 'failed-precondition')).toBe(true);
      expect(publicServer.served - served).toBeLessThanOrEqual(1);
    });

    it('a remote where nothing listens fails at once, not after every retry (red team round 15, G7)', async () => {
      const closed = await new Promise<number>((resolve) => {
        const probe = createNetServer().listen(0, '127.0.0.1', () => {
          const { port } = probe.address() as AddressInfo;
          probe.close(() => resolve(port));
        });
      });
      logLines.length = 0;
      const error = await errorOf(init(gitSpec({ remoteUri: `http://127.0.0.1:${closed}/repo.git` })));
      expect(isWorkbayError(error, 'failed-precondition')).toBe(true);
      expect(error.message).toMatch(/cannot reach .*Connection refused/);
      expect(logLines.some((line) => line.includes('git clone failed, retrying'))).toBe(false);
    });
  });

  describe('prebuild, composite, download', () => {
    let fileServer: Server;
    let fileUrl: string;
    const payload = Buffer.from('downloaded content\n');
    const digest = `sha256:${createHash('sha256').update(payload).digest('hex')}`;

    beforeAll(async () => {
      fileServer = createServer((req, res) => {
        if (req.url === '/file.txt') res.writeHead(200).end(payload);
        else res.writeHead(404).end();
      });
      await new Promise<void>((resolve) => fileServer.listen(0, '127.0.0.1', () => resolve()));
      fileUrl = `http://127.0.0.1:${(fileServer.address() as AddressInfo).port}`;
    });
    afterAll(async () => {
      fileServer.closeAllConnections();
      await new Promise((resolve) => fileServer.close(resolve));
    });

    it('prebuild: restores the snapshot, then moves git to the target keeping local changes (stash/pop)', async () => {
      const sourceId = nextId();
      const prebuild = await init(gitSpec({ fullClone: true }), sourceId);
      await writeFile(join(prebuild.contentLocation, 'build-output.bin'), 'compiled');
      await writeFile(join(prebuild.contentLocation, 'src/app.txt'), 'app\nprebuild tweak\n');
      const { url } = await t.client.takeSnapshot({ id: sourceId });
      const newer = await repo.commit('main', { 'later.txt': 'pushed after the prebuild\n' });
      const { contentLocation, contentSource, initializerMetrics } = await init({
        spec: {
          $case: 'prebuild',
          value: {
            prebuild: { snapshot: url, fromVolumeSnapshot: false },
            git: [{ remoteUri: repo.url, targetMode: 2, cloneTaget: 'main' } as contentservice.GitInitializer],
          },
        },
      });
      expect(initializerMetrics.map((m) => m.type)).toEqual(['snapshot', 'git', 'prebuild']);
      expect(contentSource).toBe('from-other'); // HEAD moved to the newer commit
      expect(git(contentLocation, 'rev-parse', 'HEAD')).toBe(newer);
      expect(await readFile(join(contentLocation, 'build-output.bin'), 'utf8')).toBe('compiled');
      expect(await readFile(join(contentLocation, 'src/app.txt'), 'utf8')).toBe('app\nprebuild tweak\n');
      expect(await readFile(join(contentLocation, 'later.txt'), 'utf8')).toBe('pushed after the prebuild\n');
    });

    it('prebuild: newer commits that bring what no archive holds are refused, as a clone of them is (R2)', async () => {
      // Red team round 11 R2: the prebuild's checkout was moved to the new commits without the checkout check.
      const pb = await createRepo(repos.path, 'prebuild-r2');
      const sourceId = nextId();
      await init(
        { spec: { $case: 'git', value: { remoteUri: pb.url, fullClone: true } as contentservice.GitInitializer } },
        sourceId,
      );
      const { url } = await t.client.takeSnapshot({ id: sourceId });
      // 14 directories of 250 bytes and a 220-byte file: 3,734 bytes, past the 3,584 an archive holds.
      await pb.commit('feature', { [`${'e'.repeat(250)}/`.repeat(14) + 'g'.repeat(220)]: 'x' });
      const error = await errorOf(
        init({
          spec: {
            $case: 'prebuild',
            value: {
              prebuild: { snapshot: url, fromVolumeSnapshot: false },
              git: [{ remoteUri: pb.url, targetMode: 2, cloneTaget: 'feature' } as contentservice.GitInitializer],
            },
          },
        }),
      );
      expect(isWorkbayError(error, 'failed-precondition'), String(error)).toBe(true);
      expect((error as Error).message).toMatch(/^the repository's checkout cannot be backed up: /);
      expect((error as Error).message).toMatch(/\(3734 characters\)\); it cannot be archived: shorten it$/);
    });

    it('prebuild: a missing snapshot falls back to the git initializers', async () => {
      const { contentLocation, contentSource, initializerMetrics } = await init({
        spec: {
          $case: 'prebuild',
          value: {
            prebuild: { snapshot: 'workspaces/gone/snapshot-1.tar@workbay-user-tester', fromVolumeSnapshot: false },
            git: [{ remoteUri: repo.url, targetMode: 2, cloneTaget: 'feature' } as contentservice.GitInitializer],
          },
        },
      });
      expect(contentSource).toBe('from-other');
      expect(initializerMetrics.map((m) => m.type)).toEqual(['git', 'prebuild']);
      expect(git(contentLocation, 'rev-parse', '--abbrev-ref', 'HEAD')).toBe('feature');
    });

    it('composite: runs children in order and sums their metrics; download verifies digests and makes parents', async () => {
      const { contentLocation, initializerMetrics } = await init({
        spec: {
          $case: 'composite',
          value: {
            initializer: [
              gitSpec({ checkoutLocation: 'repo' }),
              {
                spec: {
                  $case: 'download',
                  value: {
                    targetLocation: 'tools',
                    files: [{ url: `${fileUrl}/file.txt`, filePath: 'bin/deep/file.txt', digest }],
                  },
                },
              },
              { spec: { $case: 'empty', value: {} } },
            ],
          },
        },
      });
      expect(initializerMetrics.map((m) => m.type)).toEqual(['git', 'file_download', 'empty', 'composite']);
      const sum = initializerMetrics.slice(0, 3).reduce((total, m) => total + m.size, 0);
      expect(initializerMetrics[3]!.size).toBe(sum);
      expect(initializerMetrics[1]!.size).toBe(payload.length);
      expect(await readFile(join(contentLocation, 'tools/bin/deep/file.txt'))).toEqual(payload);
      expect(await readFile(join(contentLocation, 'repo/README.md'), 'utf8')).toBe('# hello\n');
    });

    it('download: a wrong digest, a 404 or a path outside the workspace fail clearly', async () => {
      const download = (file: Record<string, string>): contentservice.WorkspaceInitializer => ({
        spec: {
          $case: 'download',
          value: {
            targetLocation: '',
            files: [{ url: `${fileUrl}/file.txt`, filePath: 'f.txt', digest, ...file } as never],
          },
        },
      });
      const wrong = await errorOf(init(download({ digest: `sha256:${'0'.repeat(64)}` })));
      expect(isWorkbayError(wrong, 'failed-precondition')).toBe(true);
      expect(wrong.message).toMatch(
        /initializer\.download\.files\[0\]\.digest: the downloaded content does not match the expected digest/,
      );
      // The actual digest would let a requester read back what any URL answers (red-team finding 4).
      expect(wrong.message).not.toContain(digest.slice('sha256:'.length));
      const missing = await errorOf(init(download({ url: `${fileUrl}/nope` })));
      expect(isWorkbayError(missing, 'not-found')).toBe(true);
      const escape = await errorOf(init(download({ filePath: '../../etc/evil' })));
      expect((escape as InvalidArgumentError).field).toBe('initializer.download.files[0].file_path');
      const malformed = await errorOf(init(download({ digest: 'md5:abc' })));
      expect((malformed as InvalidArgumentError).field).toBe('initializer.download.files[0].digest');
    });

    it('download: a daemon with the default download policy refuses 127.0.0.1 (INVALID_ARGUMENT naming the url)', async () => {
      const strict = await startTestDaemon({ config: { initializer: { download: { allowPrivateAddresses: false } } } });
      try {
        const error = await errorOf(
          strict.client.initWorkspace({
            id: 'strict-1',
            metadata: { owner: 'tester', metaId: 'meta-strict-1' },
            initializer: {
              spec: {
                $case: 'download',
                value: { targetLocation: '', files: [{ url: `${fileUrl}/file.txt`, filePath: 'f.txt', digest }] },
              },
            },
          }),
        );
        expect(isWorkbayError(error, 'invalid-argument')).toBe(true);
        expect((error as InvalidArgumentError).field).toBe('initializer.download.files[0].url');
        expect(error.message).toMatch(/127\.0\.0\.1 is not an allowed address/);
      } finally {
        await strict.cleanup();
      }
    });

    it('writes through no symlink an earlier step created (composite git + download)', async () => {
      const evil = await createRepo(repos.path, 'evil');
      const work = join(repos.path, 'evil-work');
      const { symlinkSync } = await import('node:fs');
      symlinkSync('/tmp', join(work, 'link'));
      git(work, 'add', '.');
      git(work, 'commit', '-q', '-m', 'add a symlink');
      git(work, 'push', '-q', evil.bare, 'main:main');
      const error = await errorOf(
        init({
          spec: {
            $case: 'composite',
            value: {
              initializer: [
                { spec: { $case: 'git', value: { remoteUri: evil.url } as contentservice.GitInitializer } },
                {
                  spec: {
                    $case: 'download',
                    value: {
                      targetLocation: 'link',
                      files: [{ url: `${fileUrl}/file.txt`, filePath: 'planted.txt', digest }],
                    },
                  },
                },
              ],
            },
          },
        }),
      );
      expect(isWorkbayError(error, 'invalid-argument')).toBe(true);
      expect(error.message).toMatch(/symlink/);
      await expect(access('/tmp/planted.txt')).rejects.toThrow();
    });
  });
});
