/**
 * A disposal ends a running initialization, and an initialization has a deadline of its own (red team round 12,
 * G2): a git remote trickling just above the low-speed limit held the workspace's stop for the whole clone, and
 * only each git command had a deadline. Real daemon over gRPC, real git against a real slow HTTP server.
 */
import { access, mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isWorkbayError } from '../errors.js';
import { startTestDaemon } from '../test-support/daemon-harness.js';
import type { TestDaemon } from '../test-support/daemon-harness.js';
import { processesNaming, startGitTarpit } from '../test-support/git-server.js';
import { FsRemoteStorage } from '../storage/fs-storage.js';

type Tarpit = Awaited<ReturnType<typeof startGitTarpit>>;

const emptyInitializer = { spec: { $case: 'empty', value: {} } } as never;
const backupInitializer = {
  spec: { $case: 'backup', value: { checkoutLocation: '', fromVolumeSnapshot: false } },
} as never;

const exists = (path: string): Promise<boolean> =>
  access(path).then(
    () => true,
    () => false,
  );

async function waitFor(check: () => Promise<boolean> | boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

describe('a disposal ends a running initialization', () => {
  let t: TestDaemon;
  let tarpit: Tarpit;

  beforeAll(async () => {
    // 40 KB/s: well above git.lowSpeedLimit, so nothing but the deadlines and a disposal end the clone.
    tarpit = await startGitTarpit(4096, 100);
    t = await startTestDaemon();
  });
  afterAll(async () => {
    tarpit?.close();
    await t?.cleanup();
  });

  const gitFrom = (url: string) =>
    ({ spec: { $case: 'git', value: { remoteUri: url, checkoutLocation: 'repo' } } }) as never;

  it('a stop during a clone that never ends: the clone is killed, the disposal returns, nothing is backed up', async () => {
    const init = t.client
      .initWorkspace({ id: 'slow-1', metadata: { owner: 'alice', metaId: 'slow-1' }, initializer: gitFrom(tarpit.url) })
      .then(
        () => undefined,
        (error: unknown) => error as Error,
      );
    await waitFor(() => processesNaming(tarpit.url).length > 0, 20_000);
    const started = Date.now();
    const disposed = await t.client.disposeWorkspace({ id: 'slow-1', backup: true });
    const tookMs = Date.now() - started;
    // CANCELLED: the start learns that its workspace was disposed meanwhile.
    const initError = await init;
    expect(isWorkbayError(initError, 'cancelled'), String(initError)).toBe(true);
    expect(initError?.message).toMatch(/disposed while initializing/);
    expect(tookMs).toBeLessThan(20_000);
    expect(disposed.gitStatus).toBeUndefined();
    expect(processesNaming(tarpit.url)).toEqual([]);
    expect(await exists(join(t.workingArea, 'slow-1'))).toBe(false);
    // An aborted initialization is never backed up: the workspace has no backup to restore.
    const again = await t.client
      .initWorkspace({
        id: 'slow-2',
        metadata: { owner: 'alice', metaId: 'slow-1' },
        initializer: { spec: { $case: 'backup', value: { checkoutLocation: '', fromVolumeSnapshot: false } } },
      })
      .then(
        () => undefined,
        (error: unknown) => error as Error,
      );
    expect(isWorkbayError(again, 'not-found'), String(again)).toBe(true);
  });
});

describe('initializer.timeout bounds the whole initialization', () => {
  let t: TestDaemon;
  let tarpit: Tarpit;

  beforeAll(async () => {
    tarpit = await startGitTarpit(4096, 100);
    t = await startTestDaemon({ config: { initializer: { timeout: '2s' } } as never });
  });
  afterAll(async () => {
    tarpit?.close();
    await t?.cleanup();
  });

  it('a clone past it fails DEADLINE_EXCEEDED, and the workspace can be disposed', async () => {
    const started = Date.now();
    const error = await t.client
      .initWorkspace({
        id: 'deadline-1',
        metadata: { owner: 'bob', metaId: 'deadline-1' },
        initializer: { spec: { $case: 'git', value: { remoteUri: tarpit.url, checkoutLocation: '' } } } as never,
      })
      .then(
        () => undefined,
        (e: unknown) => e as Error,
      );
    expect(isWorkbayError(error, 'deadline-exceeded'), String(error)).toBe(true);
    expect(error?.message).toMatch(/initializer\.timeout/);
    expect(Date.now() - started).toBeLessThan(20_000);
    expect(processesNaming(tarpit.url)).toEqual([]);
    await t.client.disposeWorkspace({ id: 'deadline-1', backup: true });
    expect(await exists(join(t.workingArea, 'deadline-1'))).toBe(false);
  });
});

describe('a disposal ends a restore in progress', () => {
  let t: TestDaemon;
  /** While set, reads of packs never finish (until their signal aborts): a restore from a storage that hangs. */
  let stall = false;
  let stalled: () => void = () => undefined;

  beforeAll(async () => {
    const root = await mkdtemp(join(tmpdir(), 'workbay-restore-abort-'));
    const fs = new FsRemoteStorage({ root: join(root, 'storage') });
    const storage = new Proxy(fs, {
      get(target, property, receiver) {
        if (property === 'readInto') {
          return (bucket: string, name: string, buffer: Buffer, options?: { signal?: AbortSignal }) => {
            if (!stall || !name.includes('/chunks/')) return target.readInto(bucket, name, buffer, options);
            stalled();
            return new Promise((_resolve, reject) =>
              options?.signal?.addEventListener('abort', () => reject(options.signal?.reason as Error)),
            );
          };
        }
        const value: unknown = Reflect.get(target, property, receiver);
        return typeof value === 'function' ? (value as (...args: unknown[]) => unknown).bind(target) : value;
      },
    });
    t = await startTestDaemon({ root, overrides: { storage } });
  });
  afterAll(async () => {
    await t?.cleanup();
  });

  it('a stop while the backup is restored: the restore ends, the disposal returns, the backup stays whole', async () => {
    const metadata = { owner: 'carol', metaId: 'restored' };
    const first = await t.client.initWorkspace({ id: 'r-1', metadata, initializer: emptyInitializer });
    await writeFile(join(first.contentLocation, 'work.txt'), 'carol was here\n');
    await t.client.disposeWorkspace({ id: 'r-1', backup: true });

    stall = true;
    const reached = new Promise<void>((resolve) => (stalled = resolve));
    const init = t.client.initWorkspace({ id: 'r-2', metadata, initializer: backupInitializer }).then(
      () => undefined,
      (error: unknown) => error as Error,
    );
    await reached;
    await t.client.disposeWorkspace({ id: 'r-2', backup: true });
    const initError = await init;
    expect(isWorkbayError(initError, 'cancelled'), String(initError)).toBe(true);

    // Nothing was backed up over it: the next start gets the work back.
    stall = false;
    const third = await t.client.initWorkspace({ id: 'r-3', metadata, initializer: backupInitializer });
    expect(third.contentSource).toBe('from-backup');
    expect(await readFile(join(third.contentLocation, 'work.txt'), 'utf8')).toBe('carol was here\n');
  });
});
