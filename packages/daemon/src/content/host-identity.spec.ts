/**
 * The workspace's host identity (isolation contract; the allocation itself: session/host-ids.spec.ts): persistence across restarts, and real
 * ownership of everything in the content; plus a daemon start whose recovery of a workspace fails (issue 9).
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmod, lstat, mkdir, mkdtemp, readFile, readdir, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { contentservice } from '@workbay/api';
import { isWorkbayError } from '@workbay/api';
import { parseDaemonConfig } from '../config.js';
import { startTestDaemon } from '../test-support/daemon-harness.js';
import type { TestDaemon } from '../test-support/daemon-harness.js';
import { ownTree } from '../util/own-tree.js';
import { errorOf } from '../test-support/outcomes.js';

const isRoot = process.getuid?.() === 0;
const empty: contentservice.WorkspaceInitializer = { spec: { $case: 'empty', value: {} } };
const range = { base: 300_000, count: 3 };

/** Every entry below `root` (the root included) whose owner is not `id`. */
async function foreignOwned(root: string, id: number): Promise<string[]> {
  const out: string[] = [];
  const visit = async (path: string, name: string): Promise<void> => {
    const info = await lstat(path);
    if (info.uid !== id || info.gid !== id) out.push(`${name} (${info.uid}:${info.gid})`);
    if (info.isDirectory()) for (const child of await readdir(path)) await visit(join(path, child), `${name}/${child}`);
  };
  await visit(root, '.');
  return out;
}

function errorOfSync(fn: () => unknown): unknown {
  try {
    fn();
    return undefined;
  } catch (error) {
    return error;
  }
}

describe('config', () => {
  it('has the workspace id range and the restore policy, with defaults, and names a bad key', () => {
    const config = parseDaemonConfig({});
    expect(config.workspaceIds).toEqual({
      base: 200_000,
      count: 65_536,
      shared: false,
      claimsDir: '/var/lib/workbay/host-ids',
    });
    expect(config.restore.allowSpecialFiles).toBe(false);
    const bad = errorOfSync(() => parseDaemonConfig({ workspaceIds: { base: 2 ** 31 - 10, count: 100 } }));
    expect(isWorkbayError(bad, 'invalid-argument')).toBe(true);
    expect((bad as Error).message).toMatch(/workspaceIds/);
  });
});

describe('ownTree', () => {
  it.runIf(isRoot)('gives every entry the owner with lchown and never follows a link out', async () => {
    const work = await mkdtemp(join(tmpdir(), 'workbay-own-tree-'));
    try {
      const root = join(work, 'content');
      const outside = join(work, 'outside');
      await mkdir(join(root, 'a/b'), { recursive: true });
      await mkdir(outside);
      await writeFile(join(outside, 'secret'), 'host');
      await writeFile(join(root, 'a/b/file'), 'x');
      await symlink(outside, join(root, 'dir-link'));
      await symlink(join(outside, 'secret'), join(root, 'a/file-link'));
      await writeFile(join(root, 'suid'), '#!/bin/sh\n', { mode: 0o755 });
      await chmod(join(root, 'suid'), 0o4755);
      const result = await ownTree(root, 201_999, 201_999);
      expect(result.changed).toBe(result.entries);
      expect(await foreignOwned(root, 201_999)).toEqual([]);
      expect((await stat(join(outside, 'secret'))).uid).toBe(0);
      expect((await stat(outside)).uid).toBe(0);
      // The kernel drops setuid on a chown: a root-owned setuid file cannot become a workspace-owned one.
      expect((await stat(join(root, 'suid'))).mode & 0o7000).toBe(0);
      expect((await ownTree(root, 201_999, 201_999)).changed).toBe(0);
    } finally {
      await rm(work, { recursive: true, force: true });
    }
  });
});

