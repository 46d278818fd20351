import { execFileSync } from 'node:child_process';
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { UnavailableError, createWorkspaceManagerClient, workspaceConditionBool, wsman } from '@workbay/api';
import type { WorkspaceManagerClient } from '@workbay/api';
import { resolveDaemonBin, startEmbedded } from '../embedded.js';
import type { EmbeddedHandle } from '../embedded.js';
import { createSilentLogger } from '../logger.js';
import { startRequest, waitForPhase } from '../test-support/harness.js';

/**
 * The embedded setup with the REAL daemon (`@workbay/daemon`'s bin as a child process, talked to over gRPC):
 * content initialization, final backups, restore from backup, snapshots and Git status all come from it.
 */
describe('startEmbedded: manager + real daemon', () => {
  let dir: string;
  let handle: EmbeddedHandle;
  let client: WorkspaceManagerClient;
  let repo: string;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'workbay-embedded-'));
    // A root daemon clones as the workspace's host user: the file:// repository below must be reachable by it.
    await chmod(dir, 0o755);
    const daemonConfig = join(dir, 'daemon.yaml');
    // No loop-device quotas and no disk guard: this test is about the manager.
    await writeFile(
      daemonConfig,
      'quota: { mode: none }\ndiskGuard: { minFree: 0 }\nlog: { level: silent }\ngit: { allowLocalRemotes: true }\n',
    );
    // A Git repository to clone from.
    repo = join(dir, 'repo');
    await mkdir(repo);
    const git = (...args: string[]) =>
      execFileSync('git', ['-C', repo, '-c', 'user.name=t', '-c', 'user.email=t@example.com', ...args]);
    git('init', '--quiet', '--initial-branch=main');
    await writeFile(join(repo, 'README.md'), '# hello\n');
    git('add', '.');
    git('commit', '--quiet', '-m', 'initial');
    handle = await startEmbedded({
      logger: createSilentLogger(),
      overrides: {
        stateDir: join(dir, 'manager'),
        workingArea: join(dir, 'workspaces'),
        grpc: { address: '127.0.0.1:0' },
        proxy: { address: '127.0.0.1:0' },
        metrics: { address: '127.0.0.1:0' },
        idePorts: { from: 32000, to: 32999 },
        daemon: {
          address: '127.0.0.1:0',
          httpAddress: 'off',
          storageRoot: join(dir, 'storage'),
          configPath: daemonConfig,
          output: 'ignore',
        },
        runtime: { kind: 'local', isolation: 'none', cgroups: 'off', readiness: { intervalMs: 50 } },
        log: { level: 'silent' },
      },
    });
    client = createWorkspaceManagerClient(handle.managerAddress, { defaultTimeoutMs: 30_000 });
  });
  afterAll(async () => {
    client?.close();
    if (handle) {
      for (const record of handle.manager.core.listWorkspaces()) {
        await handle.manager.runtime.stop(record.id, { gracePeriodMs: 0 }).catch(() => undefined);
      }
      await handle.stop();
    }
    await rm(dir, { recursive: true, force: true });
  });

  it('finds the installed daemon bin', () => {
    expect(resolveDaemonBin()).toMatch(/daemon[/\\]dist[/\\]cli[/\\]main\.js$/);
  });

  it('clones with the daemon, backs up on stop (with Git status) and restores the backup on the next start', async () => {
    const first = startRequest({
      metaId: 'project-x',
      initializer: {
        spec: {
          $case: 'git',
          value: {
            remoteUri: `file://${repo}`,
            upstreamRemoteUri: '',
            targetMode: 0,
            cloneTaget: 'main',
            checkoutLocation: 'project',
            fullClone: false,
          },
        },
      },
    });
    await client.startWorkspace(first);
    await waitForPhase(client, first.id, 'running', 60_000);
    const contentDir = join(dir, 'workspaces', first.id);
    expect(await readFile(join(contentDir, 'project', 'README.md'), 'utf8')).toBe('# hello\n');
    await writeFile(join(contentDir, 'project', 'work.txt'), 'uncommitted work');
    await client.stopWorkspace({ id: first.id, policy: wsman.StopWorkspacePolicy.NORMALLY });
    const stopped = await waitForPhase(client, first.id, 'stopped', 60_000);
    expect(stopped.conditions!.failed).toBe('');
    expect(workspaceConditionBool.fromProto(stopped.conditions!.finalBackupComplete)).toBe(true);
    expect(stopped.repo?.branch).toBe('main');
    expect(stopped.repo?.latestCommit).toMatch(/^[0-9a-f]{40}$/);
    expect(stopped.repo?.untrackedFiles).toContain('work.txt');

    // Same workspace (meta id), new instance: the backup comes back, not a fresh clone.
    const second = startRequest({ metaId: 'project-x', initializer: first.spec!.initializer });
    await client.startWorkspace(second);
    await waitForPhase(client, second.id, 'running', 60_000);
    expect(await readFile(join(dir, 'workspaces', second.id, 'project', 'work.txt'), 'utf8')).toBe('uncommitted work');

    // A snapshot seeds a new workspace.
    const { url } = await client.takeSnapshot({ id: second.id });
    expect(url).toMatch(/^workspaces\/project-x\/snapshot-\d+\.tar@/);
    const third = startRequest({
      initializer: { spec: { $case: 'snapshot', value: { snapshot: url, fromVolumeSnapshot: false } } },
    });
    await client.startWorkspace(third);
    await waitForPhase(client, third.id, 'running', 60_000);
    expect(await readFile(join(dir, 'workspaces', third.id, 'project', 'work.txt'), 'utf8')).toBe('uncommitted work');

    for (const id of [second.id, third.id]) {
      await client.stopWorkspace({ id, policy: wsman.StopWorkspacePolicy.ABORT });
      await waitForPhase(client, id, 'stopped', 60_000);
    }
  });

  it('a failing initializer ends in STOPPED with the daemon’s reason', async () => {
    const request = startRequest({
      initializer: {
        spec: {
          $case: 'snapshot',
          value: { snapshot: 'workspaces/nope/snapshot-1.tar@workbay-user-alice', fromVolumeSnapshot: false },
        },
      },
    });
    await client.startWorkspace(request);
    const stopped = await waitForPhase(client, request.id, 'stopped', 60_000);
    expect(stopped.conditions!.failed).toMatch(/^Content initialization failed: /);
  });
});

describe('startEmbedded: errors', () => {
  it('says clearly when the daemon cannot be started', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'workbay-embedded-'));
    const error = await startEmbedded({
      logger: createSilentLogger(),
      overrides: {
        stateDir: join(dir, 'manager'),
        daemon: { command: [join(dir, 'no-such-daemon')], output: 'ignore', startTimeout: '5s' },
        log: { level: 'silent' },
      },
    }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(UnavailableError);
    expect((error as Error).message).toMatch(/cannot start the workspace daemon/);
    await rm(dir, { recursive: true, force: true });
  });
});
