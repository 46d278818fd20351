/**
 * Attacks on the daemon's content handling over real gRPC (127.0.0.1:0, the real daemon, real fs storage):
 * refused requests leave no trace (issue 8 item 10), huge values get short, prompt answers without stalling
 * the connection (item 9, invariant 7), an owner reaches only its own snapshots (item 7, invariant 11), and
 * downloads are http(s) only. Each attack must have no effect.
 */
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmod, mkdir, mkdtemp, readFile, readdir, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RemoteStorage, contentservice } from '@workbay/api';
import { isWorkbayError } from '@workbay/api';
import { FsRemoteStorage } from '../storage/fs-storage.js';
import { startTestDaemon } from '../test-support/daemon-harness.js';
import type { TestDaemon } from '../test-support/daemon-harness.js';
import { exists, errorOf } from '../test-support/outcomes.js';

/** Records every storage call that reads an object or looks one up. */
function recording(storage: RemoteStorage, calls: string[]): RemoteStorage {
  const reads = new Set(['download', 'stat', 'list', 'presignedUrl']);
  return new Proxy(storage, {
    get(target, property, receiver) {
      const value: unknown = Reflect.get(target, property, receiver);
      if (typeof value !== 'function') return value;
      return (...args: unknown[]) => {
        if (reads.has(String(property))) calls.push(`${String(property)} ${String(args[0])} ${String(args[1] ?? '')}`);
        return (value as (...a: unknown[]) => unknown).apply(target, args);
      };
    },
  });
}

/** A tar header of `size` bytes, type `type` (red team round 13's pax bomb: tar-stream buffers a pax header whole). */
function tarHeader(name: string, size: number, type: string): Buffer {
  const header = Buffer.alloc(512);
  header.write(name, 0);
  header.write('0000644\0', 100);
  header.write('0000000\0', 108);
  header.write('0000000\0', 116);
  header.write(`${size.toString(8).padStart(11, '0')}\0`, 124);
  header.write('00000000000\0', 136);
  header.write(type, 156);
  header.write('ustar\0', 257);
  header.write('00', 263);
  header.write('        ', 148);
  let sum = 0;
  for (const byte of header) sum += byte;
  header.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148);
  return header;
}

/** A gzip'd tar that starts with a 64 MiB pax header of zeros (a few KB stored). */
function paxBomb(): Buffer {
  const size = 64 * 1024 * 1024;
  return gzipSync(
    Buffer.concat([
      tarHeader('PaxHeaders/x', size, 'x'),
      Buffer.alloc(size),
      tarHeader('x', 0, '0'),
      Buffer.alloc(1024),
    ]),
  );
}

const empty: contentservice.WorkspaceInitializer = { spec: { $case: 'empty', value: {} } };
const snapshotInit = (snapshot: string): contentservice.WorkspaceInitializer => ({
  spec: { $case: 'snapshot', value: { snapshot, fromVolumeSnapshot: false } },
});
const composite = (...children: contentservice.WorkspaceInitializer[]): contentservice.WorkspaceInitializer => ({
  spec: { $case: 'composite', value: { initializer: children } },
});
const download = (url: string, extra: Record<string, unknown> = {}): contentservice.WorkspaceInitializer => ({
  spec: {
    $case: 'download',
    value: { targetLocation: '', files: [{ url, filePath: 'f', digest: `sha256:${'0'.repeat(64)}` }], ...extra },
  } as never,
});