describe.runIf(isRoot)('workspace host identity (daemon as root)', () => {
  let root: string;
  let t: TestDaemon;
  const payload = Buffer.from('downloaded\n');
  const server = createServer((_request, response) => response.end(payload));
  let fileUrl: string;

  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), 'workbay-host-identity-'));
    await chmod(root, 0o755);
    t = await startTestDaemon({ root, config: { workspaceIds: range } });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    fileUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}/file`;
  });
  afterAll(async () => {
    server.close();
    await t.cleanup();
  });

  const hostUser = async (id: string): Promise<{ uid: number; gid: number }> =>
    (
      JSON.parse(await readFile(join(t.workingArea, `${id}.workspace.json`), 'utf8')) as {
        hostUser: { uid: number; gid: number };
      }
    ).hostUser;

  it('gives each workspace its own id from the range, owns its content with it, and keeps it across a restart', async () => {
    const digest = `sha256:${createHash('sha256').update(payload).digest('hex')}`;
    const first = await t.client.initWorkspace({
      id: 'own-1',
      metadata: { owner: 'alice', metaId: 'ws-own-1' },
      initializer: {
        spec: {
          $case: 'download',
          value: { targetLocation: 'bin', files: [{ url: fileUrl, filePath: 'tool', digest }] },
        },
      },
    });
    const user = await hostUser('own-1');
    expect(user.uid).toBe(user.gid);
    expect(user.uid).toBeGreaterThanOrEqual(range.base);
    expect(user.uid).toBeLessThan(range.base + range.count);
    expect((await stat(first.contentLocation)).uid).toBe(user.uid);
    expect(await foreignOwned(first.contentLocation, user.uid)).toEqual([]);

    // Content the archive says root owns, a set-id file and a planted `.workbay` link, through a snapshot.
    const outside = join(root, 'outside');
    await mkdir(outside);
    await writeFile(join(first.contentLocation, 'root-owned'), 'r');
    execFileSync('chown', ['0:0', join(first.contentLocation, 'root-owned')]);
    await rm(join(first.contentLocation, '.workbay'), { recursive: true });
    await symlink(outside, join(first.contentLocation, '.workbay'));
    const snapshot = (await t.client.takeSnapshot({ id: 'own-1' })).url;
    const second = await t.client.initWorkspace({
      id: 'own-2',
      metadata: { owner: 'alice', metaId: 'ws-own-2' },
      initializer: { spec: { $case: 'snapshot', value: { snapshot, fromVolumeSnapshot: false } } },
    });
    const other = await hostUser('own-2');
    expect(other.uid).not.toBe(user.uid);
    expect(await foreignOwned(second.contentLocation, other.uid)).toEqual([]);
    expect(await readFile(join(second.contentLocation, 'root-owned'), 'utf8')).toBe('r');
    // The marker went into a real directory, not through the planted link.
    expect((await lstat(join(second.contentLocation, '.workbay'))).isDirectory()).toBe(true);
    expect(await readdir(outside)).toEqual([]);

    // Restart: the ids stay, and a new workspace gets the one id left.
    await t.stop();
    t = await startTestDaemon({ root, config: { workspaceIds: range } });
    expect(t.daemon.service.describe('own-1')?.hostUser).toEqual(user);
    expect(t.daemon.service.describe('own-2')?.hostUser).toEqual(other);
    await t.client.initWorkspace({ id: 'own-3', metadata: { owner: 'alice', metaId: 'ws-own-3' }, initializer: empty });
    const third = await hostUser('own-3');
    expect([user.uid, other.uid]).not.toContain(third.uid);

    // The range is used up: RESOURCE_EXHAUSTED, and the refused workspace leaves no trace.
    const full = await errorOf(
      t.client.initWorkspace({ id: 'own-4', metadata: { owner: 'alice', metaId: 'ws-own-4' }, initializer: empty }),
    );
    expect(isWorkbayError(full, 'resource-exhausted'), full.message).toBe(true);
    expect((await t.client.isWorkspaceExists({ id: 'own-4' })).exists).toBe(false);
    expect(await readdir(t.workingArea)).not.toContain('own-4');

    // Disposal frees the id.
    await t.client.disposeWorkspace({ id: 'own-1', backup: false });
    await t.client.initWorkspace({ id: 'own-4', metadata: { owner: 'alice', metaId: 'ws-own-4' }, initializer: empty });
    expect((await hostUser('own-4')).uid).toBe(user.uid);
  });

  it('a workspace whose recovery fails at start is not registered; its content and state wait for the next start', async () => {
    await t.client
      .initWorkspace({ id: 'rec-1', metadata: { owner: 'alice', metaId: 'ws-rec-1' }, initializer: empty })
      .catch(async () => {
        // The range may be full from the previous test: make room.
        await t.client.disposeWorkspace({ id: 'own-2', backup: false });
        await t.client.initWorkspace({
          id: 'rec-1',
          metadata: { owner: 'alice', metaId: 'ws-rec-1' },
          initializer: empty,
        });
      });
    await t.stop();
    // A crash during the final backup: recovery must persist the workspace back to ready, and cannot.
    const statePath = join(t.workingArea, 'rec-1.workspace.json');
    const state = JSON.parse(await readFile(statePath, 'utf8')) as Record<string, unknown>;
    await writeFile(statePath, JSON.stringify({ ...state, phase: 'disposing' }));
    execFileSync('chattr', ['+i', statePath]);
    try {
      t = await startTestDaemon({ root, config: { workspaceIds: range } });
      expect((await t.client.isWorkspaceExists({ id: 'rec-1' })).exists).toBe(false);
      expect(isWorkbayError(await errorOf(t.client.disposeWorkspace({ id: 'rec-1', backup: true })), 'not-found')).toBe(
        true,
      );
      expect(t.daemon.service.getWorkspaces().map((w) => w.instanceId)).not.toContain('rec-1');
      // Housekeeping leaves the unrecovered content alone, however old.
      await t.daemon.service.housekeeping(Date.now() + 365 * 24 * 3600 * 1000);
      expect((await stat(join(t.workingArea, 'rec-1'))).isDirectory()).toBe(true);
      await t.stop();
    } finally {
      execFileSync('chattr', ['-i', statePath]);
    }
    t = await startTestDaemon({ root, config: { workspaceIds: range } });
    expect((await t.client.isWorkspaceExists({ id: 'rec-1' })).exists).toBe(true);
    expect(t.daemon.service.describe('rec-1')?.phase).toBe('ready');
  });
});

describe.runIf(isRoot)(
  'one shared workspace id (daemon as root, for runtimes that run every workspace as one uid)',
  () => {
    it("owns every workspace's content with it, so that pods running as that uid can write it", async () => {
      const root = await mkdtemp(join(tmpdir(), 'workbay-shared-id-'));
      await chmod(root, 0o755);
      const t = await startTestDaemon({ root, config: { workspaceIds: { base: 33333, count: 1, shared: true } } });
      try {
        const empty = { spec: { $case: 'empty' as const, value: {} } };
        const a = await t.client.initWorkspace({
          id: 'sh-1',
          metadata: { owner: 'a', metaId: 'm1' },
          initializer: empty,
        });
        const b = await t.client.initWorkspace({
          id: 'sh-2',
          metadata: { owner: 'b', metaId: 'm2' },
          initializer: empty,
        });
        expect((await stat(a.contentLocation)).uid).toBe(33333);
        expect((await stat(b.contentLocation)).uid).toBe(33333);
        expect(t.daemon.service.describe('sh-2')?.hostUser).toEqual({ uid: 33333, gid: 33333 });
        await t.client.disposeWorkspace({ id: 'sh-1', backup: false, backupLogs: false });
        const c = await t.client.initWorkspace({
          id: 'sh-3',
          metadata: { owner: 'c', metaId: 'm3' },
          initializer: empty,
        });
        expect((await stat(c.contentLocation)).uid).toBe(33333);
      } finally {
        await t.cleanup();
        await rm(root, { recursive: true, force: true });
      }
    });
  },
);

describe.runIf(isRoot)('restore from a backup (daemon as root)', () => {
  it('writes every restored entry as the workspace user, so no ownership walk follows', async () => {
    const root = await mkdtemp(join(tmpdir(), 'workbay-restore-owner-'));
    await chmod(root, 0o755);
    const t = await startTestDaemon({ root, config: { workspaceIds: { base: 310_000, count: 4 } } });
    try {
      const metadata = { owner: 'alice', metaId: 'ws-restore-owner' };
      const first = await t.client.initWorkspace({ id: 'ro-1', metadata, initializer: empty });
      await mkdir(join(first.contentLocation, 'deep/er/dir'), { recursive: true });
      await writeFile(join(first.contentLocation, 'deep/er/dir/file'), 'x');
      await writeFile(join(first.contentLocation, 'root-owned'), 'r');
      execFileSync('chown', ['0:0', join(first.contentLocation, 'root-owned'), join(first.contentLocation, 'deep')]);
      await t.client.disposeWorkspace({ id: 'ro-1', backup: true });

      const second = await t.client.initWorkspace({ id: 'ro-2', metadata, initializer: empty });
      const user = (
        JSON.parse(await readFile(join(t.workingArea, 'ro-2.workspace.json'), 'utf8')) as {
          hostUser: { uid: number };
        }
      ).hostUser;
      expect(await readFile(join(second.contentLocation, 'deep/er/dir/file'), 'utf8')).toBe('x');
      expect(await foreignOwned(second.contentLocation, user.uid)).toEqual([]);
    } finally {
      await t.cleanup();
    }
  });
});

describe.runIf(isRoot)('two daemons on one node (daemons as root)', () => {
  it("never give workspaces of different owners the same host uid, and one daemon's freed id serves the other", async () => {
    const root = await mkdtemp(join(tmpdir(), 'workbay-two-daemons-'));
    await chmod(root, 0o755);
    // Both with the same range and the same (here private) claims directory, as two instances on a node would be.
    const workspaceIds = { base: 320_000, count: 2, claimsDir: join(root, 'claims') };
    const roots = [join(root, 'one'), join(root, 'two')];
    for (const dir of roots) await mkdir(dir, { mode: 0o755 });
    const [one, two] = [
      await startTestDaemon({ root: roots[0]!, config: { workspaceIds } }),
      await startTestDaemon({ root: roots[1]!, config: { workspaceIds } }),
    ];
    try {
      const a = await one.client.initWorkspace({
        id: 'a',
        metadata: { owner: 'mallory', metaId: 'a' },
        initializer: empty,
      });
      const b = await two.client.initWorkspace({
        id: 'b',
        metadata: { owner: 'bob', metaId: 'b' },
        initializer: empty,
      });
      const [uidA, uidB] = [(await stat(a.contentLocation)).uid, (await stat(b.contentLocation)).uid];
      expect(new Set([uidA, uidB])).toEqual(new Set([320_000, 320_001]));
      // The range is used up across both daemons.
      const refused = await errorOf(
        two.client.initWorkspace({ id: 'c', metadata: { owner: 'carol', metaId: 'c' }, initializer: empty }),
      );
      expect(isWorkbayError(refused, 'resource-exhausted')).toBe(true);
      await one.client.disposeWorkspace({ id: 'a', backup: false });
      const c = await two.client.initWorkspace({
        id: 'c',
        metadata: { owner: 'carol', metaId: 'c' },
        initializer: empty,
      });
      expect((await stat(c.contentLocation)).uid).toBe(uidA);
    } finally {
      await one.cleanup();
      await two.cleanup();
      await rm(root, { recursive: true, force: true });
    }
  });
});
