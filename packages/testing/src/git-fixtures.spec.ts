import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, readlinkSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { GitFixture, GitHttpServer } from './git-fixtures.js';
import { createGitFixture, isolatedGitEnv, startGitHttpServer } from './git-fixtures.js';

const execFileAsync = promisify(execFile);
const git = async (cwd: string, args: string[], env: Record<string, string> = {}): Promise<string> =>
  (await execFileAsync('git', args, { cwd, env: isolatedGitEnv(env) })).stdout;

describe('git fixtures', () => {
  let fixture: GitFixture;
  let scratch: string;

  beforeAll(async () => {
    scratch = mkdtempSync(join(tmpdir(), 'workbay-git-spec-'));
    fixture = await createGitFixture({
      name: 'demo',
      files: {
        'README.md': '# demo\n',
        'bin/run.sh': { content: '#!/bin/sh\necho hi\n', mode: 0o755 },
        link: { symlink: 'README.md' },
        'data.bin': new Uint8Array([0, 1, 2, 255]),
      },
      branches: { feature: { files: { 'feature.txt': 'feature work\n' } }, plain: {} },
      commits: [
        { files: { 'CHANGELOG.md': 'v2\n' }, message: 'Second', tag: 'v2' },
        { files: { 'data.bin': null }, message: 'Drop data' },
      ],
    });
  });
  afterAll(async () => {
    await fixture.cleanup();
    rmSync(scratch, { recursive: true, force: true });
  });

  it('creates a bare repository with the described history', async () => {
    expect(fixture.path).toBe(join(fixture.root, 'demo.git'));
    expect(fixture.url).toMatch(/^file:\/\/.*\/demo\.git$/);
    expect(fixture.commits).toHaveLength(4);
    expect(fixture.head).toBe(fixture.commits[3]);
    expect(fixture.tags['v2']).toBe(fixture.commits[2]);
    expect(fixture.branches['plain']).toBe(fixture.commits[0]);
    const refs = await git(fixture.path, ['for-each-ref', '--format=%(refname) %(objectname)']);
    expect(refs).toContain(`refs/heads/main ${fixture.head}`);
    expect(refs).toContain(`refs/heads/feature ${fixture.branches['feature']}`);
    expect(refs).toContain(`refs/tags/v2 ${fixture.tags['v2']}`);
  });

  it('clones over file:// with files, modes and symlinks intact', async () => {
    const dest = join(scratch, 'clone');
    await git(scratch, ['clone', '--quiet', fixture.url, dest]);
    expect(readFileSync(join(dest, 'README.md'), 'utf8')).toBe('# demo\n');
    expect(statSync(join(dest, 'bin/run.sh')).mode & 0o111).not.toBe(0);
    expect(readlinkSync(join(dest, 'link'))).toBe('README.md');
    expect(() => statSync(join(dest, 'data.bin'))).toThrow();
    expect((await git(dest, ['rev-parse', 'HEAD'])).trim()).toBe(fixture.head);
    await git(dest, ['checkout', '--quiet', 'feature']);
    expect(readFileSync(join(dest, 'feature.txt'), 'utf8')).toBe('feature work\n');
  });

  it('adds commits after creation', async () => {
    const sha = await fixture.commit({ files: { 'later.txt': 'later\n' }, branch: 'feature' });
    expect(fixture.branches['feature']).toBe(sha);
    const tip = (await git(fixture.path, ['rev-parse', 'refs/heads/feature'])).trim();
    expect(tip).toBe(sha);
  });
});

describe('git smart-HTTP server', () => {
  let fixture: GitFixture;
  let open: GitHttpServer;
  let locked: GitHttpServer;
  let scratch: string;

  beforeAll(async () => {
    scratch = mkdtempSync(join(tmpdir(), 'workbay-git-http-spec-'));
    fixture = await createGitFixture({ name: 'served', files: { 'hello.txt': 'hello\n' } });
    open = await startGitHttpServer({ repoRoot: fixture.root });
    locked = await startGitHttpServer({ repoRoot: fixture.root, auth: { user: 'alice', password: 's3cret' } });
  });
  afterAll(async () => {
    await open.stop();
    await locked.stop();
    await fixture.cleanup();
    rmSync(scratch, { recursive: true, force: true });
  });

  it('clones without auth', async () => {
    const dest = join(scratch, 'open');
    await git(scratch, ['clone', '--quiet', open.urlFor('served'), dest]);
    expect(readFileSync(join(dest, 'hello.txt'), 'utf8')).toBe('hello\n');
  });

  it('clones with protocol v2 and shallow depth', async () => {
    const dest = join(scratch, 'shallow');
    await git(scratch, ['-c', 'protocol.version=2', 'clone', '--quiet', '--depth=1', open.urlFor('served'), dest]);
    expect((await git(dest, ['rev-parse', 'HEAD'])).trim()).toBe(fixture.head);
  });

  it('refuses a clone without credentials', async () => {
    const dest = join(scratch, 'denied');
    await expect(git(scratch, ['clone', '--quiet', locked.urlFor('served'), dest])).rejects.toThrow(
      /Authentication failed|could not read Username|401/,
    );
    expect(locked.requests.some((r) => !r.authorized)).toBe(true);
  });

  it('refuses wrong credentials and accepts the right ones, then pushes', async () => {
    const bad = new URL(locked.urlFor('served'));
    bad.username = 'alice';
    bad.password = 'wrong';
    await expect(git(scratch, ['clone', '--quiet', bad.href, join(scratch, 'bad')])).rejects.toThrow(
      /Authentication failed/,
    );
    const good = new URL(locked.urlFor('served'));
    good.username = 'alice';
    good.password = 's3cret';
    const dest = join(scratch, 'authed');
    await git(scratch, ['clone', '--quiet', good.href, dest]);
    expect(readFileSync(join(dest, 'hello.txt'), 'utf8')).toBe('hello\n');

    await git(dest, ['commit', '--quiet', '--allow-empty', '-m', 'pushed over http']);
    await git(dest, ['push', '--quiet', 'origin', 'HEAD:refs/heads/pushed']);
    const pushed = (await git(fixture.path, ['log', '-1', '--format=%s', 'refs/heads/pushed'])).trim();
    expect(pushed).toBe('pushed over http');
  });
});
