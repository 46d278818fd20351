/**
 * Snapshot bounds over real gRPC (the real daemon, real fs storage): a workspace's count, an owner's bytes, the
 * owner's snapshots at once, and the reserve a storage on the node's disk keeps for final backups (a real tmpfs
 * of 64 MiB under the storage). A refused snapshot uploads nothing; deleting snapshots makes room again; final
 * backups are never refused.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { contentservice } from '@workbay/api';
import { isWorkbayError } from '@workbay/api';
import { BackupStore } from '../backup/backup-store.js';
import { snapshotHoldings } from '../backup/snapshot-holdings.js';
import type { DaemonConfigInput } from '../config.js';
import { NoDiskQuota } from '../quota/quotas.js';
import type { SessionState } from '../session/session-store.js';
import { FsRemoteStorage } from '../storage/fs-storage.js';
import { startTestDaemon } from '../test-support/daemon-harness.js';
import type { TestDaemon } from '../test-support/daemon-harness.js';
import { errorOf } from '../test-support/outcomes.js';
import { SnapshotBudget } from './snapshot-budget.js';

const empty: contentservice.WorkspaceInitializer = { spec: { $case: 'empty', value: {} } };
const MiB = 1024 * 1024;

/** The snapshot objects of every owner in the daemon's storage, listed through the storage. */
async function snapshotFiles(storageRoot: string): Promise<string[]> {
  const storage = new FsRemoteStorage({ root: storageRoot });
  const found: string[] = [];
  for (const owner of ['alice', 'bob', 'dave']) {
    for await (const info of storage.list(`workbay-user-${owner}`)) {
      if (/snapshot-[0-9]+\.tar$/.test(info.name)) found.push(info.name);
    }
  }
  return found;
}

