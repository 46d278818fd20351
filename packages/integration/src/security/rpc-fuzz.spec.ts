/**
 * Property-based fuzzing (issue 8 "Must show", invariants 7 and 12) of every manager RPC, every daemon RPC and the
 * port proxy of a real `workbay up`, with adversarial field values: huge strings, unicode and binary, path tricks,
 * negative and out-of-range numbers, unknown enum values, empty and nested initializers. Properties: the servers
 * stay up; every non-OK answer is a sensible refusal (a code other than UNKNOWN/INTERNAL with a short, non-empty
 * message); requests that are invalid by construction are refused; and GetWorkspaces and the storage listing are
 * unchanged afterwards.
 */
import fc from 'fast-check';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { contentservice } from '@workbay/api';
import { outcome, rawHttp, show, tryFetch } from './attack-kit.js';
import {
  badStart,
  check,
  dict,
  enumValue,
  id,
  initializer,
  int64,
  numRuns,
  port,
  reporter,
  run,
  settings,
  str,
  strings,
  target,
  uint64,
} from './fuzz-kit.js';
import { bootWorkbay, listTree, startRunning, workspaceSnapshot } from './harness.js';
import type { Workbay } from './harness.js';

let wb: Workbay;
let token = '';
let beforeWorkspaces: string[];
let beforeStorage: string[];

/** Crashes seen (the tail of what `workbay up` printed): the run reboots after one, so every RPC gets its turn. */
const crashes: string[] = [];

async function boot(): Promise<void> {
  wb = await bootWorkbay();
  token = (await startRunning(wb, { id: target })).ownerToken;
  beforeWorkspaces = await workspaceSnapshot(wb);
  beforeStorage = await listTree(wb.storageRoot);
}

beforeAll(boot, 180_000);

beforeEach(async () => {
  if (!wb.crashed()) return;
  crashes.push(wb.stderr().slice(-1500));
  await wb.cleanup();
  await boot();
}, 180_000);

afterAll(async () => {
  await wb?.cleanup();
});

