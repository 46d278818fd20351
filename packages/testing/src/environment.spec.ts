import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { workspaceConditionBool, workspacePhase, wsman } from '@workbay/api';
import { TestEnvironment } from './environment.js';

describe('TestEnvironment', () => {
  let env: TestEnvironment;

  beforeAll(async () => {
    env = await TestEnvironment.createLocal({
      daemon: { quota: { mode: 'none' } },
      manager: { runtime: { kind: 'local', isolation: 'none', cgroups: 'off', readiness: { intervalMs: 50 } } },
    });
  });
  afterAll(async () => {
    await env?.teardown();
  });

  it('runs a workspace end to end: start, RUNNING on Subscribe, stop with a final backup', async () => {
    const id = `env-${process.pid}`;
    const phases: string[] = [];
    const subscription = env.client
      .subscribe$({ mustMatch: { owner: 'tester', metaId: '', annotations: {} } })
      .subscribe({
        next: (response) => {
          if (response.status?.id === id) phases.push(workspacePhase.fromProto(response.status.phase));
        },
        error: () => undefined,
      });
    try {
      const started = await env.client.startWorkspace(
        wsman.StartWorkspaceRequest.fromPartial({
          id,
          servicePrefix: id,
          metadata: { owner: 'tester', metaId: `meta-${id}`, annotations: {} },
          spec: {
            workspaceImage: 'workbay/default',
            workspaceLocation: 'project',
            initializer: { spec: { $case: 'empty', value: {} } },
          },
        }),
      );
      expect(started.ownerToken).toHaveLength(32);
      await waitFor(() => phases.includes('running'), 30_000);

      // The workspace's content is where the daemon put it, and the workspace process runs in it.
      const { status } = await env.client.describeWorkspace({ id });
      expect(status?.metadata?.owner).toBe('tester');
      await readFile(join(env.directory, 'workspaces', id, '.workbay', 'ready'), 'utf8');

      await env.client.stopWorkspace({ id, policy: wsman.StopWorkspacePolicy.IMMEDIATELY });
      await waitFor(() => phases.includes('stopped'), 30_000);
      const stopped = (await env.client.describeWorkspace({ id })).status!;
      expect(workspaceConditionBool.fromProto(stopped.conditions!.finalBackupComplete)).toBe(true);
      expect(stopped.conditions!.failed).toBe('');
      expect(phases.indexOf('pending')).toBeLessThan(phases.indexOf('running'));
    } finally {
      subscription.unsubscribe();
    }
  });
});

async function waitFor(predicate: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`condition not met within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}
