/**
 * Attacks on the control plane (issue 8, items 9, 10, 14, 15 and invariants 7, 12): oversized and deeply nested
 * requests answer a short INVALID_ARGUMENT without stalling other calls on the same connection; a refused request
 * leaves no trace, so a corrected retry works; `workbay up` killed with SIGKILL starts again (no orphan holds the
 * daemon port); a slow but reading Subscribe client is not cut off during a burst; gRPC bound beyond loopback is
 * never open to an unauthenticated client.
 */
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { contentservice, createWorkspaceManagerClient, wsman } from '@workbay/api';
import { freePort } from '@workbay/testing';
import { INVALID_ARGUMENT, outcome, show } from './attack-kit.js';
import type { CallOutcome } from './attack-kit.js';
import {
  bootWorkbay,
  contentDir,
  emptyInit,
  gitInit,
  startRequest,
  startRunning,
  waitForPhase,
  workspaceSnapshot,
} from './harness.js';
import type { Initializer, Workbay } from './harness.js';

let wb: Workbay;
let before: string[];
const MB = 'a'.repeat(1024 * 1024);
const many = <T>(n: number, f: (i: number) => T): T[] => Array.from({ length: n }, (_, i) => f(i));

beforeAll(async () => {
  wb = await bootWorkbay();
  await startRunning(wb, { id: 'cp-running' });
  before = await workspaceSnapshot(wb);
}, 180_000);

afterAll(async () => {
  await wb?.cleanup();
});

function nested(depth: number): Initializer {
  let init: Initializer = emptyInit();
  for (let i = 0; i < depth; i++) {
    init = contentservice.WorkspaceInitializer.fromPartial({
      spec: { $case: 'composite', value: { initializer: [init] } },
    });
  }
  return init;
}

const flatComposite = (n: number): Initializer =>
  contentservice.WorkspaceInitializer.fromPartial({
    spec: { $case: 'composite', value: { initializer: many(n, () => emptyInit()) } },
  });

/** The refusal is INVALID_ARGUMENT, short, and quotes at most a short prefix of the input. */
function expectBoundedRefusal(o: CallOutcome): void {
  expect(o.codeName, show(o)).toBe('INVALID_ARGUMENT');
  expect(o.code).toBe(INVALID_ARGUMENT);
  expect(o.message.length, 'a short message').toBeLessThanOrEqual(1024);
  expect(o.message, 'quotes at most a short prefix').not.toContain('a'.repeat(200));
}

const start = (patch: (r: wsman.StartWorkspaceRequest) => void, id = 'cp-big'): wsman.StartWorkspaceRequest => {
  const r = startRequest({ id });
  patch(r);
  return r;
};