describe('manager RPCs under fuzzing', () => {
  const m = () => wb.manager;
  const props: readonly [string, () => Promise<void>][] = [
    [
      'StartWorkspace',
      run(fc.asyncProperty(badStart, async (r) => check('StartWorkspace', await outcome(m().startWorkspace(r)), true))),
    ],
    [
      'StopWorkspace',
      run(
        fc.asyncProperty(str, enumValue, async (i, policy) =>
          check('StopWorkspace', await outcome(m().stopWorkspace({ id: i === target ? `${i}x` : i, policy })), false),
        ),
      ),
    ],
    [
      'DescribeWorkspace',
      run(
        fc.asyncProperty(id, async (i) =>
          check('DescribeWorkspace', await outcome(m().describeWorkspace({ id: i })), false),
        ),
      ),
    ],
    [
      'GetWorkspaces',
      run(
        fc.asyncProperty(str, str, dict, async (owner, metaId, annotations) =>
          check(
            'GetWorkspaces',
            await outcome(m().getWorkspaces({ mustMatch: { owner, metaId, annotations } })),
            false,
          ),
        ),
      ),
    ],
    [
      'MarkActive',
      run(
        fc.asyncProperty(id, fc.boolean(), fc.boolean(), async (i, closed, ignoreIfActive) =>
          check('MarkActive', await outcome(m().markActive({ id: i, closed, ignoreIfActive })), false),
        ),
      ),
    ],
    [
      'SetTimeout',
      run(
        fc.asyncProperty(id, str, enumValue, async (i, duration, type) =>
          check('SetTimeout', await outcome(m().setTimeout({ id: i, duration, type })), false),
        ),
      ),
    ],
    [
      'ControlPort',
      run(
        fc.asyncProperty(id, fc.boolean(), port, async (i, expose, spec) =>
          check('ControlPort', await outcome(m().controlPort({ id: i, expose, spec })), false),
        ),
      ),
    ],
    [
      'TakeSnapshot',
      run(
        fc.asyncProperty(str, fc.boolean(), async (i, returnImmediately) =>
          check(
            'TakeSnapshot',
            await outcome(m().takeSnapshot({ id: i === target ? `${i}x` : i, returnImmediately })),
            true,
          ),
        ),
      ),
    ],
    [
      'ControlAdmission',
      run(
        fc.asyncProperty(id, enumValue, async (i, level) =>
          check('ControlAdmission', await outcome(m().controlAdmission({ id: i, level })), false),
        ),
      ),
    ],
    [
      'DeleteVolumeSnapshot',
      run(
        fc.asyncProperty(str, str, fc.boolean(), enumValue, async (i, volumeHandle, softDelete, wsType) =>
          check(
            'DeleteVolumeSnapshot',
            await outcome(m().deleteVolumeSnapshot({ id: i, volumeHandle, softDelete, wsType })),
            false,
          ),
        ),
      ),
    ],
    [
      'BackupWorkspace',
      run(
        fc.asyncProperty(str, async (i) =>
          check('BackupWorkspace', await outcome(m().backupWorkspace({ id: i === target ? `${i}x` : i })), true),
        ),
      ),
    ],
    [
      'UpdateSSHKey',
      run(
        fc.asyncProperty(id, strings, async (i, keys) =>
          check('UpdateSSHKey', await outcome(m().updateSshKey({ id: i, keys: [...keys, 'not a key'] })), true),
        ),
      ),
    ],
    [
      'DescribeCluster',
      run(
        fc.asyncProperty(fc.constant(0), async () =>
          check('DescribeCluster', await outcome(m().describeCluster({})), false),
        ),
      ),
    ],
  ];
  for (const [name, prop] of props) {
    it(
      name,
      async () => {
        await prop();
        expect(wb.crashed(), wb.stderr().slice(-1500)).toBe(false);
      },
      120_000,
    );
  }

  it('Subscribe with a fuzzed filter answers or refuses sensibly', async () => {
    await fc.assert(
      fc.asyncProperty(str, str, dict, uint64, async (owner, metaId, annotations, resume) => {
        const stream = m().subscribe({ mustMatch: { owner, metaId, annotations }, resumeFromStatusVersion: resume });
        const first = await outcome(
          (async () => {
            const it = stream[Symbol.asyncIterator]();
            const timer = setTimeout(() => stream.cancel(), 300);
            try {
              return await it.next();
            } finally {
              clearTimeout(timer);
            }
          })(),
        );
        stream.cancel();
        if (!first.ok && first.codeName !== 'CANCELLED') check('Subscribe', first, false);
      }),
      settings,
    );
  }, 120_000);
});

describe('daemon RPCs under fuzzing', () => {
  const d = () => wb.daemon;
  const badInit = fc
    .tuple(
      fc.record({ id: str, owner: str, metaId: str, initializer, quota: int64 }),
      fc.constantFrom('id', 'owner', 'init'),
    )
    .map(([r, broken]) => ({
      id: broken === 'id' ? `../${r.id}` : r.id,
      metadata: { owner: broken === 'owner' ? '' : r.owner, metaId: r.metaId },
      initializer: broken === 'init' ? contentservice.WorkspaceInitializer.fromPartial({}) : r.initializer,
      storageQuotaBytes: r.quota,
    }));
  const props: readonly [string, () => Promise<void>][] = [
    [
      'InitWorkspace',
      run(fc.asyncProperty(badInit, async (r) => check('InitWorkspace', await outcome(d().initWorkspace(r)), true))),
    ],
    [
      'WaitForInit',
      run(
        fc.asyncProperty(str, async (i) =>
          check('WaitForInit', await outcome(d().waitForInit({ id: i }, { timeoutMs: 5_000 })), false),
        ),
      ),
    ],
    [
      'IsWorkspaceExists',
      run(
        fc.asyncProperty(str, async (i) =>
          check('IsWorkspaceExists', await outcome(d().isWorkspaceExists({ id: i })), false),
        ),
      ),
    ],
    [
      'TakeSnapshot',
      run(
        fc.asyncProperty(str, fc.boolean(), async (i, returnImmediately) =>
          check(
            'TakeSnapshot',
            await outcome(d().takeSnapshot({ id: i === target ? `${i}x` : i, returnImmediately })),
            true,
          ),
        ),
      ),
    ],
    [
      'DisposeWorkspace',
      run(
        fc.asyncProperty(str, fc.boolean(), async (i, backup) =>
          check(
            'DisposeWorkspace',
            await outcome(d().disposeWorkspace({ id: i === target ? `${i}x` : i, backup })),
            false,
          ),
        ),
      ),
    ],
    [
      'BackupWorkspace',
      run(
        fc.asyncProperty(str, async (i) =>
          check('BackupWorkspace', await outcome(d().backupWorkspace({ id: i === target ? `${i}x` : i })), true),
        ),
      ),
    ],
    [
      'DeleteSnapshot',
      run(
        fc.asyncProperty(str, async (snapshot) =>
          check('DeleteSnapshot', await outcome(d().deleteSnapshot({ snapshot })), true),
        ),
      ),
    ],
    [
      'InitProgress',
      run(fc.asyncProperty(str, async (i) => check('InitProgress', await outcome(d().initProgress({ id: i })), false))),
    ],
  ];
  for (const [name, prop] of props) {
    it(
      name,
      async () => {
        await prop();
        expect(wb.crashed(), wb.stderr().slice(-1500)).toBe(false);
      },
      120_000,
    );
  }
});