describe('content attacks over gRPC', () => {
  let t: TestDaemon;
  const calls: string[] = [];
  let aliceSnapshot: string;

  beforeAll(async () => {
    const root = await mkdtemp(join(tmpdir(), 'workbay-content-attacks-'));
    await chmod(root, 0o755); // workspace users must reach their content below it
    const storage = new FsRemoteStorage({ root: join(root, 'storage') });
    t = await startTestDaemon({ root, overrides: { storage: recording(storage, calls) } });
    await t.client.initWorkspace({
      id: 'alice-1',
      metadata: { owner: 'alice', metaId: 'ws-alice' },
      initializer: empty,
    });
    aliceSnapshot = (await t.client.takeSnapshot({ id: 'alice-1' })).url;
    expect(aliceSnapshot).toMatch(/@workbay-user-alice$/);
  });
  afterAll(async () => {
    await t.cleanup();
  });

  const noTrace = async (id: string): Promise<void> => {
    expect((await t.client.isWorkspaceExists({ id })).exists).toBe(false);
    expect(await exists(join(t.workingArea, `${id}.workspace.json`))).toBe(false);
    expect(await exists(join(t.workingArea, id))).toBe(false);
  };

  it("an id named like another workspace's session file or tombstone is refused, and that workspace keeps its state", async () => {
    // Session files sit beside content directories: `alice-1.workspace.json` as an id named alice-1's state as its
    // content, and the failed start's clean-up deleted it (found by a red-team run: alice-1's backup then failed).
    const state = join(t.workingArea, 'alice-1.workspace.json');
    const before = await readFile(state, 'utf8');
    for (const id of ['alice-1.workspace.json', 'alice-1.disposed.json']) {
      const error = await errorOf(
        t.client.initWorkspace({ id, metadata: { owner: 'alice', metaId: 'ws-x' }, initializer: empty }),
      );
      expect(isWorkbayError(error, 'invalid-argument'), error.message).toBe(true);
      expect(error.field).toBe('id');
    }
    expect(await readFile(state, 'utf8')).toBe(before);
    expect((await t.client.isWorkspaceExists({ id: 'alice-1' })).exists).toBe(true);
  });

  it('a refused InitWorkspace leaves no registration, session file or directory; the corrected retry succeeds', async () => {
    const id = 'retry-1';
    const metadata = { owner: 'bob', metaId: 'ws-retry' };
    let deep = empty;
    for (let i = 0; i < 9; i++) deep = composite(deep);
    const refused: Array<[contentservice.WorkspaceInitializer, string]> = [
      [download('https://example.invalid/f', { targetLocation: '../escape' }), 'initializer.download.target_location'],
      [
        composite(empty, download('https://example.invalid/f', { targetLocation: '/etc' })),
        'initializer.composite.initializer[1].download.target_location',
      ],
      [deep, `initializer${'.composite.initializer[0]'.repeat(8)}.composite`],
      [composite(...Array.from({ length: 33 }, () => empty)), 'initializer.composite.initializer'],
      [
        {
          spec: {
            $case: 'download',
            value: {
              targetLocation: '',
              files: Array.from({ length: 1001 }, (_, i) => ({
                url: 'https://example.invalid/f',
                filePath: `f${i}`,
                digest: 'x',
              })),
            },
          },
        },
        'initializer.download.files',
      ],
      [download('file:///etc/passwd'), 'initializer.download.files[0].url'],
      [
        {
          spec: {
            $case: 'git',
            value: {
              remoteUri: 'https://example.invalid/r.git',
              checkoutLocation: '../../etc',
              cloneTaget: '',
              targetMode: 0,
            },
          },
        } as never,
        'initializer.git.checkout_location',
      ],
    ];
    for (const [initializer, field] of refused) {
      const error = await errorOf(t.client.initWorkspace({ id, metadata, initializer }));
      expect(isWorkbayError(error, 'invalid-argument'), `${field}: ${error.message}`).toBe(true);
      expect(error.field).toBe(field);
      await noTrace(id);
    }
    // Refused for another owner's snapshot, and for remote storage the workspace does not have: no trace either.
    expect(
      isWorkbayError(
        await errorOf(t.client.initWorkspace({ id, metadata, initializer: snapshotInit(aliceSnapshot) })),
        'permission-denied',
      ),
    ).toBe(true);
    await noTrace(id);
    const noStorage = await errorOf(
      t.client.initWorkspace({ id, metadata, initializer: snapshotInit(aliceSnapshot), remoteStorageDisabled: true }),
    );
    expect(isWorkbayError(noStorage, 'failed-precondition')).toBe(true);
    await noTrace(id);
    const ok = await t.client.initWorkspace({ id, metadata, initializer: empty });
    expect(ok.contentLocation).toBe(join(t.workingArea, id));
    await t.client.disposeWorkspace({ id, backup: false });
  });

  it('a 1 MB bad value gets a prompt INVALID_ARGUMENT with a short message, without stalling the connection', async () => {
    const huge = 'x'.repeat(1024 * 1024);
    const metadata = { owner: 'bob', metaId: 'ws-huge' };
    const attacks: Array<Promise<unknown>> = [
      t.client.initWorkspace({ id: huge, metadata, initializer: empty }),
      t.client.initWorkspace({ id: 'huge-1', metadata: { owner: huge, metaId: 'ws' }, initializer: empty }),
      t.client.initWorkspace({ id: 'huge-2', metadata, initializer: snapshotInit(`${huge}@workbay-user-bob`) }),
      t.client.initWorkspace({ id: 'huge-3', metadata, initializer: download(`https://example.invalid/${huge}`) }),
      t.client.initWorkspace({
        id: 'huge-4',
        metadata,
        initializer: {
          spec: {
            $case: 'git',
            value: { remoteUri: 'https://example.invalid/r.git', cloneTaget: huge, targetMode: 2 },
          },
        } as never,
      }),
      t.client.initWorkspace({
        id: 'huge-5',
        metadata,
        initializer: {
          spec: {
            $case: 'git',
            value: { remoteUri: 'https://example.invalid/r.git', config: { customConfig: { [`a.${huge}.b`]: 'v' } } },
          },
        } as never,
      }),
      t.client.waitForInit({ id: huge }),
      t.client.disposeWorkspace({ id: huge, backup: true }),
      t.client.deleteSnapshot({ snapshot: `workspaces/x/snapshot-1.tar@${huge}` }),
    ];
    // A small call on the same connection, sent while the attacks are in flight, is answered.
    const [results, concurrent] = await Promise.all([
      Promise.all(attacks.map((attack) => errorOf(attack))),
      t.client.isWorkspaceExists({ id: 'alice-1' }),
    ]);
    expect(concurrent.exists).toBe(true);
    for (const error of results) {
      expect(isWorkbayError(error, 'invalid-argument'), error.message.slice(0, 200)).toBe(true);
      expect(error.message.length).toBeLessThanOrEqual(1024);
      expect(error.message).not.toContain('x'.repeat(100));
    }
    for (const id of ['huge-1', 'huge-2', 'huge-3', 'huge-4', 'huge-5']) await noTrace(id);
  });

  it('a message above the receive limit is RESOURCE_EXHAUSTED and the connection keeps serving', async () => {
    const error = await errorOf(
      t.client.initWorkspace({
        id: 'x'.repeat(5 * 1024 * 1024),
        metadata: { owner: 'bob', metaId: 'b' },
        initializer: empty,
      }),
    );
    expect(isWorkbayError(error, 'resource-exhausted'), error.message.slice(0, 200)).toBe(true);
    expect((await t.client.isWorkspaceExists({ id: 'alice-1' })).exists).toBe(true);
  });

  it("another owner's snapshot is PERMISSION_DENIED naming the field, before any read; the owner's own restores", async () => {
    const attempts: Array<[contentservice.WorkspaceInitializer, string]> = [
      [snapshotInit(aliceSnapshot), 'initializer.snapshot.snapshot'],
      [
        composite(empty, composite(snapshotInit(aliceSnapshot))),
        'initializer.composite.initializer[1].composite.initializer[0].snapshot.snapshot',
      ],
      [
        {
          spec: {
            $case: 'prebuild',
            value: { prebuild: { snapshot: aliceSnapshot, fromVolumeSnapshot: false }, git: [] },
          },
        },
        'initializer.prebuild.prebuild.snapshot',
      ],
    ];
    // Owners are case-sensitive: `ALICE` is not alice, and her bucket is not his (red team round 12, O1).
    for (const [initializer, field] of attempts) {
      for (const owner of ['bob', 'ALICE', 'Alice']) {
        calls.length = 0;
        const error = await errorOf(
          t.client.initWorkspace({ id: 'mallory-1', metadata: { owner, metaId: 'ws-mallory' }, initializer }),
        );
        expect(isWorkbayError(error, 'permission-denied'), error.message).toBe(true);
        expect(error.message.startsWith(`${field}:`), error.message).toBe(true);
        expect(calls.filter((call) => call.includes('workbay-user-alice'))).toEqual([]);
        await noTrace('mallory-1');
      }
    }
    // Spellings that could leave the owner's own storage are malformed, not merely foreign.
    for (const name of [
      'workspaces/../../workbay-user-alice/x.tar@workbay-user-bob',
      'workspaces//x.tar@workbay-user-bob',
      'a@b@c',
    ]) {
      const error = await errorOf(
        t.client.initWorkspace({
          id: 'mallory-2',
          metadata: { owner: 'bob', metaId: 'ws-m2' },
          initializer: snapshotInit(name),
        }),
      );
      expect(isWorkbayError(error, 'invalid-argument'), name).toBe(true);
      await noTrace('mallory-2');
    }
    const own = await t.client.initWorkspace({
      id: 'alice-2',
      metadata: { owner: 'alice', metaId: 'ws-alice-2' },
      initializer: snapshotInit(aliceSnapshot),
    });
    expect(own.initializerMetrics[0]?.type).toBe('snapshot');
    await t.client.disposeWorkspace({ id: 'alice-2', backup: false });
  });

  it("an owner differing only in case neither restores another's backup nor replaces it (red team round 12, O1)", async () => {
    const alice = await t.client.initWorkspace({
      id: 'case-alice',
      metadata: { owner: 'alice', metaId: 'ws-case' },
      initializer: empty,
    });
    await writeFile(join(alice.contentLocation, 'secret.txt'), 'alice-secret\n');
    await t.client.disposeWorkspace({ id: 'case-alice', backup: true });
    // ALICE starts alice's meta id: his own (empty) storage, not her backup.
    const upper = await t.client.initWorkspace({
      id: 'case-upper',
      metadata: { owner: 'ALICE', metaId: 'ws-case' },
      initializer: empty,
    });
    expect(upper.initializerMetrics[0]?.type).toBe('empty');
    expect(await readdir(upper.contentLocation)).not.toContain('secret.txt');
    await writeFile(join(upper.contentLocation, 'secret.txt'), 'planted\n');
    await t.client.disposeWorkspace({ id: 'case-upper', backup: true });
    // alice's next start gets her own work back.
    const again = await t.client.initWorkspace({
      id: 'case-alice-2',
      metadata: { owner: 'alice', metaId: 'ws-case' },
      initializer: empty,
    });
    expect(again.initializerMetrics[0]?.type).toBe('backup');
    expect(await readFile(join(again.contentLocation, 'secret.txt'), 'utf8')).toBe('alice-secret\n');
    await t.client.disposeWorkspace({ id: 'case-alice-2', backup: false });
  });

  it("only the owner's snapshots restore as snapshots: a backup pack or manifest is INVALID_ARGUMENT (red team round 13, S1)", async () => {
    const carol = await t.client.initWorkspace({
      id: 's1-carol',
      metadata: { owner: 'carol', metaId: 'ws-s1' },
      initializer: empty,
    });
    await writeFile(join(carol.contentLocation, 'evil.tar'), randomBytes(4096));
    await t.client.disposeWorkspace({ id: 's1-carol', backup: true });
    const packs = await readdir(join(t.storageRoot, 'workbay-user-carol', 'workspaces', 'ws-s1', 'chunks'));
    expect(packs.length).toBeGreaterThan(0);
    for (const object of [
      `workspaces/ws-s1/chunks/${packs[0] as string}`,
      'workspaces/ws-s1/full.manifest',
      'workspaces/ws-s1/snapshot-0123.tar',
      'workspaces/ws-s1/snapshot-1.tar/x',
    ]) {
      calls.length = 0;
      const error = await errorOf(
        t.client.initWorkspace({
          id: 's1-restore',
          metadata: { owner: 'carol', metaId: 'ws-s1b' },
          initializer: snapshotInit(`${object}@workbay-user-carol`),
        }),
      );
      expect(isWorkbayError(error, 'invalid-argument'), `${object}: ${error.message}`).toBe(true);
      expect(error.message).toMatch(/^initializer\.snapshot\.snapshot: .* is not a snapshot/);
      expect(calls).toEqual([]);
      await noTrace('s1-restore');
    }
  });

  it('a snapshot whose bytes are no archive the reader takes is INVALID_ARGUMENT naming the field, not INTERNAL', async () => {
    const storage = new FsRemoteStorage({ root: t.storageRoot });
    const name = 'workspaces/ws-bad/snapshot-1700000000000000000.tar';
    await storage.ensureBucket('workbay-user-carol');
    for (const body of [
      randomBytes(8192),
      Buffer.concat([Buffer.from([0x1f, 0x8b, 8, 0]), randomBytes(4096)]),
      paxBomb(),
    ]) {
      await storage.upload('workbay-user-carol', name, Readable.from([body]));
      const error = await errorOf(
        t.client.initWorkspace({
          id: 'bad-archive',
          metadata: { owner: 'carol', metaId: 'ws-bad-2' },
          initializer: snapshotInit(`${name}@workbay-user-carol`),
        }),
      );
      expect(isWorkbayError(error, 'invalid-argument'), error.message).toBe(true);
      expect(error.message).not.toMatch(/internal error/);
      await t.client.disposeWorkspace({ id: 'bad-archive', backup: false });
    }
  });

  it('an owner whose bucket is named by its digest takes, restores and deletes its snapshots', async () => {
    const owner = 'Carol_2';
    const first = await t.client.initWorkspace({
      id: 'hashed-1',
      metadata: { owner, metaId: 'ws-h' },
      initializer: empty,
    });
    await writeFile(join(first.contentLocation, 'kept.txt'), 'in the snapshot\n');
    const { url } = await t.client.takeSnapshot({ id: 'hashed-1', returnImmediately: false });
    expect(url).toMatch(/@workbay-user-h--[0-9a-f]{40}$/);
    const second = await t.client.initWorkspace({
      id: 'hashed-2',
      metadata: { owner, metaId: 'ws-h2' },
      initializer: snapshotInit(url),
    });
    expect(await readFile(join(second.contentLocation, 'kept.txt'), 'utf8')).toBe('in the snapshot\n');
    await t.client.deleteSnapshot({ snapshot: url });
    for (const id of ['hashed-1', 'hashed-2']) await t.client.disposeWorkspace({ id, backup: false });
  });

  it("an instance's late backup never writes over a newer backup of its workspace: it is stored beside it (red team round 12, K2)", async () => {
    const meta = { owner: 'carol', metaId: 'cproj' };
    // c7 starts with no backup of cproj (its content is kept on the node, say, and resumed much later) ...
    const old = await t.client.initWorkspace({ id: 'k2-c7', metadata: meta, initializer: empty });
    await writeFile(join(old.contentLocation, 'work.txt'), 'v1-old-work\n');
    // ... while c8 works on cproj and stops with a backup.
    const newer = await t.client.initWorkspace({ id: 'k2-c8', metadata: meta, initializer: empty });
    await writeFile(join(newer.contentLocation, 'work.txt'), 'v2-newer-work\n');
    await writeFile(join(newer.contentLocation, 'newer.bin'), Buffer.alloc(3 * 1024 * 1024, 7));
    await t.client.disposeWorkspace({ id: 'k2-c8', backup: true });
    // c7's backups go to a workspace id of their own; c8's backup stays cproj's, whole.
    const { url } = await t.client.backupWorkspace({ id: 'k2-c7' });
    expect(url).toContain('workspaces/cproj.kept-k2-c7/');
    await writeFile(join(old.contentLocation, 'work.txt'), 'v1-old-work, later\n');
    expect((await t.client.backupWorkspace({ id: 'k2-c7' })).url).toBe(url);
    // Its owner works on from that name (c12) ... and c7's next backup is refused there, not written over c12's (K2b).
    const fromKept = await t.client.initWorkspace({
      id: 'k2-c12',
      metadata: { owner: 'carol', metaId: 'cproj.kept-k2-c7' },
      initializer: empty,
    });
    await writeFile(join(fromKept.contentLocation, 'work.txt'), 'v4-on-the-kept-name\n');
    await t.client.disposeWorkspace({ id: 'k2-c12', backup: true });
    const refused = await errorOf(t.client.backupWorkspace({ id: 'k2-c7' }));
    expect(isWorkbayError(refused, 'failed-precondition'), refused.message).toBe(true);
    await t.client.disposeWorkspace({ id: 'k2-c7', backup: false });
    const latest = await t.client.initWorkspace({ id: 'k2-c9', metadata: meta, initializer: empty });
    expect(await readFile(join(latest.contentLocation, 'work.txt'), 'utf8')).toBe('v2-newer-work\n');
    expect((await readFile(join(latest.contentLocation, 'newer.bin'))).length).toBe(3 * 1024 * 1024);
    // Its next backup replaces c8's (the one it started from), as every backup of one instance does.
    await writeFile(join(latest.contentLocation, 'work.txt'), 'v3\n');
    await t.client.disposeWorkspace({ id: 'k2-c9', backup: true });
    const again = await t.client.initWorkspace({ id: 'k2-c10', metadata: meta, initializer: empty });
    expect(await readFile(join(again.contentLocation, 'work.txt'), 'utf8')).toBe('v3\n');
    await t.client.disposeWorkspace({ id: 'k2-c10', backup: false });
    // c7's work: under its own workspace id.
    const recovered = await t.client.initWorkspace({
      id: 'k2-c11',
      metadata: { owner: 'carol', metaId: 'cproj.kept-k2-c7' },
      initializer: empty,
    });
    expect(await readFile(join(recovered.contentLocation, 'work.txt'), 'utf8')).toBe('v4-on-the-kept-name\n');
    await t.client.disposeWorkspace({ id: 'k2-c11', backup: false });
  });

  it('a `.workbay` symlink planted in the content does not make dispose upload host files as logs', async () => {
    const ws = await t.client.initWorkspace({
      id: 'logs-1',
      metadata: { owner: 'bob', metaId: 'ws-logs' },
      initializer: empty,
    });
    const hostDir = await mkdtemp(join(tmpdir(), 'workbay-host-logs-'));
    await writeFile(join(hostDir, 'prebuild-log-secret'), 'host secret\n');
    await rm(join(ws.contentLocation, '.workbay'), { recursive: true });
    await symlink(hostDir, join(ws.contentLocation, '.workbay'));
    calls.length = 0;
    await t.client.disposeWorkspace({ id: 'logs-1', backup: false, backupLogs: true });
    expect(await exists(join(t.storageRoot, 'workbay-user-bob', 'workspaces', 'ws-logs', 'instances'))).toBe(false);
    expect(await readFile(join(hostDir, 'prebuild-log-secret'), 'utf8')).toBe('host secret\n');
    await rm(hostDir, { recursive: true, force: true });
  });

  it('logs a disposal uploads are bounded: 16 files, the last 16 MiB of each, no FIFO', async () => {
    const ws = await t.client.initWorkspace({
      id: 'logs-2',
      metadata: { owner: 'bob', metaId: 'ws-logs2' },
      initializer: empty,
    });
    const dir = join(ws.contentLocation, '.workbay');
    await mkdir(dir, { recursive: true });
    // A FIFO sorts first: read, it would hold the disposal forever.
    execFileSync('mkfifo', [join(dir, 'prebuild-log-00-fifo')]);
    const big = Buffer.alloc(20 * 1024 * 1024, 'a');
    big.write('the end', big.length - 7);
    await writeFile(join(dir, 'prebuild-log-01-big'), big);
    for (let i = 2; i < 20; i++) await writeFile(join(dir, `prebuild-log-${String(i).padStart(2, '0')}`), `log ${i}`);
    await t.client.disposeWorkspace({ id: 'logs-2', backup: false, backupLogs: true });
    const storage = new FsRemoteStorage({ root: t.storageRoot });
    const logs = new Map<string, number>();
    for await (const info of storage.list('workbay-user-bob', {
      prefix: 'workspaces/ws-logs2/instances/logs-2/logs/',
    })) {
      logs.set(info.name.slice(info.name.lastIndexOf('/') + 1), info.size);
    }
    // The first 16 names; the FIFO among them is refused, not read.
    expect([...logs.keys()].sort()).toEqual(
      Array.from({ length: 15 }, (_, i) => String(i + 1).padStart(2, '0') + (i === 0 ? '-big' : '')),
    );
    expect(logs.get('01-big')).toBe(16 * 1024 * 1024);
    const tail = await storage.download('workbay-user-bob', 'workspaces/ws-logs2/instances/logs-2/logs/01-big');
    const chunks: Buffer[] = [];
    for await (const chunk of tail) chunks.push(chunk as Buffer);
    expect(Buffer.concat(chunks).subarray(-7).toString()).toBe('the end');
  });

  it('downloads are http(s) only', async () => {
    for (const url of ['file:///etc/passwd', 'ftp://example.invalid/f', 'data:text/plain,hello', '/etc/passwd']) {
      const error = await errorOf(
        t.client.initWorkspace({ id: 'dl-1', metadata: { owner: 'bob', metaId: 'ws-dl' }, initializer: download(url) }),
      );
      expect(isWorkbayError(error, 'invalid-argument'), url).toBe(true);
      expect(error.field).toBe('initializer.download.files[0].url');
      await noTrace('dl-1');
    }
  });
});