describe('oversized manager requests answer a short INVALID_ARGUMENT and stall nobody', () => {
  const cases: readonly [string, () => Promise<unknown>][] = [
    ['StartWorkspace: 1 MB id', () => wb.manager.startWorkspace(start((r) => (r.id = MB)))],
    ['StartWorkspace: 1 MB owner', () => wb.manager.startWorkspace(start((r) => (r.metadata!.owner = MB)))],
    ['StartWorkspace: 1 MB image', () => wb.manager.startWorkspace(start((r) => (r.spec!.workspaceImage = MB)))],
    [
      'StartWorkspace: 1 MB env name',
      () => wb.manager.startWorkspace(start((r) => (r.spec!.envvars = [{ name: MB, value: 'x' }]))),
    ],
    [
      'StartWorkspace: 100k env vars',
      () =>
        wb.manager.startWorkspace(
          start((r) => (r.spec!.envvars = many(100_000, (i) => ({ name: `V${i}`, value: 'x' })))),
        ),
    ],
    [
      'StartWorkspace: 100k ports',
      () =>
        wb.manager.startWorkspace(
          start((r) => (r.spec!.ports = many(100_000, (i) => wsman.PortSpec.fromPartial({ port: (i % 60000) + 1 })))),
        ),
    ],
    [
      'StartWorkspace: 100k SSH keys',
      () => wb.manager.startWorkspace(start((r) => (r.spec!.sshPublicKeys = many(100_000, () => 'ssh-ed25519 AAAA')))),
    ],
    [
      'StartWorkspace: 100k annotations',
      () =>
        wb.manager.startWorkspace(
          start((r) => (r.metadata!.annotations = Object.fromEntries(many(100_000, (i) => [`k${i}`, 'v'])))),
        ),
    ],
    [
      'StartWorkspace: 1 MB git custom_config key',
      () =>
        wb.manager.startWorkspace(
          start(
            (r) =>
              (r.spec!.initializer = gitInit('https://example.invalid/r.git', {
                config: { customConfig: { [MB]: 'x' } },
              })),
          ),
        ),
    ],
    [
      'StartWorkspace: 100k composite initializers',
      () => wb.manager.startWorkspace(start((r) => (r.spec!.initializer = flatComposite(100_000)))),
    ],
    [
      'StartWorkspace: initializers nested 1,000 deep',
      () => wb.manager.startWorkspace(start((r) => (r.spec!.initializer = nested(1000)))),
    ],
    ['StopWorkspace: 1 MB id', () => wb.manager.stopWorkspace({ id: MB })],
    ['DescribeWorkspace: 1 MB id', () => wb.manager.describeWorkspace({ id: MB })],
    ['MarkActive: 1 MB id', () => wb.manager.markActive({ id: MB })],
    ['SetTimeout: 1 MB duration', () => wb.manager.setTimeout({ id: 'cp-running', duration: MB })],
    ['ControlPort: 1 MB id', () => wb.manager.controlPort({ id: MB, expose: true, spec: { port: 8080 } })],
    [
      'UpdateSSHKey: 100k keys',
      () => wb.manager.updateSshKey({ id: 'cp-running', keys: many(100_000, () => 'ssh-ed25519 AAAA') }),
    ],
    ['UpdateSSHKey: a 1 MB key', () => wb.manager.updateSshKey({ id: 'cp-running', keys: [`ssh-ed25519 ${MB}`] })],
    [
      'GetWorkspaces: 100k annotations in the filter',
      () =>
        wb.manager.getWorkspaces({
          mustMatch: { annotations: Object.fromEntries(many(100_000, (i) => [`k${i}`, 'v'])) },
        }),
    ],
    ['DeleteVolumeSnapshot: 1 MB handle', () => wb.manager.deleteVolumeSnapshot({ id: 'x', volumeHandle: MB })],
    ['TakeSnapshot: 1 MB id', () => wb.manager.takeSnapshot({ id: MB })],
  ];
  for (const [name, call] of cases) {
    it(name, async () => {
      const [result, other] = await Promise.all([
        outcome(call()),
        outcome(wb.manager.describeCluster({}, { timeoutMs: 20_000 })),
      ]);
      expectBoundedRefusal(result);
      expect(other.ok, `another call on the same connection: ${show(other)}`).toBe(true);
    });
  }
});