describe('snapshot bounds', () => {
  let t: TestDaemon | undefined;
  afterEach(async () => {
    await t?.cleanup();
    t = undefined;
  });

  const start = async (snapshots: DaemonConfigInput['snapshots']): Promise<TestDaemon> => {
    t = await startTestDaemon({ config: { snapshots } });
    return t;
  };
  const init = (d: TestDaemon, id: string, owner: string, metaId: string): Promise<unknown> =>
    d.client.initWorkspace({ id, metadata: { owner, metaId }, initializer: empty });

  it('refuses a workspace its snapshot past the count, uploads nothing, and takes one again after a deletion', async () => {
    const d = await start({ maxPerWorkspace: 2 });
    await init(d, 'count-1', 'alice', 'ws-count');
    const first = (await d.client.takeSnapshot({ id: 'count-1' })).url;
    await d.client.takeSnapshot({ id: 'count-1' });
    const refused = await errorOf(d.client.takeSnapshot({ id: 'count-1' }));
    expect(refused.code).toBe('resource-exhausted');
    expect(refused.message).toMatch(/workspace 'ws-count' already has 2 snapshots \(at most 2\); delete some first/);
    expect(await snapshotFiles(d.storageRoot)).toHaveLength(2);

    // Another workspace of the same owner has a count of its own.
    await init(d, 'count-2', 'alice', 'ws-other');
    await d.client.takeSnapshot({ id: 'count-2' });

    await d.client.deleteSnapshot({ snapshot: first });
    await d.client.takeSnapshot({ id: 'count-1' });
    expect(await snapshotFiles(d.storageRoot)).toHaveLength(3);
  });

  it("refuses an owner past its bytes, over all of its workspaces, and leaves other owners' snapshots alone", async () => {
    const d = await start({ maxBytesPerOwner: 3 * MiB });
    await init(d, 'bytes-1', 'alice', 'ws-a1');
    await init(d, 'bytes-2', 'alice', 'ws-a2');
    await init(d, 'bytes-3', 'bob', 'ws-b1');
    await writeFile(join(d.workingArea, 'bytes-1', 'big.bin'), Buffer.alloc(4 * MiB, 1));
    // Below the bound when it starts: the snapshot is taken, and the owner is then past it.
    await d.client.takeSnapshot({ id: 'bytes-1' });
    const refused = await errorOf(d.client.takeSnapshot({ id: 'bytes-2' }));
    expect(refused.code).toBe('resource-exhausted');
    expect(refused.message).toMatch(/owner 'alice' holds [0-9]+ bytes in 1 snapshots \(at most 3145728\)/);
    await d.client.takeSnapshot({ id: 'bytes-3' });
    expect(await snapshotFiles(d.storageRoot)).toHaveLength(2);
  });

  it('bounds the snapshots of one owner being taken at once, and counts the ones other nodes stored', async () => {
    const root = await mkdtemp(join(tmpdir(), 'workbay-snapshot-budget-'));
    try {
      const storage = new FsRemoteStorage({ root: join(root, 'storage') });
      const layout = { mode: 'per-owner' } as const;
      const backups = new BackupStore(storage, layout);
      const content = join(root, 'content');
      await mkdir(content);
      const state = {
        owner: 'carol',
        workspaceId: 'ws-c',
        instanceId: 'c-1',
        contentLocation: content,
      } as unknown as SessionState;
      const budget = new SnapshotBudget(
        { maxPerWorkspace: 1, maxBytesPerOwner: 0, maxTakingPerOwner: 1, storageReserveBytes: 0 },
        backups,
        new NoDiskQuota(),
      );
      const { release, maxBytes } = await budget.admit(state);
      expect(maxBytes).toBeUndefined(); // no reserve to keep
      const busy = await errorOf(budget.admit({ ...state, workspaceId: 'ws-d' }));
      expect(busy.message).toMatch(/1 snapshots of owner 'carol' are being taken on this node \(at most 1 at once\)/);
      release();
      release(); // a second call gives nothing back twice
      // Another node (another daemon on the same storage) stored one for ws-c: it counts here too.
      await backups.snapshot(content, { owner: 'carol', workspaceId: 'ws-c' });
      expect(await snapshotHoldings(storage, layout, { owner: 'carol', workspaceId: 'ws-c' })).toMatchObject({
        ownerSnapshots: 1,
        workspaceSnapshots: 1,
      });
      expect((await errorOf(budget.admit(state))).message).toMatch(/already has 1 snapshots/);
      (await budget.admit({ ...state, workspaceId: 'ws-d' })).release();
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });
});

describe('the storage reserve on the node’s disk (a real 64 MiB tmpfs)', () => {
  let root: string;
  let mounted: string | undefined;
  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), 'workbay-snapshot-reserve-'));
    mounted = join(root, 'storage');
    await mkdir(mounted);
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=64m,mode=0700', 'tmpfs', mounted]);
  });
  afterAll(async () => {
    if (mounted) execFileSync('umount', [mounted]);
    await rm(root, { recursive: true, force: true });
  });
  // Each test starts from an empty storage filesystem and no content beside it.
  beforeEach(async () => {
    for (const dir of [mounted as string, root]) {
      for (const entry of await readdir(dir)) {
        if (join(dir, entry) !== mounted) await rm(join(dir, entry), { recursive: true, force: true });
      }
    }
  });

  it('refuses a snapshot that would leave less than the reserve, and still takes the final backup', async () => {
    const t = await startTestDaemon({ root, config: { snapshots: { storageReserve: '20MiB' } } });
    try {
      await t.client.initWorkspace({ id: 'res-1', metadata: { owner: 'dave', metaId: 'ws-r' }, initializer: empty });
      await writeFile(join(t.workingArea, 'res-1', 'data.bin'), randomBytes(12 * MiB));
      // 64 MiB free; the content 12 MiB, admitted with slack for 29 MiB: taken.
      await t.client.takeSnapshot({ id: 'res-1' });
      // About 52 MiB free now; with 12 MiB more the content is admitted for 42 MiB, and 52 - 42 is below the reserve.
      await writeFile(join(t.workingArea, 'res-1', 'more.bin'), randomBytes(12 * MiB));
      const refused = await errorOf(t.client.takeSnapshot({ id: 'res-1' }));
      expect(refused.code).toBe('resource-exhausted');
      expect(refused.message).toMatch(
        /the node's storage keeps its last 20971520 bytes for final backups, and a snapshot of this workspace would reach into them/,
      );
      expect(await snapshotFiles(t.storageRoot)).toHaveLength(1);
      // Final backups are what keeps work: the reserve is theirs.
      await t.client.disposeWorkspace({ id: 'res-1', backup: true });
      const manifests: string[] = [];
      for await (const info of new FsRemoteStorage({ root: t.storageRoot }).list('workbay-user-dave')) {
        if (info.name.endsWith('.manifest')) manifests.push(info.name);
      }
      expect(manifests).toEqual(['workspaces/ws-r/full.manifest']);
    } finally {
      await t.stop();
    }
  });

  it('counts the snapshots admitted and not yet stored against the reserve (red team round 10, S2)', async () => {
    const storage = new FsRemoteStorage({ root: mounted as string });
    const backups = new BackupStore(storage, { mode: 'per-owner' });
    const content = join(root, 'content-s2');
    await mkdir(content, { recursive: true });
    await writeFile(join(content, 'data.bin'), randomBytes(8 * MiB));
    const state = (owner: string): SessionState =>
      ({ owner, workspaceId: `ws-${owner}`, instanceId: owner, contentLocation: content }) as unknown as SessionState;
    const budget = new SnapshotBudget(
      { maxPerWorkspace: 0, maxBytesPerOwner: 0, maxTakingPerOwner: 2, storageReserveBytes: 16 * MiB },
      backups,
      new NoDiskQuota(),
    );
    // The storage is empty (64 MiB free); each snapshot is admitted for 8 MiB with slack: 24.8 MiB.
    const first = await budget.admit(state('erin'));
    expect(first.maxBytes).toBeGreaterThan(24 * MiB);
    // Alone, the second would fit (64 - 24.8 >= 16); with the first still uploading, it would not (64 - 49.6 < 16).
    const second = await errorOf(budget.admit(state('frank')));
    expect(second.message).toMatch(/would reach into them/);
    first.release();
    (await budget.admit(state('frank'))).release();
  });

  it('fails an upload that grows past what its snapshot was admitted for, storing nothing', async () => {
    const storage = new FsRemoteStorage({ root: mounted as string });
    const backups = new BackupStore(storage, { mode: 'per-owner' });
    const content = join(root, 'content-cap');
    await mkdir(content, { recursive: true });
    await writeFile(join(content, 'data.bin'), randomBytes(4 * MiB));
    const target = backups.snapshotName({ owner: 'gina', workspaceId: 'ws-g' });
    const error = await errorOf(backups.snapshotTo(content, target.bucket, target.name, { maxBytes: MiB }));
    expect(isWorkbayError(error, 'resource-exhausted')).toBe(true);
    expect(error.message).toMatch(/the snapshot grew past the 1048576 bytes it was admitted for/);
    expect(await storage.stat(target.bucket, target.name)).toBeUndefined();
  });

  it('admits a tree of many empty files with long names for what its tar takes (red team round 10, S4)', async () => {
    const storage = new FsRemoteStorage({ root: mounted as string });
    const backups = new BackupStore(storage, { mode: 'per-owner' });
    const content = join(root, 'content-s4');
    await mkdir(content, { recursive: true });
    // No data blocks at all, yet a tar of them takes about 1.5 KiB each (a header, a PAX record for the long name).
    const long = 'n'.repeat(200);
    for (let i = 0; i < 15_000; i++) await writeFile(join(content, `${long}-${i}`), '');
    const state = { owner: 'ivy', workspaceId: 'ws-i', instanceId: 'i-1', contentLocation: content };
    const budget = new SnapshotBudget(
      { maxPerWorkspace: 0, maxBytesPerOwner: 0, maxTakingPerOwner: 1, storageReserveBytes: 16 * MiB },
      backups,
      new NoDiskQuota(),
    );
    const admitted = await budget.admit(state as unknown as SessionState);
    const target = backups.snapshotName({ owner: 'ivy', workspaceId: 'ws-i' });
    try {
      const stored = await backups.snapshotTo(content, target.bucket, target.name, { maxBytes: admitted.maxBytes });
      expect(stored.size).toBeGreaterThan(16 * MiB);
      expect(stored.size).toBeLessThanOrEqual(admitted.maxBytes as number);
    } finally {
      admitted.release();
    }
  });

  it('says RESOURCE_EXHAUSTED, not UNAVAILABLE, when the storage is full', async () => {
    const t = await startTestDaemon({ root, config: { snapshots: { storageReserve: 0 } } });
    const filler = join(mounted as string, 'filler');
    try {
      await t.client.initWorkspace({ id: 'full-1', metadata: { owner: 'hank', metaId: 'ws-f' }, initializer: empty });
      await writeFile(join(t.workingArea, 'full-1', 'data.bin'), randomBytes(16 * MiB));
      const free = Number((await storage(mounted as string).availableBytes('workbay-user-hank')) ?? 0);
      await writeFile(filler, Buffer.alloc(Math.max(0, free - 4 * MiB)));
      const failed = await errorOf(t.client.backupWorkspace({ id: 'full-1' }));
      expect(failed.code).toBe('resource-exhausted');
      expect(failed.message).toMatch(/the storage is full \(ENOSPC/);
      await rm(filler);
      await t.client.disposeWorkspace({ id: 'full-1', backup: true });
    } finally {
      await rm(filler, { force: true });
      await t.stop();
    }
  });
});

const storage = (root: string): FsRemoteStorage => new FsRemoteStorage({ root });
