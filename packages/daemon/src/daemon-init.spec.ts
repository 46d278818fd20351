// InitWorkspace and WaitForInit over gRPC: initializers, input validation and failed initializations.
import { createHash } from 'node:crypto';
import { mkdir, readFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { isWorkbayError } from '@workbay/api';
import type { InvalidArgumentError } from '@workbay/api';
import { execFileSync } from 'node:child_process';
import { daemonWithRepo, exists, expectError } from './test-support/daemon-suite.js';

describe('daemon over gRPC', () => {
  const { t, gitInit } = daemonWithRepo();

  it('initializes an empty workspace: content location, ready marker, metrics, existence', async () => {
    const response = await t.client.initWorkspace({
      id: 'empty-1',
      metadata: { owner: 'alice', metaId: 'ws-empty-1' },
      initializer: { spec: { $case: 'empty', value: {} } },
    });
    expect(response.contentLocation).toBe(join(t.workingArea, 'empty-1'));
    expect(response.contentSource).toBe('from-other');
    expect(response.initializerMetrics.map((m) => m.type)).toEqual(['empty']);
    const marker = JSON.parse(await readFile(join(response.contentLocation, '.workbay/ready'), 'utf8'));
    expect(marker).toMatchObject({ source: 'from-other', metrics: [{ type: 'empty' }] });
    expect((await t.client.isWorkspaceExists({ id: 'empty-1' })).exists).toBe(true);
    expect((await t.client.isWorkspaceExists({ id: 'nope' })).exists).toBe(false);
    await t.client.waitForInit({ id: 'empty-1' });
    await expectError(
      t.client.initWorkspace({
        id: 'empty-1',
        metadata: { owner: 'alice', metaId: 'ws-empty-1' },
        initializer: { spec: { $case: 'empty', value: {} } },
      }),
      'already-exists',
    );
    // The same id for another owner's workspace, or another workspace of the owner, is not handed this content (red
    // team round 9: content kept after a failed disposal ran another owner's workspace, its snapshots in the first
    // owner's storage).
    for (const metadata of [
      { owner: 'eve', metaId: 'ws-empty-1' },
      { owner: 'alice', metaId: 'ws-other' },
    ]) {
      const error = await t.client
        .initWorkspace({ id: 'empty-1', metadata, initializer: { spec: { $case: 'empty', value: {} } } })
        .catch((e: unknown) => e);
      expect(isWorkbayError(error, 'permission-denied'), String(error)).toBe(true);
      expect((error as Error).message).toMatch(/holds another workspace's content/);
      // Its owner is told which of its workspaces it is (to resume it); another owner is not.
      if (metadata.owner === 'alice') expect((error as Error).message).toContain("(your workspace 'ws-empty-1')");
      else expect((error as Error).message).not.toContain('ws-empty-1');
    }
    const state = JSON.parse(await readFile(join(t.workingArea, 'empty-1.workspace.json'), 'utf8'));
    expect(state.phase).toBe('ready');
    expect(state.owner).toBe('alice');
  });

  it('fails the initialization when the in-workspace service cannot be served, and records it failed, not ready', async () => {
    // The hook runs beside the durable `ready` write: its failure must still win. A read-only mount over the
    // daemon's `.iws` directory makes serving the socket fail for real (root, as CI runs).
    const iws = join(t.workingArea, '.iws');
    await mkdir(iws, { recursive: true });
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'ro,size=1m', 'tmpfs', iws]);
    try {
      await expectError(
        t.client.initWorkspace({
          id: 'no-iws-1',
          metadata: { owner: 'alice', metaId: 'ws-no-iws-1' },
          initializer: { spec: { $case: 'empty', value: {} } },
        }),
        'internal',
      );
    } finally {
      execFileSync('umount', [iws]);
    }
    const state = JSON.parse(await readFile(join(t.workingArea, 'no-iws-1.workspace.json'), 'utf8'));
    expect(state.phase).toBe('init-failed');
    expect(state.failure).toMatch(/read-only|EROFS/i);
    await expect(t.client.waitForInit({ id: 'no-iws-1' })).rejects.toThrow();
  });

  it('rejects bad input with INVALID_ARGUMENT naming the field, and changes nothing', async () => {
    const field = async (request: Record<string, unknown>): Promise<string> =>
      ((await expectError(t.client.initWorkspace(request), 'invalid-argument')) as InvalidArgumentError).field;
    expect(
      await field({ metadata: { owner: 'a', metaId: 'b' }, initializer: { spec: { $case: 'empty', value: {} } } }),
    ).toBe('id');
    expect(await field({ id: 'x1', metadata: { owner: 'a', metaId: 'b' } })).toBe('initializer');
    expect(await field({ id: 'x2', initializer: { spec: { $case: 'empty', value: {} } } })).toBe('metadata.owner');
    expect(
      await field({
        id: '../etc',
        metadata: { owner: 'a', metaId: 'b' },
        initializer: { spec: { $case: 'empty', value: {} } },
      }),
    ).toBe('id');
    expect(
      await field({
        id: 'x3',
        metadata: { owner: 'a', metaId: 'b' },
        initializer: {
          spec: {
            $case: 'composite',
            value: {
              initializer: [
                { spec: { $case: 'empty', value: {} } },
                gitInit({ targetMode: 2, cloneTaget: 'bad branch' }),
              ],
            },
          },
        },
      }),
    ).toBe('initializer.composite.initializer[1].git.clone_taget');
    expect(
      await field({
        id: 'x4',
        metadata: { owner: 'a', metaId: 'b' },
        initializer: { spec: { $case: 'snapshot', value: { snapshot: 'no-at-sign' } } },
      }),
    ).toBe('initializer.snapshot.snapshot');
    expect(
      await field({
        id: 'x5',
        metadata: { owner: 'a', metaId: 'b' },
        initializer: gitInit({ checkoutLocation: '../escape' }),
      }),
    ).toBe('initializer.git.checkout_location');
    for (const id of ['x1', 'x2', 'x3', 'x4']) expect((await t.client.isWorkspaceExists({ id })).exists).toBe(false);
    await expectError(t.client.waitForInit({ id: 'never-heard-of' }), 'not-found');
    await expectError(t.client.backupWorkspace({ id: 'never-heard-of' }), 'not-found');
    await expectError(t.client.disposeWorkspace({ id: 'never-heard-of', backup: true }), 'not-found');
  });

  it('fails loudly with "no backup found" for a backup initializer without a backup', async () => {
    await expectError(
      t.client.initWorkspace({
        id: 'nb-1',
        metadata: { owner: 'carol', metaId: 'ws-never-backed-up' },
        initializer: { spec: { $case: 'backup', value: {} } },
      }),
      'not-found',
      /no backup found/,
    );
    // The workspace is in a known state: it exists, init failed, WaitForInit says so, dispose cleans up.
    expect((await t.client.isWorkspaceExists({ id: 'nb-1' })).exists).toBe(true);
    await expectError(t.client.waitForInit({ id: 'nb-1' }), 'not-found', /no backup found/);
    await expectError(t.client.backupWorkspace({ id: 'nb-1' }), 'failed-precondition', /initialization failed/);
    expect(await t.client.disposeWorkspace({ id: 'nb-1', backup: true })).toEqual({});
    expect((await t.client.isWorkspaceExists({ id: 'nb-1' })).exists).toBe(false);
  });

  it('WaitForInit waits while a workspace initializes (from the first moment it exists) and reports a failed init', async () => {
    // A download whose response the test holds back: the initialization lasts until the gate opens.
    const payload = Buffer.from('slowly downloaded\n');
    let requested = 0;
    const held: ServerResponse[] = [];
    const server = createServer((req, res) => {
      requested++;
      held.push(res);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/file`;
    const release = (): void => {
      for (const res of held.splice(0)) res.writeHead(200).end(payload);
    };
    const download = (digest: string) => ({
      spec: {
        $case: 'download' as const,
        value: { targetLocation: '', files: [{ url, filePath: 'slow.txt', digest }] },
      },
    });
    const digest = `sha256:${createHash('sha256').update(payload).digest('hex')}`;
    try {
      const marker = join(t.workingArea, 'slow-1', '.workbay/ready');
      const init = t.client.initWorkspace({
        id: 'slow-1',
        metadata: { owner: 'gina', metaId: 'ws-slow' },
        initializer: download(digest),
      });
      // WaitForInit from the moment InitWorkspace is sent until the download is under way: each call either
      // precedes the workspace (NOT_FOUND) or waits for its content; none may answer before the marker exists.
      const answered: { ok: boolean; markerExisted?: boolean }[] = [];
      const waits: Promise<void>[] = [];
      const wait = (): Promise<void> =>
        t.client.waitForInit({ id: 'slow-1' }).then(
          async () => {
            answered.push({ ok: true, markerExisted: await exists(marker) });
          },
          (error: unknown) => {
            expect(isWorkbayError(error, 'not-found'), String(error)).toBe(true);
            answered.push({ ok: false });
          },
        );
      for (let i = 0; requested === 0 && i < 5000; i++) {
        waits.push(wait());
        await new Promise((resolve) => setImmediate(resolve));
      }
      expect(requested).toBe(1);
      const late = wait();
      await new Promise((resolve) => setTimeout(resolve, 100));
      expect(answered.filter((a) => a.ok)).toEqual([]);
      expect(await exists(marker)).toBe(false);
      release();
      await Promise.all([init, late, ...waits]);
      expect(answered.filter((a) => a.ok).length).toBeGreaterThan(0);
      for (const a of answered) if (a.ok) expect(a.markerExisted).toBe(true);
      expect(await readFile(join(t.workingArea, 'slow-1', 'slow.txt'), 'utf8')).toBe('slowly downloaded\n');

      // A failing initialization: WaitForInit during it reports the failure.
      const failing = t.client
        .initWorkspace({
          id: 'slow-2',
          metadata: { owner: 'gina', metaId: 'ws-slow-2' },
          initializer: download(`sha256:${'0'.repeat(64)}`),
        })
        .catch((e: unknown) => e);
      while (!(await t.client.isWorkspaceExists({ id: 'slow-2' })).exists);
      const failedWait = expectError(t.client.waitForInit({ id: 'slow-2' }), 'failed-precondition', /digest/);
      while (requested < 2) await new Promise((resolve) => setTimeout(resolve, 5));
      release();
      await failedWait;
      expect(isWorkbayError(await failing, 'failed-precondition')).toBe(true);
      await expectError(t.client.waitForInit({ id: 'slow-2' }), 'failed-precondition', /digest/);
      for (const id of ['slow-1', 'slow-2']) await t.client.disposeWorkspace({ id, backup: false });
    } finally {
      release();
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    }
  });
});
