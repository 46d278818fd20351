/**
 * The git runner itself, with real git: who git runs as, what environment and config it sees, and that hostile
 * content cannot make it hang or look elsewhere.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { chmod, chown, lstat, mkdir, readFile, symlink, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createRepo, git as testGit, scratch } from '../test-support/git-server.js';
import type { TestRepo } from '../test-support/git-server.js';
import { UnsafeRepositoryError } from './config-guard.js';
import { Git } from './git.js';
import { gitStatus } from './git-status.js';

const isRoot = process.getuid?.() === 0;
const user = { uid: 200_777, gid: 200_777 };

describe('Git (real git)', () => {
  let root: Awaited<ReturnType<typeof scratch>>;
  let repo: TestRepo;
  let markers: string;
  let git: Git;

  beforeAll(async () => {
    root = await scratch('workbay-git-runner-');
    repo = await createRepo(root.path, 'repo', { 'notes.txt': 'notes\n' });
    markers = join(root.path, 'markers');
    await mkdir(markers);
    await chmod(markers, 0o1777);
    git = new Git(join(root.path, 'tmp'), {
      allowLocalRemotes: true,
      localCommandTimeoutMs: 5_000,
      addresses: { allowedNetworks: ['127.0.0.1/32'] },
    });
  });
  afterAll(async () => {
    await root.cleanup();
  });

  const content = async (name: string, owner = user): Promise<string> => {
    const dir = join(root.path, name);
    await mkdir(dir);
    if (isRoot) await chown(dir, owner.uid, owner.gid);
    return dir;
  };
  const clone = async (dir: string): Promise<void> => {
    await git.run(['clone', '--quiet', '--', repo.url, '.'], { cwd: dir, newRepository: true, contentRoot: dir });
  };

  it.runIf(isRoot)('clones as the content owner, and git on existing content runs as its owner too', async () => {
    const dir = await content('owned');
    await clone(dir);
    // Files git created belong to the user it ran as.
    expect((await lstat(join(dir, '.git', 'HEAD'))).uid).toBe(user.uid);
    expect((await lstat(join(dir, 'README.md'))).uid).toBe(user.uid);
    // A stale index is rewritten by status: the new file is the running user's.
    await utimes(join(dir, 'notes.txt'), new Date(2001, 1, 1), new Date(2001, 1, 1));
    await chown(join(dir, '.git', 'index'), 0, 0);
    const status = await gitStatus(git, dir, dir);
    expect(status?.branch).toBe('main');
    expect((await lstat(join(dir, '.git', 'index'))).uid).toBe(user.uid);
  });

  it.runIf(isRoot)('ssh remotes work for a workspace uid that has no passwd entry of its own', async () => {
    const dir = await content('ssh-user');
    // Port 1 refuses at once: what matters is that ssh got as far as connecting (it exits early for a uid it
    // cannot look up: "No user exists for uid"), through the egress proxy's connect helper, run as that user.
    // The operator's GIT_SSH_COMMAND is not used (it could connect around the proxy).
    const result = await git.tryRun(['ls-remote', 'ssh://git@127.0.0.1:1/nothing.git'], {
      cwd: dir,
      newRepository: true,
      contentRoot: dir,
      env: { GIT_SSH_COMMAND: 'ssh -o BatchMode=yes -o StrictHostKeyChecking=no -o ConnectTimeout=5' },
    });
    expect(result.code).not.toBe(0);
    expect(result.stderr).not.toMatch(/No user exists/);
    expect(result.stderr).toMatch(/egress proxy could not connect to 127\.0\.0\.1:1 \(502\)/);
  });

  it.runIf(isRoot)('git as the user cannot read what the user cannot (a 0700 root directory)', async () => {
    const dir = await content('reader');
    const secret = join(root.path, 'root-only');
    await mkdir(secret, { mode: 0o700 });
    const hidden = await createRepo(secret, 'hidden');
    const error = await git
      .run(['clone', '--quiet', '--', hidden.url, '.'], { cwd: dir, newRepository: true, contentRoot: dir })
      .catch((e: unknown) => e as Error);
    expect(error).toBeInstanceOf(Error);
  });

  it('reads no system, global or user config, and nothing from the daemon environment', async () => {
    const saved = { ...process.env };
    try {
      process.env['GIT_CONFIG_PARAMETERS'] = `'core.fsmonitor'='${join(markers, 'x')}'`;
      process.env['GIT_CONFIG_COUNT'] = '1';
      process.env['GIT_CONFIG_KEY_0'] = 'alias.status';
      process.env['GIT_CONFIG_VALUE_0'] = '!touch /nonexistent';
      process.env['GIT_DIR'] = join(repo.bare);
      const list = await git.run(['config', '--list', '--show-origin', '--show-scope'], {});
      expect(list).not.toMatch(/^system|\/etc\/gitconfig|\.gitconfig|fsmonitor=\/|alias\.status/m);
      expect(list).toMatch(/^command\s.*core\.hookspath=\/dev\/null$/m);
      expect(list).toMatch(/^command\s.*protocol\.ext\.allow=never$/m);
    } finally {
      process.env = saved;
    }
  });

  it('refuses .git symlinks, gitdir files, commondir and symlinked checkout directories', async () => {
    const dir = await content('links');
    await clone(dir);
    const link = join(dir, 'sub');
    await symlink(dir, link);
    await expect(git.run(['status'], { cwd: link, contentRoot: dir })).rejects.toThrow(UnsafeRepositoryError);
    const gitdirFile = await content('gitdir-file');
    await writeFile(join(gitdirFile, '.git'), `gitdir: ${join(dir, '.git')}\n`);
    await expect(gitStatus(git, gitdirFile, gitdirFile)).rejects.toThrow(/gitdir/);
    const linked = await content('git-link');
    await symlink(join(dir, '.git'), join(linked, '.git'));
    await expect(gitStatus(git, linked, linked)).rejects.toThrow(/symlink/);
    await writeFile(join(dir, '.git', 'commondir'), '/etc\n');
    await expect(gitStatus(git, dir, dir)).rejects.toThrow(/commondir/);
  });

  it('content the daemon owns itself: git runs as the daemon, with the same neutralised config', async () => {
    const dir = await content('daemon-owned', { uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0 });
    await clone(dir);
    const marker = join(markers, 'daemon-owned-fsmonitor');
    testGit(dir, 'config', 'core.fsmonitor', `touch ${marker}; false`);
    await writeFile(join(dir, 'README.md'), 'changed\n');
    const status = await gitStatus(git, dir, dir);
    expect(status?.uncommittedFiles).toEqual(['README.md']);
    expect(spawnSync('test', ['-e', marker]).status).toBe(1);
  });

  it("reads submodule gitdirs' config too: neutralised, or refused when it includes other files", async () => {
    const dir = await content('modules');
    await clone(dir);
    const module = join(dir, '.git', 'modules', 'lib', 'nested');
    await mkdir(module, { recursive: true });
    await writeFile(join(module, 'HEAD'), 'ref: refs/heads/main\n');
    await writeFile(join(module, 'config'), '[filter "x"]\n\tclean = touch /nonexistent\n');
    expect((await gitStatus(git, dir, dir))?.branch).toBe('main');
    await writeFile(join(module, 'config'), '[include]\n\tpath = /etc/gitconfig\n');
    await expect(gitStatus(git, dir, dir)).rejects.toThrow(/includes other files/);
  });

  it('a FIFO included from the repository config cannot hold git forever', async () => {
    const dir = await content('fifo');
    await clone(dir);
    execFileSync('mkfifo', [join(dir, 'block')]);
    testGit(dir, 'config', 'include.path', '../block');
    await expect(
      gitStatus(new Git(join(root.path, 'tmp'), { localCommandTimeoutMs: 1_000 }), dir, dir),
    ).rejects.toThrow(/timed out/);
  });

  it('keeps the credentials out of the content and out of its private directory', async () => {
    const dir = await content('askpass');
    await git.run(['clone', '--quiet', '--', repo.url, '.'], {
      cwd: dir,
      newRepository: true,
      contentRoot: dir,
      credentials: { username: 'alice', password: 'pass-never-written' },
    });
    expect(await readFile(join(dir, '.git', 'config'), 'utf8')).not.toContain('pass-never-written');
    // grep exits 1 when nothing matches (and 2 for a missing directory, which is fine as well).
    const grep = spawnSync('grep', ['-rl', 'pass-never-written', dir, join(root.path, 'tmp')], { encoding: 'utf8' });
    expect(grep.stdout.trim()).toBe('');
  });
});
