import { chmod, chown, mkdir, mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { firstValueFrom, filter, take, timeout } from 'rxjs';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { RuntimeWorkspaceSpec } from '@workbay/api';
import { listNetns } from '@workbay/nsinsider';
import { LocalRuntime } from './local-runtime.js';
import type { LocalWorkspaceState } from './local-runtime.js';
import { workspaceCgroupName } from './isolation.js';
import { WorkspaceNetworks } from './network.js';

const isRoot = process.getuid?.() === 0;

// prepare() on real namespaces, veths and cgroups: what it reserves while the content is still being produced, that
// the start takes exactly that, and that nothing is left when no start comes.
describe.runIf(isRoot)('LocalRuntime.prepare: host resources reserved while the content is produced', () => {
  let base: string;
  let stateDir: string;
  let counter = 0;
  const runtimes: LocalRuntime[] = [];

  beforeAll(async () => {
    base = await mkdtemp('/var/lib/workbay-prepare-test-');
    await chmod(base, 0o755);
    stateDir = path.join(base, 'state');
  });

  afterEach(async () => {
    for (const runtime of runtimes.splice(0)) {
      for (const state of await runtime.list()) await runtime.stop(state.instanceId, { gracePeriodMs: 0 });
      await runtime.close();
    }
  });

  afterAll(async () => {
    await rm(base, { recursive: true, force: true });
  });

  async function newRuntime(): Promise<LocalRuntime> {
    const runtime = await LocalRuntime.create({ config: { stateDir, readiness: { intervalMs: 20 } } });
    runtimes.push(runtime);
    return runtime;
  }

  /** A spec whose content directory does not exist yet, as when the daemon has only begun to produce it. */
  function spec(): RuntimeWorkspaceSpec {
    const n = ++counter;
    return {
      instanceId: `prep-${n}`,
      workspaceId: `ws-prep-${n}`,
      owner: 'owner-1',
      image: 'workbay/default',
      url: '',
      headless: false,
      type: 'regular',
      contentDir: path.join(base, 'area', `prep-${n}`),
      env: {},
      ports: [23000],
      className: 'default',
      resources: { memoryBytes: 256 * 1024 * 1024, pids: 128 },
    };
  }

  async function produceContent(s: RuntimeWorkspaceSpec, uid: number): Promise<void> {
    await mkdir(s.contentDir, { recursive: true, mode: 0o755 });
    await writeFile(path.join(s.contentDir, 'README.md'), 'content\n');
    await chown(s.contentDir, uid, uid);
  }

  const netnsOf = (s: RuntimeWorkspaceSpec): string => `wb-${WorkspaceNetworks.tagFor(stateDir)}-${s.instanceId}`;
  const cgroupDirsOf = (runtime: LocalRuntime, s: RuntimeWorkspaceSpec): readonly string[] =>
    runtime.isolation.cgroups
      ?.cgroup(
        path.posix.join(
          runtime.isolation.cgroupParent ?? 'workbay',
          workspaceCgroupName(WorkspaceNetworks.tagFor(stateDir), s.instanceId),
        ),
      )
      .dirs() ?? [];
  const exists = (p: string): Promise<boolean> =>
    stat(p).then(
      () => true,
      () => false,
    );

  it('reserves the netns and the cgroup before the content exists; the start runs in exactly those', async () => {
    const runtime = await newRuntime();
    const s = spec();
    await runtime.prepare(s);
    expect(await listNetns(netnsOf(s))).toEqual([netnsOf(s)]);
    // A netns file's inode is the namespace's own: the same one after the start means the start did not make another.
    const namespace = (await stat(`/run/netns/${netnsOf(s)}`)).ino;
    const dirs = cgroupDirsOf(runtime, s);
    expect(dirs.length).toBeGreaterThan(0);
    for (const dir of dirs) expect(await exists(dir)).toBe(true);
    // Preparing again changes nothing (the manager may resume a start).
    await runtime.prepare(s);

    await produceContent(s, 200_301);
    const ready = firstValueFrom(
      runtime.events$.pipe(
        filter((e) => e.type === 'ready' && e.instanceId === s.instanceId),
        take(1),
        timeout(30_000),
      ),
    );
    await runtime.start(s);
    const state = (await ready).state as LocalWorkspaceState;
    expect(state.net?.netns).toBe(netnsOf(s));
    expect((await stat(`/run/netns/${netnsOf(s)}`)).ino).toBe(namespace);
    expect(state.cgroupDirs).toEqual(dirs);
    expect(await (await fetch(`http://${state.host}:${state.idePort}/healthz`)).text()).toBe('ok\n');

    await runtime.stop(s.instanceId, { gracePeriodMs: 5_000 });
    expect(await listNetns(netnsOf(s))).toEqual([]);
    for (const dir of dirs) expect(await exists(dir)).toBe(false);
  });

  it('a runtime started after one killed between prepare and start removes what that one reserved', async () => {
    // Killed: it never releases (its reservation's timer is unref'd and far away; close() comes only at the end).
    const killed = await newRuntime();
    const s = spec();
    await killed.prepare(s);
    const dirs = cgroupDirsOf(killed, s);
    for (const dir of dirs) expect(await exists(dir)).toBe(true);
    // A cgroup of another runtime (another state dir, so another tag) that looks just as abandoned stays.
    const otherTag = WorkspaceNetworks.tagFor(`${stateDir}-other`);
    const other = killed.isolation.cgroups!.cgroup(
      path.posix.join(killed.isolation.cgroupParent ?? 'workbay', workspaceCgroupName(otherTag, 'prep-x')),
    );
    await other.create();

    await newRuntime();
    expect(await listNetns(netnsOf(s))).toEqual([]);
    for (const dir of dirs) expect(await exists(dir)).toBe(false);
    for (const dir of other.dirs()) expect(await exists(dir)).toBe(true);
    await other.remove();
  });

  it('gives everything back when no start comes: on stop, on close, and when the start fails', async () => {
    const runtime = await newRuntime();
    // The content failed: the manager stops the workspace, and the stop gives the reservation back.
    const failed = spec();
    await runtime.prepare(failed);
    const failedDirs = cgroupDirsOf(runtime, failed);
    await runtime.stop(failed.instanceId, { gracePeriodMs: 0 });
    expect(await listNetns(netnsOf(failed))).toEqual([]);
    for (const dir of failedDirs) expect(await exists(dir)).toBe(false);

    // The start itself fails (no content directory): what it took is given back with it.
    const broken = spec();
    await runtime.prepare(broken);
    await expect(runtime.start(broken)).rejects.toThrow(/does not exist/);
    expect(await listNetns(netnsOf(broken))).toEqual([]);

    // The manager shuts down between prepare and start.
    const pending = spec();
    await runtime.prepare(pending);
    expect(await listNetns(netnsOf(pending))).toEqual([netnsOf(pending)]);
    const pendingDirs = cgroupDirsOf(runtime, pending);
    await runtime.close();
    expect(await listNetns(netnsOf(pending))).toEqual([]);
    for (const dir of pendingDirs) expect(await exists(dir)).toBe(false);
  });
});
