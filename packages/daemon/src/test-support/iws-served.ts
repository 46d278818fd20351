import type { ChildProcessByStdio } from 'node:child_process';
import { chown, mkdir, mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Readable, Writable } from 'node:stream';
import { InWorkspaceServiceService, WorkspaceInfoServiceService } from '@workbay/api';
import type { Cgroup } from '@workbay/nsinsider';
import { CgroupController } from '@workbay/nsinsider';
import { afterAll, beforeAll } from 'vitest';
import type { DaemonOverrides } from '../daemon.js';
import type { TestDaemon } from './daemon-harness.js';
import { startTestDaemon } from './daemon-harness.js';
import type { AsUser, ProbeCall, ProbeResult, WorkspaceProcess } from './iws-probe.js';
import { startWorkspaceProcess, writeProbe } from './iws-probe.js';

// Shared setup of the served in-workspace service specs (served*.integration.spec.ts): the real daemon serving the
// in-workspace service per workspace, attacked from real processes: workspace processes in their own pid and mount
// namespaces with their socket directory bind-mounted (as the local runtime does at /.workbay), running as the
// workspace's host uid, and strangers running as other uids. Runs as root.

export const STRANGER = 45_999;
export const status = {
  OK: 0,
  INVALID_ARGUMENT: 3,
  NOT_FOUND: 5,
  RESOURCE_EXHAUSTED: 8,
  FAILED_PRECONDITION: 9,
} as const;

export const info: ProbeCall = {
  path: WorkspaceInfoServiceService.workspaceInfo.path,
  request: WorkspaceInfoServiceService.workspaceInfo.requestSerialize({}),
};
export const iwsInfo: ProbeCall = {
  path: InWorkspaceServiceService.workspaceInfo.path,
  request: InWorkspaceServiceService.workspaceInfo.requestSerialize({}),
};
export const teardown: ProbeCall = {
  path: InWorkspaceServiceService.teardown.path,
  request: InWorkspaceServiceService.teardown.requestSerialize({}),
};
export const mountProc = (target: string, pid: number): ProbeCall => ({
  path: InWorkspaceServiceService.mountProc.path,
  request: InWorkspaceServiceService.mountProc.requestSerialize({ target, pid }),
});
export const umountProc = (target: string, pid: number): ProbeCall => ({
  path: InWorkspaceServiceService.umountProc.path,
  request: InWorkspaceServiceService.umountProc.requestSerialize({ target, pid }),
});

/** The connection cap of these workspaces' sockets (the default is 64). */
export const MAX_CONNECTIONS = 16;

/** Resolves with the first line of the child's stdout that satisfies `match`. */
export function lineOf(
  child: ChildProcessByStdio<Writable, Readable, null>,
  match: (line: string) => boolean,
  ms = 30_000,
): Promise<string> {
  return new Promise((resolve, reject) => {
    let buffer = '';
    const timer = setTimeout(() => reject(new Error(`no matching line in ${ms} ms: ${buffer}`)), ms);
    const onData = (b: Buffer): void => {
      buffer += b.toString();
      const line = buffer.split('\n').find((l) => match(l));
      if (line !== undefined) {
        clearTimeout(timer);
        child.stdout.off('data', onData);
        resolve(line);
      }
    };
    child.stdout.on('data', onData);
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`exited with ${code}: ${buffer}`));
    });
  });
}

export const codeOf = (r: ProbeResult | undefined): number => (r === undefined ? -1 : 'hex' in r ? status.OK : r.code);
export const memoryLimit = (r: ProbeResult | undefined): number | undefined =>
  r && 'hex' in r
    ? WorkspaceInfoServiceService.workspaceInfo.responseDeserialize(Buffer.from(r.hex, 'hex')).resources?.memory?.limit
    : undefined;

export interface Ws {
  readonly id: string;
  readonly uid: number;
  readonly gid: number;
  readonly dir: string;
  readonly socket: string;
  /** Where the workspace process sees its socket directory. */
  readonly mount: string;
  proc?: WorkspaceProcess;
  cgroup?: Cgroup;
  /** The workspace's uid inside its own mount namespace: what code in the workspace is. */
  readonly inside: () => AsUser;
}

