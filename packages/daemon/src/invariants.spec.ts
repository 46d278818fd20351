/**
 * The "nothing is lost" invariants of the architecture brief, each against a real daemon over gRPC.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, readdir, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { ObjectInfo, RemoteStorage, UploadOptions } from '@workbay/api';
import { createWorkspaceContentClient, isWorkbayError } from '@workbay/api';
import { FsRemoteStorage } from './storage/fs-storage.js';
import { startChildDaemon } from './test-support/child-daemon.js';
import { startTestDaemon, testConfig } from './test-support/daemon-harness.js';
import type { TestDaemon } from './test-support/daemon-harness.js';
import { describeTree, tempDir } from './test-support/tree.js';
import { exists, errorOf } from './test-support/outcomes.js';

const empty = { spec: { $case: 'empty' as const, value: {} } };

/** Name → digest of every object in a bucket: to show a backup was not touched. */
async function objects(storage: RemoteStorage, bucket: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for await (const info of storage.list(bucket)) out[info.name] = info.digest ?? '';
  return out;
}

async function writeRandomFiles(dir: string, count: number, size: number, prefix = 'f'): Promise<void> {
  await mkdir(dir, { recursive: true });
  for (let i = 0; i < count; i++) await writeFile(join(dir, `${prefix}${i}.bin`), randomBytes(size));
}

const skipReady = { skip: (p: string) => p === '.workbay/ready' };

