/**
 * SSH keys through the real manager, daemon and git (invariant 10): a repository that ships `.ssh` as a link to a
 * host directory fails the start loudly (conditions.failed), and a running workspace that turns `.ssh` into a
 * link gets UpdateSSHKey refused; the host directory is untouched either way.
 */
import { mkdir, mkdtemp, readFile, readdir, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FailedPreconditionError } from '@workbay/api';
import { startTestGitServer } from '../test-support/git-http.js';
import type { TestGitServer } from '../test-support/git-http.js';
import { startHarness, startRequest, waitForPhase, waitForStatus } from '../test-support/harness.js';
import type { Harness } from '../test-support/harness.js';

const key = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGv6Zm9vYmFyYmF6cXV1eHF1dXhxdXV4cXV1eHF1dXhx test@example';

describe('SSH keys never follow links out of the content', () => {
  let h: Harness;
  let victim: string;
  let git: TestGitServer;
  beforeAll(async () => {
    h = await startHarness();
    victim = await mkdtemp(join(tmpdir(), 'workbay-victim-ssh-'));
    await writeFile(join(victim, 'authorized_keys'), 'host key\n');
    git = await startTestGitServer();
    await git.createRepo('repo', { 'README.md': 'hi\n', '.ssh': { symlink: victim } });
  });
  afterAll(async () => {
    await h?.close();
    await git?.close();
    await rm(victim, { recursive: true, force: true });
  });

  const untouched = async (): Promise<void> => {
    expect(await readdir(victim)).toEqual(['authorized_keys']);
    expect(await readFile(join(victim, 'authorized_keys'), 'utf8')).toBe('host key\n');
  };

  it('a repository with .ssh linked to a host directory fails the start, naming the reason', async () => {
    const request = startRequest({
      initializer: {
        spec: {
          $case: 'git',
          value: {
            remoteUri: git.urlFor('repo'),
            upstreamRemoteUri: '',
            targetMode: 0,
            cloneTaget: 'main',
            checkoutLocation: '',
            config: undefined,
            fullClone: false,
          },
        },
      },
      spec: { sshPublicKeys: [key] },
    });
    await h.client.startWorkspace(request);
    const status = await waitForStatus(h.client, request.id, (s) => s.conditions?.failed !== '', 60_000);
    expect(status.conditions?.failed).toMatch(/SSH keys.*\.ssh is a symbolic link/);
    await waitForPhase(h.client, request.id, 'stopped', 60_000);
    await untouched();
  });

  it('UpdateSSHKey through a link the running workspace made is refused, and the host stays untouched', async () => {
    const request = startRequest({ image: 'test/echo', spec: { sshPublicKeys: [key] } });
    await h.client.startWorkspace(request);
    await waitForPhase(h.client, request.id, 'running', 60_000);
    // What the workspace's own code would do: swap its .ssh for a link to the host's.
    const content = join(h.dir, 'workspaces', request.id);
    await rm(join(content, '.ssh'), { recursive: true, force: true });
    await symlink(victim, join(content, '.ssh'));
    await expect(h.client.updateSshKey({ id: request.id, keys: [key] })).rejects.toBeInstanceOf(
      FailedPreconditionError,
    );
    await untouched();
    // With a real directory again, updates work.
    await rm(join(content, '.ssh'));
    await mkdir(join(content, '.ssh'));
    await h.client.updateSshKey({ id: request.id, keys: [key] });
    expect(await readFile(join(content, '.ssh', 'authorized_keys'), 'utf8')).toBe(`${key}\n`);
    await h.client.stopWorkspace({ id: request.id, policy: 0 });
    await waitForPhase(h.client, request.id, 'stopped', 60_000);
  });
});