describe('owner confinement in the shared-bucket layout', () => {
  let t: TestDaemon;

  beforeAll(async () => {
    const root = await mkdtemp(join(tmpdir(), 'workbay-shared-layout-'));
    await chmod(root, 0o755);
    const storage = new FsRemoteStorage({
      root: join(root, 'storage'),
      layout: { mode: 'shared', bucket: 'workbay-shared' },
    });
    t = await startTestDaemon({ root, overrides: { storage } });
  });
  afterAll(async () => {
    await t.cleanup();
  });

  it("an owner cannot name another owner's prefix of the shared bucket", async () => {
    await t.client.initWorkspace({ id: 'a-1', metadata: { owner: 'alice', metaId: 'ws-a' }, initializer: empty });
    const snapshot = (await t.client.takeSnapshot({ id: 'a-1' })).url;
    expect(snapshot).toMatch(/^alice\/workspaces\/ws-a\/snapshot-\d+\.tar@workbay-shared$/);
    const stolen = await errorOf(
      t.client.initWorkspace({
        id: 'b-1',
        metadata: { owner: 'bob', metaId: 'ws-b' },
        initializer: snapshotInit(snapshot),
      }),
    );
    expect(isWorkbayError(stolen, 'permission-denied')).toBe(true);
    // Bob's prefix, walked out of with '..', is refused as malformed.
    const walked = await errorOf(
      t.client.initWorkspace({
        id: 'b-1',
        metadata: { owner: 'bob', metaId: 'ws-b' },
        initializer: snapshotInit(`bob/../${snapshot}`),
      }),
    );
    expect(isWorkbayError(walked, 'invalid-argument')).toBe(true);
    expect(await readdir(t.workingArea)).not.toContain('b-1');
    const own = await t.client.initWorkspace({
      id: 'a-2',
      metadata: { owner: 'alice', metaId: 'ws-a2' },
      initializer: snapshotInit(snapshot),
    });
    expect(own.initializerMetrics[0]?.type).toBe('snapshot');
    expect(JSON.parse(await readFile(join(own.contentLocation, '.workbay/ready'), 'utf8')).source).toBe('from-other');
  });

  it('a file the workspace holds a lease on fails its backup with FAILED_PRECONDITION naming it, not retried', async () => {
    // Round 11 L1: the open (O_NONBLOCK) got EAGAIN, reported UNAVAILABLE and retried, and the CLI said the manager
    // was unreachable. A process holding a write lease (fcntl F_SETLEASE, F_WRLCK) until it is killed, deaf to the
    // SIGIO each refused open sends it (the kernel breaks a lease only after lease-break-time, 45 s).
    await t.client.initWorkspace({ id: 'lease-1', metadata: { owner: 'leo', metaId: 'ws-lease' }, initializer: empty });
    const file = join(t.workingArea, 'lease-1', 'leased.txt');
    await writeFile(file, 'mine');
    const holder = spawn(
      'perl',
      [
        '-e',
        '$| = 1; $SIG{IO} = "IGNORE"; open(my $f, ">>", $ARGV[0]) or die; fcntl($f, 1024, 1) or die "lease: $!"; print "held\n"; sleep 60',
        file,
      ],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    try {
      await new Promise<void>((resolve, reject) => {
        holder.stdout.once('data', () => resolve());
        holder.once('exit', (code) => reject(new Error(`the lease holder exited with ${code}`)));
      });
      const backup = await errorOf(t.client.backupWorkspace({ id: 'lease-1' }));
      const snapshot = await errorOf(t.client.takeSnapshot({ id: 'lease-1' }));
      for (const error of [backup, snapshot]) {
        expect(isWorkbayError(error, 'failed-precondition'), String(error)).toBe(true);
        expect((error as Error).message).toMatch(/failed: a process of the workspace holds a lease on a file/);
      }
      expect((backup as Error).message).toMatch(/'leased\.txt'\)$/);
    } finally {
      holder.kill('SIGKILL');
    }
  });
});