describe('invariants', () => {
  let work: Awaited<ReturnType<typeof tempDir>>;
  const daemons: TestDaemon[] = [];
  beforeEach(async () => {
    work = await tempDir('workbay-invariants-');
  });
  afterEach(async () => {
    for (const d of daemons.splice(0)) await d.stop();
    execFileSync('sh', ['-c', `chattr -R -i ${work.path} 2>/dev/null || true`]);
    await work.cleanup();
  });
  const start = async (config: Parameters<typeof startTestDaemon>[0] = {}): Promise<TestDaemon> => {
    const d = await startTestDaemon({ root: work.path, ...config });
    daemons.push(d);
    return d;
  };

  it('never backs up a directory that was never initialized (and never creates a backup for it)', async () => {
    const t = await start();
    const failed = await errorOf(
      t.client.initWorkspace({
        id: 'bad-init',
        metadata: { owner: 'o1', metaId: 'm-bad' },
        initializer: { spec: { $case: 'git', value: { remoteUri: `file://${work.path}/no-such-repo.git` } as never } },
      }),
    );
    // A missing repository: FAILED_PRECONDITION (red team round 15, G8: PERMISSION_DENIED kept the content).
    expect(isWorkbayError(failed, 'failed-precondition')).toBe(true);
    const refused = await errorOf(t.client.backupWorkspace({ id: 'bad-init' }));
    expect(isWorkbayError(refused, 'failed-precondition')).toBe(true);
    expect(refused.message).toMatch(/not initialized/);
    expect(await t.client.disposeWorkspace({ id: 'bad-init', backup: true })).toEqual({});
    expect(await t.daemon.service.backupStore?.find({ owner: 'o1', workspaceId: 'm-bad' })).toBeUndefined();
  });

  it('records completion before deleting, and never backs up a half-deleted directory', async () => {
    const t = await start();
    const { contentLocation } = await t.client.initWorkspace({
      id: 'del-1',
      metadata: { owner: 'o2', metaId: 'm-del' },
      initializer: empty,
    });
    await writeRandomFiles(join(contentLocation, 'data'), 5, 10_000);
    await writeFile(join(contentLocation, 'stuck'), 'cannot be deleted');
    execFileSync('chattr', ['+i', join(contentLocation, 'stuck')]);
    const storage = t.daemon.storage as RemoteStorage;
    // Deletion fails half-way (the immutable file), after the final backup.
    const error = await errorOf(t.client.disposeWorkspace({ id: 'del-1', backup: true }));
    expect(error.message).not.toBe('');
    const state = JSON.parse(await readFile(join(t.workingArea, 'del-1.workspace.json'), 'utf8'));
    expect(state.phase).toBe('deleting');
    expect(state.disposal.backup.url).toMatch(/full\.manifest@workbay-user-o2$/);
    const stored = await objects(storage, 'workbay-user-o2');
    // A half-deleted workspace is never backed up again.
    const refused = await errorOf(t.client.backupWorkspace({ id: 'del-1' }));
    expect(isWorkbayError(refused, 'failed-precondition')).toBe(true);
    expect(refused.message).toMatch(/being deleted/);
    // Not even by a restart (which resumes the deletion).
    await t.stop();
    const again = await start();
    await sleep(300);
    expect(await objects(storage, 'workbay-user-o2')).toEqual(stored);
    execFileSync('chattr', ['-i', join(contentLocation, 'stuck')]);
    // Dispose completes now, and answers with the recorded outcome.
    await again.client.disposeWorkspace({ id: 'del-1', backup: true });
    expect(await exists(contentLocation)).toBe(false);
    expect(await objects(storage, 'workbay-user-o2')).toEqual(stored);
    const restored = await again.client.initWorkspace({
      id: 'del-2',
      metadata: { owner: 'o2', metaId: 'm-del' },
      initializer: empty,
    });
    expect(restored.contentSource).toBe('from-backup');
    expect((await readdir(join(restored.contentLocation, 'data'))).length).toBe(5);
  });

  it('never replaces a good backup with an emptied directory', async () => {
    const t = await start();
    const { contentLocation } = await t.client.initWorkspace({
      id: 'emptied',
      metadata: { owner: 'o10', metaId: 'm-emptied' },
      initializer: empty,
    });
    await writeRandomFiles(contentLocation, 3, 10_000);
    await t.client.backupWorkspace({ id: 'emptied' });
    const storage = t.daemon.storage as RemoteStorage;
    const stored = await objects(storage, 'workbay-user-o10');
    for (const name of await readdir(contentLocation)) await rm(join(contentLocation, name), { recursive: true });
    const error = await errorOf(t.client.backupWorkspace({ id: 'emptied' }));
    expect(isWorkbayError(error, 'failed-precondition')).toBe(true);
    expect(error.message).toMatch(/empty and its ready marker is gone/);
    expect(await objects(storage, 'workbay-user-o10')).toEqual(stored);
  });

  it('backup and dispose are idempotent', async () => {
    const t = await start();
    const { contentLocation } = await t.client.initWorkspace({
      id: 'idem',
      metadata: { owner: 'o3', metaId: 'm-idem' },
      initializer: empty,
    });
    await writeRandomFiles(contentLocation, 3, 50_000);
    await sleep(300);
    expect(t.daemon.service.describe('idem')?.lastBackup).toBeUndefined(); // period 0: no periodic backups
    const first = await t.client.backupWorkspace({ id: 'idem' });
    const second = await t.client.backupWorkspace({ id: 'idem' });
    expect(second.url).toBe(first.url);
    const state = t.daemon.service.describe('idem');
    expect(state?.lastBackup?.uploadedBytes).toBeLessThan(10_000); // only the manifest
    const disposed = await t.client.disposeWorkspace({ id: 'idem', backup: true });
    const repeated = await t.client.disposeWorkspace({ id: 'idem', backup: true });
    expect(repeated).toEqual(disposed);
    // Concurrent disposes of one workspace: one does the work, both answer the same.
    await t.client.initWorkspace({ id: 'idem-2', metadata: { owner: 'o3', metaId: 'm-idem-2' }, initializer: empty });
    const [a, b] = await Promise.all([
      t.client.disposeWorkspace({ id: 'idem-2', backup: true }),
      t.client.disposeWorkspace({ id: 'idem-2', backup: true }),
    ]);
    expect(a).toEqual(b);
  });

  it('bounds concurrent backups (semaphore) and retries failed ones with backoff', async () => {
    const real = new FsRemoteStorage({ root: join(work.path, 'storage') });
    const active = new Map<string, number>();
    let maxWorkspaces = 0;
    let failuresLeft = 2;
    const storage: RemoteStorage = Object.assign(Object.create(real) as RemoteStorage, {
      upload: async (bucket: string, name: string, body: Readable, options?: UploadOptions): Promise<ObjectInfo> => {
        const workspace = name.split('/')[1] as string;
        active.set(workspace, (active.get(workspace) ?? 0) + 1);
        maxWorkspaces = Math.max(maxWorkspaces, [...active.values()].filter((v) => v > 0).length);
        try {
          await sleep(100);
          if (name.endsWith('full.manifest') && failuresLeft > 0) {
            failuresLeft--;
            body.destroy();
            throw new Error('connection reset by peer');
          }
          return await real.upload(bucket, name, body, options);
        } finally {
          active.set(workspace, (active.get(workspace) ?? 1) - 1);
        }
      },
    });
    const t = await start({
      config: { backup: { concurrency: 2, attempts: 3, initialBackoff: '20ms' } },
      overrides: { storage },
    });
    const ids = ['c1', 'c2', 'c3', 'c4', 'c5'];
    for (const id of ids) {
      const { contentLocation } = await t.client.initWorkspace({
        id,
        metadata: { owner: 'o4', metaId: `m-${id}` },
        initializer: empty,
      });
      await writeRandomFiles(contentLocation, 2, 20_000);
    }
    const results = await Promise.all(ids.map((id) => t.client.backupWorkspace({ id })));
    expect(results.every((r) => r.url.endsWith('full.manifest@workbay-user-o4'))).toBe(true);
    expect(maxWorkspaces).toBeLessThanOrEqual(2);
    expect(maxWorkspaces).toBe(2);
    const metrics = await t.daemon.metrics.registry.getSingleMetricAsString('workbay_daemon_backup_retries_total');
    expect(metrics).toMatch(/workbay_daemon_backup_retries_total\{reason="explicit"\} 2/);
    await real.close();
  });

  it("shares the backup slots between owners: one owner's backups never hold them all", async () => {
    const real = new FsRemoteStorage({ root: join(work.path, 'storage') });
    let openGate: () => void = () => undefined;
    const gate = new Promise<void>((resolve) => (openGate = resolve));
    const mallorysActive = new Set<string>();
    const storage: RemoteStorage = Object.assign(Object.create(real) as RemoteStorage, {
      upload: async (bucket: string, name: string, body: Readable, options?: UploadOptions): Promise<ObjectInfo> => {
        if (bucket.endsWith('-mallory')) {
          // mallory's backups take as long as the test says (content that takes minutes to read, in the attack).
          mallorysActive.add(name.split('/')[1] as string);
          await gate;
        }
        return real.upload(bucket, name, body, options);
      },
    });
    const t = await start({ config: { backup: { concurrency: 3 } }, overrides: { storage } });
    const init = (id: string, owner: string) =>
      t.client.initWorkspace({ id, metadata: { owner, metaId: `m-${id}` }, initializer: empty });
    for (const id of ['m1', 'm2', 'm3']) await writeRandomFiles((await init(id, 'mallory')).contentLocation, 2, 1000);
    await writeRandomFiles((await init('a1', 'alice')).contentLocation, 2, 1000);
    const mallorys = ['m1', 'm2', 'm3'].map((id) => t.client.backupWorkspace({ id }));
    const deadline = Date.now() + 10_000;
    while (mallorysActive.size < 2 && Date.now() < deadline) await sleep(20);
    await sleep(200);
    // Two of three slots are mallory's (all but one, the default); the third waits for alice.
    expect(mallorysActive.size).toBe(2);
    const alices = await t.client.backupWorkspace({ id: 'a1' });
    expect(alices.url).toMatch(/@workbay-user-alice$/);
    openGate();
    await Promise.all(mallorys);
    expect(mallorysActive.size).toBe(3);
  });

  it('a backup that keeps failing is UNAVAILABLE, keeps the content, and dispose can be retried', async () => {
    const real = new FsRemoteStorage({ root: join(work.path, 'storage') });
    let broken = true;
    const storage: RemoteStorage = Object.assign(Object.create(real) as RemoteStorage, {
      upload: async (bucket: string, name: string, body: Readable, options?: UploadOptions): Promise<ObjectInfo> => {
        if (broken) {
          body.destroy();
          throw new Error('storage is down');
        }
        return real.upload(bucket, name, body, options);
      },
    });
    const t = await start({ config: { backup: { attempts: 2, initialBackoff: '10ms' } }, overrides: { storage } });
    const { contentLocation } = await t.client.initWorkspace({
      id: 'down',
      metadata: { owner: 'o5', metaId: 'm-down' },
      initializer: empty,
    });
    await writeFile(join(contentLocation, 'precious.txt'), 'do not lose me');
    const error = await errorOf(t.client.disposeWorkspace({ id: 'down', backup: true }));
    expect(isWorkbayError(error, 'unavailable')).toBe(true);
    expect(error.message).toMatch(/storage is down/);
    expect(await readFile(join(contentLocation, 'precious.txt'), 'utf8')).toBe('do not lose me');
    expect(t.daemon.service.describe('down')?.phase).toBe('ready');
    broken = false;
    await t.client.disposeWorkspace({ id: 'down', backup: true });
    const back = await t.client.initWorkspace({
      id: 'down-2',
      metadata: { owner: 'o5', metaId: 'm-down' },
      initializer: empty,
    });
    expect(await readFile(join(back.contentLocation, 'precious.txt'), 'utf8')).toBe('do not lose me');
    await real.close();
  });

  it('after a restart every live workspace is picked up again; an interrupted init is marked failed', async () => {
    const t = await start();
    const { contentLocation } = await t.client.initWorkspace({
      id: 'live',
      metadata: { owner: 'o6', metaId: 'm-live' },
      initializer: empty,
    });
    await writeFile(join(contentLocation, 'work.txt'), 'in progress');
    await t.client.initWorkspace({ id: 'interrupted', metadata: { owner: 'o6', metaId: 'm-int' }, initializer: empty });
    await t.stop();
    // Simulate a crash during initialization of 'interrupted'.
    const statePath = join(t.workingArea, 'interrupted.workspace.json');
    const state = JSON.parse(await readFile(statePath, 'utf8'));
    await writeFile(statePath, JSON.stringify({ ...state, phase: 'initializing' }));

    const restarted = await start();
    expect((await restarted.client.isWorkspaceExists({ id: 'live' })).exists).toBe(true);
    await restarted.client.waitForInit({ id: 'live' });
    const backup = await restarted.client.backupWorkspace({ id: 'live' });
    expect(backup.url).toMatch(/m-live/);
    const waited = await errorOf(restarted.client.waitForInit({ id: 'interrupted' }));
    expect(isWorkbayError(waited, 'failed-precondition')).toBe(true);
    expect(waited.message).toMatch(/restarted while the workspace was initializing/);
    expect(
      isWorkbayError(await errorOf(restarted.client.backupWorkspace({ id: 'interrupted' })), 'failed-precondition'),
    ).toBe(true);
  });

  it('housekeeping removes orphaned directories without state after the orphan age, and nothing else', async () => {
    const t = await start({ config: { housekeeping: { interval: '100ms', orphanAge: '1s' } } });
    const { contentLocation } = await t.client.initWorkspace({
      id: 'kept',
      metadata: { owner: 'o7', metaId: 'm-kept' },
      initializer: empty,
    });
    const old = join(t.workingArea, 'orphan-old');
    const fresh = join(t.workingArea, 'orphan-fresh');
    await writeRandomFiles(old, 2, 100);
    await writeRandomFiles(fresh, 2, 100);
    const twoHoursAgo = Date.now() / 1000 - 7200;
    await utimes(old, twoHoursAgo, twoHoursAgo);
    await utimes(contentLocation, twoHoursAgo, twoHoursAgo);
    for (let i = 0; i < 50 && (await exists(old)); i++) await sleep(100);
    expect(await exists(old)).toBe(false);
    expect(await exists(fresh)).toBe(true);
    expect(await exists(contentLocation)).toBe(true);
    const metrics = await t.daemon.metrics.registry.getSingleMetricAsString(
      'workbay_daemon_housekeeping_removed_total',
    );
    expect(metrics).toMatch(/kind="directory"\} [1-9]/);
  });

  it('periodic backups run while the workspace runs', async () => {
    const t = await start({ config: { backup: { period: '300ms' } } });
    const { contentLocation } = await t.client.initWorkspace({
      id: 'periodic',
      metadata: { owner: 'o8', metaId: 'm-periodic' },
      initializer: empty,
    });
    await writeFile(join(contentLocation, 'v.txt'), 'one');
    const backupAfter = async (since: string | undefined): Promise<string> => {
      for (let i = 0; i < 100; i++) {
        const at = t.daemon.service.describe('periodic')?.lastBackup?.at;
        if (at && at !== since) return at;
        await sleep(50);
      }
      throw new Error('no periodic backup');
    };
    const first = await backupAfter(undefined);
    await writeFile(join(contentLocation, 'v.txt'), 'two');
    await sleep(2100); // let the change leave the racy window of the quick check
    await backupAfter(await backupAfter(first));
    // A crash now loses at most one period: the backup has the change.
    const target = join(work.path, 'restored');
    await mkdir(target);
    await t.daemon.service.backupStore?.restore(target, { owner: 'o8', workspaceId: 'm-periodic' });
    expect(await readFile(join(target, 'v.txt'), 'utf8')).toBe('two');
    await t.client.disposeWorkspace({ id: 'periodic', backup: false });
  });

  for (const format of ['chunked', 'tar'] as const) {
    it(`SIGKILL during a backup upload: after a restart the previous backup comes back byte-identical (${format})`, async () => {
      const config = testConfig(work.path, { backup: { format, packSize: '1MiB', uploadConcurrency: 1 } });
      const child = await startChildDaemon(work.path, config);
      const client = createWorkspaceContentClient(child.address, { defaultTimeoutMs: 60_000 });
      const storage = new FsRemoteStorage({ root: join(work.path, 'storage') });
      try {
        const { contentLocation } = await client.initWorkspace({
          id: 'crash',
          metadata: { owner: 'o9', metaId: 'm-crash' },
          initializer: empty,
        });
        await writeRandomFiles(join(contentLocation, 'v1'), 8, 256 * 1024);
        await writeFile(join(contentLocation, 'version.txt'), 'one');
        await client.backupWorkspace({ id: 'crash' });
        const expected = await describeTree(contentLocation, skipReady);
        const before = await objects(storage, 'workbay-user-o9');

        // A large change, then a backup that is killed while it uploads.
        await writeRandomFiles(join(contentLocation, 'v2'), 60, 1024 * 1024);
        await writeFile(join(contentLocation, 'version.txt'), 'two');
        const bucketDir = join(work.path, 'storage', 'workbay-user-o9', 'workspaces', 'm-crash');
        const oldFiles = new Set(await readdir(bucketDir));
        const pending = client.backupWorkspace({ id: 'crash' }).catch(() => undefined);
        const uploading = async (): Promise<boolean> => {
          if (format === 'tar') {
            for (const name of await readdir(bucketDir)) {
              if (!name.startsWith('full.tar%z') || oldFiles.has(name)) continue;
              const size = (await stat(join(bucketDir, name)).catch(() => undefined))?.size ?? 0;
              if (size > 4 * 1024 * 1024) return true;
            }
            return false;
          }
          const packs = await readdir(join(bucketDir, 'chunks')).catch(() => [] as string[]);
          return packs.filter((n) => n.endsWith('%o')).length >= Object.keys(before).length + 2;
        };
        for (let i = 0; i < 400 && !(await uploading()); i++) await sleep(25);
        expect(await uploading()).toBe(true);
        await child.kill();
        await pending;

        // The previous backup is still what a restore returns, byte for byte.
        const after = await objects(storage, 'workbay-user-o9');
        const manifestOrTar = format === 'tar' ? 'workspaces/m-crash/full.tar' : 'workspaces/m-crash/full.manifest';
        expect(after[manifestOrTar]).toBe(before[manifestOrTar]);
        const t = await start();
        expect((await t.client.isWorkspaceExists({ id: 'crash' })).exists).toBe(true);
        const restored = await t.client.initWorkspace({
          id: 'crash-restored',
          metadata: { owner: 'o9', metaId: 'm-crash' },
          initializer: empty,
        });
        expect(restored.contentSource).toBe('from-backup');
        // Byte for byte and mode for mode; owned by the new instance's host identity (isolation contract).
        const owner = (await stat(restored.contentLocation)).uid;
        const tree = await describeTree(restored.contentLocation, skipReady);
        expect(tree.map(({ uid: _u, gid: _g, ...rest }) => rest)).toEqual(
          expected.map(({ uid: _u, gid: _g, ...rest }) => rest),
        );
        expect(tree.filter((entry) => entry.uid !== owner || entry.gid !== owner)).toEqual([]);
        // And the surviving workspace backs up fine after the restart (leftovers of the killed upload are swept).
        await t.client.backupWorkspace({ id: 'crash' });
      } finally {
        client.close();
        if (child.process.exitCode === null) await child.kill();
        await storage.close();
      }
    });
  }
});