describe('the proxy under fuzzing', () => {
  const pathArb = fc.oneof(
    fc.webPath(),
    str.map((s) => `/ws/${s}/`),
    fc.tuple(str, str).map(([a, b]) => `/ws/${target}/port/${a}/${b}`),
    fc.string({ unit: 'binary-ascii', maxLength: 200 }).map((s) => `/${s}`),
  );
  const headerValue = fc.string({ unit: 'binary-ascii', maxLength: 100 }).map((s) => s.replace(/[\r\n]/g, ''));
  it('never answers 500 (except a gateway error) and stays up', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom('GET', 'POST', 'PUT', 'DELETE', 'OPTIONS', 'HEAD', 'PATCH', 'G\u00ffT'),
        pathArb,
        fc.array(
          fc.tuple(
            fc.constantFrom(
              'Cookie',
              'Host',
              'X-Workbay-Owner-Token',
              'Upgrade',
              'Connection',
              'X-Forwarded-For',
              'Content-Type',
            ),
            headerValue,
          ),
          { maxLength: 5 },
        ),
        async (method, p, headers) => {
          const raw = Buffer.from(
            `${method} ${p} HTTP/1.1\r\nHost: ${wb.proxyAddress}\r\n${headers.map(([k, v]) => `${k}: ${v}\r\n`).join('')}Content-Length: 0\r\nConnection: close\r\n\r\n`,
            'latin1',
          );
          const res = await rawHttp(wb.proxyAddress, raw, 1000);
          if (res.status === 500 || res.status > 504) throw new Error(`${method} ${p}: ${res.headers.slice(0, 300)}`);
        },
      ),
      { numRuns: numRuns * 6, endOnFailure: true, reporter },
    );
    expect(wb.crashed(), wb.stderr().slice(-1500)).toBe(false);
    const ok = await tryFetch(`http://${wb.proxyAddress}/ws/${target}/`, {
      headers: { 'x-workbay-owner-token': token },
    });
    expect(ok.status).toBe(200);
  }, 180_000);
});

describe('after the fuzzing', () => {
  it('no fuzzed input took workbay up down', () => {
    expect(crashes).toEqual([]);
  });

  it('workbay up is still running and serving', async () => {
    expect(wb.crashed(), wb.stderr().slice(-1500)).toBe(false);
    const cluster = await outcome(wb.manager.describeCluster({}));
    expect(cluster.ok, show(cluster)).toBe(true);
    const exists = await outcome(wb.daemon.isWorkspaceExists({ id: target }));
    expect(exists.ok, show(exists)).toBe(true);
  });

  it('GetWorkspaces is unchanged', async () => {
    expect(await workspaceSnapshot(wb)).toEqual(beforeWorkspaces);
  });

  it('the storage listing is unchanged', async () => {
    expect(await listTree(wb.storageRoot)).toEqual(beforeStorage);
  });
});