describe('oversized daemon requests answer a short INVALID_ARGUMENT and stall nobody', () => {
  const init = (patch: Partial<Parameters<Workbay['daemon']['initWorkspace']>[0] & object>): Promise<unknown> =>
    wb.daemon.initWorkspace({
      id: 'cp-d-big',
      metadata: { owner: 'alice', metaId: 'm' },
      initializer: emptyInit(),
      ...patch,
    });
  const cases: readonly [string, () => Promise<unknown>][] = [
    ['InitWorkspace: 1 MB id', () => init({ id: MB })],
    ['InitWorkspace: 1 MB owner', () => init({ metadata: { owner: MB, metaId: 'm' } })],
    [
      'InitWorkspace: 1 MB checkout location',
      () => init({ initializer: gitInit('https://example.invalid/r.git', { checkoutLocation: MB }) }),
    ],
    [
      'InitWorkspace: 1 MB snapshot name',
      () => init({ initializer: { spec: { $case: 'snapshot', value: { snapshot: `${MB}@b` } } } }),
    ],
    ['InitWorkspace: 100k composite initializers', () => init({ initializer: flatComposite(100_000) })],
    ['InitWorkspace: initializers nested 1,000 deep', () => init({ initializer: nested(1000) })],
    ['WaitForInit: 1 MB id', () => wb.daemon.waitForInit({ id: MB })],
    ['IsWorkspaceExists: 1 MB id', () => wb.daemon.isWorkspaceExists({ id: MB })],
    ['TakeSnapshot: 1 MB id', () => wb.daemon.takeSnapshot({ id: MB })],
    ['DisposeWorkspace: 1 MB id', () => wb.daemon.disposeWorkspace({ id: MB })],
    ['BackupWorkspace: 1 MB id', () => wb.daemon.backupWorkspace({ id: MB })],
    ['DeleteSnapshot: 1 MB name', () => wb.daemon.deleteSnapshot({ snapshot: MB })],
  ];
  for (const [name, call] of cases) {
    it(name, async () => {
      const [result, other] = await Promise.all([
        outcome(call()),
        outcome(wb.daemon.isWorkspaceExists({ id: 'x' }, { timeoutMs: 20_000 })),
      ]);
      expectBoundedRefusal(result);
      expect(other.ok, `another call on the same connection: ${show(other)}`).toBe(true);
    });
  }

  it('none of them registered anything', async () => {
    expect((await wb.daemon.isWorkspaceExists({ id: 'cp-d-big' })).exists).toBe(false);
    expect(await workspaceSnapshot(wb)).toEqual(before);
  });
});

describe('a refused request leaves no trace; the corrected retry works', () => {
  it('daemon: a bad checkout_location, then the same id corrected', async () => {
    const id = 'cp-retry-daemon';
    const bad = await outcome(
      wb.daemon.initWorkspace({
        id,
        metadata: { owner: 'alice', metaId: id },
        initializer: gitInit('https://example.invalid/r.git', { checkoutLocation: '../../outside' }),
      }),
    );
    expect(bad.codeName, show(bad)).toBe('INVALID_ARGUMENT');
    expect((await wb.daemon.isWorkspaceExists({ id })).exists).toBe(false);
    expect(existsSync(contentDir(wb, id))).toBe(false);
    const good = await outcome(
      wb.daemon.initWorkspace({ id, metadata: { owner: 'alice', metaId: id }, initializer: emptyInit() }),
    );
    expect(good.ok, show(good)).toBe(true);
    await wb.daemon.disposeWorkspace({ id, backup: false });
  });

  it('manager: a bad port, then the same id corrected', async () => {
    const id = 'cp-retry-manager';
    const bad = startRequest({ id });
    bad.spec!.ports = [wsman.PortSpec.fromPartial({ port: 70_000 })];
    const refused = await outcome(wb.manager.startWorkspace(bad));
    expect(refused.codeName, show(refused)).toBe('INVALID_ARGUMENT');
    expect((await outcome(wb.manager.describeWorkspace({ id }))).codeName).toBe('NOT_FOUND');
    expect(await workspaceSnapshot(wb)).toEqual(before);
    await startRunning(wb, { id });
    await wb.manager.stopWorkspace({ id, policy: wsman.StopWorkspacePolicy.IMMEDIATELY });
    await waitForPhase(wb, id, [wsman.WorkspacePhase.STOPPED]);
  });
});