/** The state of one served spec file; `t` is replaced by the specs that restart the daemon, `clock` is advanced. */
export interface ServedSuite {
  t: TestDaemon;
  scratch: string;
  probe: string;
  clock: number;
  readonly overrides: DaemonOverrides;
  /** Workspaces ws-a and ws-b, initialised and running before the first test. */
  a: Ws;
  b: Ws;
  initWorkspace(id: string, uid: number): Promise<Ws>;
  /** Starts the workspace's process (after InitWorkspace, as the runtime does) in a cgroup named by its id. */
  run(ws: Ws, options?: { isolated?: boolean }): Promise<void>;
}

/** Registers the suite's beforeAll/afterAll (call it inside a `describe`) and returns its state. */
export function useServedWorkspaces(): ServedSuite {
  let cgroups: CgroupController;
  let parent: Cgroup;
  const all: Ws[] = [];
  const s = {
    clock: 0,
    overrides: {
      iws: { config: { cpuSampleMs: 10, namespaceOps: true, maxConnections: MAX_CONNECTIONS }, now: () => s.clock },
    },
    async initWorkspace(id: string, uid: number): Promise<Ws> {
      const { t, scratch } = s;
      // The content directory's owner is the workspace's host identity. Until the daemon allocates one itself the
      // test hands it out; a daemon that allocates overrides it, and the test follows whatever owner it finds.
      const content = join(t.workingArea, id);
      await mkdir(content, { recursive: true });
      await chown(content, uid, uid);
      await t.client.initWorkspace({
        id,
        metadata: { owner: 'alice', metaId: `meta-${id}` },
        initializer: { spec: { $case: 'empty', value: {} } },
      });
      const owner = await stat(content);
      const dir = join(t.workingArea, '.iws', id);
      const mount = join(scratch, `mnt-${id}`);
      await mkdir(mount);
      const ws: Ws = {
        id,
        uid: owner.uid,
        gid: owner.gid,
        dir,
        socket: join(dir, 'daemon.sock'),
        mount,
        inside: () => ({ uid: ws.uid, gid: ws.gid, mountNsOf: ws.proc!.pid }),
      };
      all.push(ws);
      return ws;
    },
    async run(ws: Ws, options: { isolated?: boolean } = {}): Promise<void> {
      ws.proc = await startWorkspaceProcess({
        uid: ws.uid,
        gid: ws.gid,
        iwsDir: ws.dir,
        mountPoint: ws.mount,
        ...(options.isolated === false ? { isolated: false } : {}),
      });
      ws.cgroup = parent.child(ws.id);
      await ws.cgroup.create();
      await ws.cgroup.setMemoryLimit(256 * 1024 * 1024);
      await ws.cgroup.addProcess(ws.proc.pid);
    },
  } as ServedSuite;

  beforeAll(async () => {
    s.scratch = await mkdtemp(join(tmpdir(), 'iws-served-'));
    s.probe = await writeProbe(s.scratch);
    cgroups = await CgroupController.detect();
    parent = cgroups.cgroup(`workbay-iws-served-${process.pid}`);
    await parent.create();
    s.t = await startTestDaemon({ overrides: s.overrides });
    s.a = await s.initWorkspace('ws-a', 41_001);
    s.b = await s.initWorkspace('ws-b', 41_002);
    await s.run(s.a);
    await s.run(s.b);
  });

  afterAll(async () => {
    for (const ws of all) ws.proc?.kill();
    for (const ws of all) {
      await ws.cgroup?.kill().catch(() => undefined);
      await ws.cgroup?.remove().catch(() => undefined);
    }
    await parent?.remove().catch(() => undefined);
    await s.t?.cleanup();
    if (s.scratch) await rm(s.scratch, { recursive: true, force: true });
  });

  return s;
}
