import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FailedPreconditionError } from '@workbay/api';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { WorkspaceProcessLocator } from './workspace-process.js';

// A fixture /proc: status (Uid, PPid), stat (start time), cgroup and ns/mnt per pid.

interface FakeProc {
  readonly uid: number;
  readonly ppid: number;
  readonly start: number;
  readonly cgroup?: string;
  readonly mntNs?: string;
}

const DAEMON = 1000;
const WS_UID = 200_001;

describe('WorkspaceProcessLocator', () => {
  let proc: string;
  let clock = 0;

  async function add(pid: number, p: FakeProc): Promise<void> {
    const dir = join(proc, String(pid));
    await rm(dir, { recursive: true, force: true });
    await mkdir(join(dir, 'ns'), { recursive: true });
    await writeFile(join(dir, 'status'), `Name:\tx\nPPid:\t${p.ppid}\nUid:\t${p.uid}\t${p.uid}\t${p.uid}\t${p.uid}\n`);
    const rest = Array.from({ length: 30 }, (_, i) => (i === 18 ? String(p.start) : '0')).join(' ');
    // A command name with spaces and parentheses: fields count from the last ")" (state first, start time 20th).
    await writeFile(join(dir, 'stat'), `${pid} (evil) name) S ${rest}\n`);
    await writeFile(join(dir, 'cgroup'), `5:memory:${p.cgroup ?? '/'}\n4:cpu,cpuacct:${p.cgroup ?? '/'}\n0::/\n`);
    await symlink(p.mntNs ?? 'mnt:[4026531840]', join(dir, 'ns', 'mnt'));
  }

  const locator = (uid = WS_UID, instanceId = 'inst-1'): WorkspaceProcessLocator =>
    new WorkspaceProcessLocator({ uid, instanceId, procRoot: proc, selfUid: 0, selfPid: DAEMON, now: () => clock });

  beforeEach(async () => {
    proc = await mkdtemp(join(tmpdir(), 'fake-proc-'));
    clock = 0;
    await add(1, { uid: 0, ppid: 0, start: 1 });
    await add(DAEMON, { uid: 0, ppid: 1, start: 5, cgroup: '/system/daemon' });
    // The runtime's wrapper (root) and the workspace's tree below it.
    await add(2000, { uid: 0, ppid: 1, start: 10, cgroup: '/workbay/inst-1' });
    await add(2001, { uid: WS_UID, ppid: 2000, start: 11, cgroup: '/workbay/inst-1', mntNs: 'mnt:[1]' });
    await add(2002, { uid: WS_UID, ppid: 2001, start: 12, cgroup: '/workbay/inst-1', mntNs: 'mnt:[1]' });
    // Another workspace.
    await add(3001, { uid: WS_UID + 1, ppid: 1, start: 3, cgroup: '/workbay/inst-2', mntNs: 'mnt:[2]' });
  });

  afterEach(async () => {
    await rm(proc, { recursive: true, force: true });
  });

  it("finds the workspace's topmost process by its uid, and its cgroup cut at the instance id", async () => {
    const l = locator();
    expect(await l.initPid()).toBe(2001);
    expect(await l.cgroupPath()).toBe('workbay/inst-1');
  });

  it('takes the oldest of several topmost processes (a re-parented daemon of the workspace)', async () => {
    await add(2100, { uid: WS_UID, ppid: 1, start: 50, mntNs: 'mnt:[1]' });
    expect(await locator().initPid()).toBe(2001);
  });

  it("prefers a process in a cgroup named by the instance (another daemon's workspace may share the uid)", async () => {
    await add(1500, { uid: WS_UID, ppid: 1, start: 2, cgroup: '/other-daemon/inst-9', mntNs: 'mnt:[9]' });
    expect(await locator().initPid()).toBe(2001);
  });

  it('identifies no workspace by uid 0 or the daemon uid', async () => {
    expect(await locator(0).initPid()).toBeUndefined();
    const self = new WorkspaceProcessLocator({ uid: 4242, instanceId: 'inst-1', procRoot: proc, selfUid: 4242 });
    await add(2200, { uid: 4242, ppid: 1, start: 60, mntNs: 'mnt:[3]' });
    expect(await self.initPid()).toBeUndefined();
  });

  it('notices a recycled pid and looks again', async () => {
    const l = locator();
    expect(await l.initPid()).toBe(2001);
    await add(2001, { uid: WS_UID, ppid: 2000, start: 99, mntNs: 'mnt:[1]' }); // same pid, another process
    await add(2002, { uid: 0, ppid: 1, start: 12 });
    await add(2500, { uid: WS_UID, ppid: 1, start: 40, mntNs: 'mnt:[1]' });
    // 2001 (start 99) and 2500 (start 40) are both topmost now; the older wins.
    expect(await l.initPid()).toBe(2500);
  });

  it('scans /proc at most once per interval while the workspace has no process', async () => {
    const l = locator(WS_UID + 5);
    expect(await l.initPid()).toBeUndefined();
    await add(2600, { uid: WS_UID + 5, ppid: 1, start: 70, mntNs: 'mnt:[5]' });
    expect(await l.initPid()).toBeUndefined();
    clock += 1000;
    expect(await l.initPid()).toBe(2600);
  });

  it('refuses a workspace process that shares the daemon mount namespace', async () => {
    await add(2001, { uid: WS_UID, ppid: 2000, start: 11, cgroup: '/workbay/inst-1' });
    const e = await locator()
      .initPid()
      .catch((error: unknown) => error);
    expect(e).toBeInstanceOf(FailedPreconditionError);
    expect((e as Error).message).toMatch(/not isolated/);
  });

  it('gives no cgroup that is not named by the instance, or that holds the daemon', async () => {
    await add(2001, { uid: WS_UID, ppid: 2000, start: 11, cgroup: '/', mntNs: 'mnt:[1]' });
    expect(await locator().cgroupPath()).toBeUndefined();
    await add(DAEMON, { uid: 0, ppid: 1, start: 5, cgroup: '/workbay/inst-1/daemon' });
    await add(2001, { uid: WS_UID, ppid: 2000, start: 11, cgroup: '/workbay/inst-1/workspace', mntNs: 'mnt:[1]' });
    expect(await locator().cgroupPath()).toBeUndefined();
    // Another workspace's id in the path does not make it this one's.
    expect(await locator(WS_UID + 1, 'inst-1').cgroupPath()).toBeUndefined();
  });

  it("finds the local runtime's cgroup, named by its tag and the instance id", async () => {
    await add(2001, { uid: WS_UID, ppid: 2000, start: 11, cgroup: '/workbay/4ba803bf50f7-inst-1', mntNs: 'mnt:[1]' });
    expect(await locator().cgroupPath()).toBe('workbay/4ba803bf50f7-inst-1');
    // Another instance whose id ends like this one's is not it.
    expect(await locator(WS_UID, 'st-1').cgroupPath()).toBeUndefined();
  });

  it('keeps the workspace cgroup after EvacuateCGroup moved the processes below it', async () => {
    await add(2001, {
      uid: WS_UID,
      ppid: 2000,
      start: 11,
      cgroup: '/workbay/inst-1/workspace/user',
      mntNs: 'mnt:[1]',
    });
    expect(await locator().cgroupPath()).toBe('workbay/inst-1');
  });
});