describe('Subscribe: a slow but reading client is not cut off by a burst', () => {
  it('receives every update of a 1,000-update burst', async () => {
    const stream = wb.manager.subscribe({ mustMatch: { owner: 'alice', metaId: 'meta-cp-running' } });
    let seen = 0;
    let highest = 0;
    let resync = false;
    let failure = '';
    let cancelled = false;
    const reader = (async () => {
      try {
        for await (const update of stream) {
          seen++;
          if (update.resyncRequired) resync = true;
          highest = Math.max(highest, update.status?.statusVersion ?? 0);
          await new Promise((resolve) => setTimeout(resolve, 10));
        }
      } catch (error) {
        if (!cancelled) failure = String(error);
      }
    })();
    for (let i = 0; i < 1000; i++) {
      const level = i % 2 === 0 ? wsman.AdmissionLevel.ADMIT_EVERYONE : wsman.AdmissionLevel.ADMIT_OWNER_ONLY;
      await wb.manager.controlAdmission({ id: 'cp-running', level });
    }
    const target = (await wb.manager.describeWorkspace({ id: 'cp-running' })).status!.statusVersion;
    const deadline = Date.now() + 90_000;
    while (highest < target && failure === '' && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    cancelled = true;
    stream.cancel();
    await reader;
    expect(failure, 'the stream ended with an error').toBe('');
    expect(resync).toBe(false);
    expect(highest).toBe(target);
    expect(seen).toBeGreaterThanOrEqual(1000);
  }, 120_000);
});

describe('crash hygiene: workbay up killed with SIGKILL starts again', () => {
  it('no orphan keeps the daemon port; the second up serves and re-adopts the workspace', async () => {
    const managerAddress = `127.0.0.1:${await freePort()}`;
    const daemonAddress = `127.0.0.1:${await freePort()}`;
    const first = await bootWorkbay({ managerAddress, daemonAddress });
    let second: Workbay | undefined;
    try {
      await startRunning(first, { id: 'crash-ws' });
      const exited = new Promise((resolve) => first.process.once('exit', resolve));
      first.process.kill('SIGKILL');
      await exited;
      second = await bootWorkbay({ dir: first.dir, managerAddress, daemonAddress });
      expect(second.daemonAddress).toBe(daemonAddress);
      const list = await outcome(second.manager.getWorkspaces({}));
      expect(list.ok, show(list)).toBe(true);
      expect(daemonsOf(first.dir), 'exactly one daemon serves this working area').toHaveLength(1);
      const ws = await outcome(second.manager.describeWorkspace({ id: 'crash-ws' }));
      expect(ws.ok, show(ws)).toBe(true);
    } finally {
      await second?.cleanup();
      await first.cleanup();
    }
  }, 180_000);
});

/** Pids of daemon processes started for the boot directory `dir`. */
function daemonsOf(dir: string): number[] {
  const out: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (readFileSync(`/proc/${entry}/cmdline`, 'utf8').includes(path.join(dir, 'daemon.yaml')))
        out.push(Number(entry));
    } catch {
      // Gone meanwhile.
    }
  }
  return out;
}

describe('gRPC beyond loopback is never open to an unauthenticated client', () => {
  it('workbay up on 0.0.0.0 without TLS or tokens refuses to start, or refuses the call', async () => {
    const external = Object.values(os.networkInterfaces())
      .flat()
      .find((i) => i && i.family === 'IPv4' && !i.internal)?.address;
    let booted: Workbay | undefined;
    let refusal = '';
    try {
      booted = await bootWorkbay({ managerAddress: '0.0.0.0:0' });
    } catch (error) {
      refusal = String(error);
    }
    try {
      if (!booted) {
        expect(refusal, 'the refusal names the setting').toMatch(/grpc|tls|auth|token/i);
        return;
      }
      const port = booted.managerAddress.slice(booted.managerAddress.lastIndexOf(':') + 1);
      const client = createWorkspaceManagerClient(`${external ?? '127.0.0.1'}:${port}`, { defaultTimeoutMs: 10_000 });
      const list = await outcome(client.getWorkspaces({}));
      client.close();
      expect(list.codeName, show(list)).toMatch(/UNAUTHENTICATED|PERMISSION_DENIED/);
    } finally {
      await booted?.cleanup();
    }
  }, 120_000);
});
