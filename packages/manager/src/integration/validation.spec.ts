import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FailedPreconditionError, InvalidArgumentError, NotFoundError, wsman } from '@workbay/api';
import { startHarness, startRequest, waitForPhase } from '../test-support/harness.js';
import type { Harness } from '../test-support/harness.js';

type Mutate = (r: wsman.StartWorkspaceRequest) => void;

describe('bad input: INVALID_ARGUMENT naming the field, and nothing changes', () => {
  let h: Harness;
  let id: string;
  beforeAll(async () => {
    h = await startHarness();
    const request = startRequest();
    id = request.id;
    await h.client.startWorkspace(request);
    await waitForPhase(h.client, id, 'running');
  });
  afterAll(async () => {
    await h?.close();
  });

  /** Runs `call`, expects INVALID_ARGUMENT for `field`, and checks that no status changed. */
  async function rejects(call: () => Promise<unknown>, field: string, message?: RegExp): Promise<void> {
    const before = h.running.core.statusVersion;
    const workspaces = (await h.client.getWorkspaces({})).status;
    let error: unknown;
    try {
      await call();
    } catch (e) {
      error = e;
    }
    expect(error, `expected INVALID_ARGUMENT for ${field}`).toBeInstanceOf(InvalidArgumentError);
    expect((error as InvalidArgumentError).field).toBe(field);
    expect((error as Error).message.startsWith(`${field}: `)).toBe(true);
    if (message) expect((error as Error).message).toMatch(message);
    expect(h.running.core.statusVersion).toBe(before);
    expect((await h.client.getWorkspaces({})).status).toEqual(workspaces);
  }

  const startCases: Array<[string, Mutate, string, RegExp?]> = [
    ['empty id', (r) => (r.id = ''), 'id', /is required/],
    ['id with a slash', (r) => (r.id = '../etc'), 'id', /not a valid id/],
    ['no metadata', (r) => (r.metadata = undefined), 'metadata'],
    ['no owner', (r) => (r.metadata!.owner = ''), 'metadata.owner'],
    ['bad owner', (r) => (r.metadata!.owner = 'a b'), 'metadata.owner'],
    ['no meta id', (r) => (r.metadata!.metaId = ''), 'metadata.meta_id'],
    ['no spec', (r) => (r.spec = undefined), 'spec'],
    ['no image', (r) => (r.spec!.workspaceImage = ''), 'spec.workspace_image'],
    ['no location', (r) => (r.spec!.workspaceLocation = ''), 'spec.workspace_location'],
    ['absolute location', (r) => (r.spec!.workspaceLocation = '/etc'), 'spec.workspace_location'],
    ['no initializer', (r) => (r.spec!.initializer = undefined), 'spec.initializer'],
    ['empty initializer', (r) => (r.spec!.initializer = { spec: undefined }), 'spec.initializer'],
    [
      'git without remote',
      (r) =>
        (r.spec!.initializer = {
          spec: {
            $case: 'git',
            value: {
              remoteUri: '',
              upstreamRemoteUri: '',
              targetMode: 0,
              cloneTaget: '',
              checkoutLocation: '',
              fullClone: false,
            },
          },
        }),
      'spec.initializer.git.remote_uri',
    ],
    [
      'malformed snapshot',
      (r) =>
        (r.spec!.initializer = {
          spec: { $case: 'snapshot', value: { snapshot: 'nobucket', fromVolumeSnapshot: false } },
        }),
      'spec.initializer.snapshot.snapshot',
    ],
    ['port 0', (r) => (r.spec!.ports = [{ port: 0, visibility: 0, url: '', protocol: 0 }]), 'spec.ports[0].port'],
    [
      'duplicate ports',
      (r) =>
        (r.spec!.ports = [
          { port: 3000, visibility: 0, url: '', protocol: 0 },
          { port: 3000, visibility: 1, url: '', protocol: 0 },
        ]),
      'spec.ports[1].port',
      /listed twice/,
    ],
    [
      'unknown port visibility',
      (r) => (r.spec!.ports = [{ port: 3000, visibility: 9 as never, url: '', protocol: 0 }]),
      'spec.ports[0].visibility',
    ],
    [
      'unknown port protocol',
      (r) => (r.spec!.ports = [{ port: 3000, visibility: 0, url: '', protocol: 9 as never }]),
      'spec.ports[0].protocol',
    ],
    ['unparseable timeout', (r) => (r.spec!.timeout = '30 minutes'), 'spec.timeout', /invalid duration/],
    ['unparseable closed timeout', (r) => (r.spec!.closedTimeout = 'soon'), 'spec.closed_timeout'],
    ['negative lifetime', (r) => (r.spec!.maximumLifetime = '-1h'), 'spec.maximum_lifetime'],
    ['unknown admission', (r) => (r.spec!.admission = 7 as never), 'spec.admission'],
    ['unknown type', (r) => (r.type = 99 as never), 'type'],
    ['PROBE type', (r) => (r.type = wsman.WorkspaceType.PROBE), 'type', /no longer supported/],
    ['unknown class', (r) => (r.spec!.class = 'g9-huge'), 'spec.class', /unknown workspace class/],
    ['unknown feature flag', (r) => (r.spec!.featureFlags = [99 as never]), 'spec.feature_flags[0]'],
    ['empty env name', (r) => (r.spec!.envvars = [{ name: '', value: 'x' }]), 'spec.envvars[0].name'],
    ['bad env name', (r) => (r.spec!.envvars = [{ name: '1X=', value: 'x' }]), 'spec.envvars[0].name'],
    [
      'secret env reference',
      (r) => (r.spec!.envvars = [{ name: 'TOKEN', value: '', secret: { secretName: 's', key: 'k' } }]),
      'spec.envvars[0].secret',
    ],
    ['bad sys env', (r) => (r.spec!.sysEnvvars = [{ name: 'A B', value: 'x' }]), 'spec.sys_envvars[0].name'],
    ['bad ssh key', (r) => (r.spec!.sshPublicKeys = ['not a key']), 'spec.ssh_public_keys[0]'],
  ];

  it.each(startCases)('StartWorkspace: %s', async (_name, mutate, field, message) => {
    const request = startRequest();
    mutate(request);
    await rejects(() => h.client.startWorkspace(request), field, message);
  });

  it('StopWorkspace', async () => {
    await rejects(() => h.client.stopWorkspace({ id: '' }), 'id');
    await rejects(() => h.client.stopWorkspace({ id, policy: 9 as never }), 'policy');
  });

  it('DescribeWorkspace', async () => {
    await rejects(() => h.client.describeWorkspace({ id: '' }), 'id');
    await rejects(() => h.client.describeWorkspace({ id: 'a/b' }), 'id');
    await expect(h.client.describeWorkspace({ id: 'unknown' })).rejects.toBeInstanceOf(NotFoundError);
  });

  it('MarkActive', async () => {
    await rejects(() => h.client.markActive({ id: '' }), 'id');
    await expect(h.client.markActive({ id: 'unknown' })).rejects.toBeInstanceOf(NotFoundError);
  });

  it('SetTimeout', async () => {
    await rejects(() => h.client.setTimeout({ id, duration: 'forever' }), 'duration', /invalid duration/);
    await rejects(() => h.client.setTimeout({ id, duration: '' }), 'duration');
    await rejects(() => h.client.setTimeout({ id, duration: '-5m' }), 'duration');
    await rejects(() => h.client.setTimeout({ id, duration: '5m', type: 4 as never }), 'type');
    await rejects(() => h.client.setTimeout({ id: '', duration: '5m' }), 'id');
    await expect(h.client.setTimeout({ id: 'unknown', duration: '5m' })).rejects.toBeInstanceOf(NotFoundError);
  });

  it('ControlPort', async () => {
    await rejects(() => h.client.controlPort({ id, expose: true }), 'spec');
    await rejects(
      () => h.client.controlPort({ id, expose: true, spec: { port: 70000, visibility: 0, url: '', protocol: 0 } }),
      'spec.port',
    );
    await rejects(
      () =>
        h.client.controlPort({ id, expose: true, spec: { port: 80, visibility: 4 as never, url: '', protocol: 0 } }),
      'spec.visibility',
    );
    await rejects(
      () => h.client.controlPort({ id: '', expose: true, spec: { port: 80, visibility: 0, url: '', protocol: 0 } }),
      'id',
    );
  });

  it('ControlAdmission', async () => {
    await rejects(() => h.client.controlAdmission({ id, level: 3 as never }), 'level');
    await rejects(() => h.client.controlAdmission({ id: '' }), 'id');
  });

  it('TakeSnapshot and BackupWorkspace', async () => {
    await rejects(() => h.client.takeSnapshot({ id: '' }), 'id');
    await rejects(() => h.client.backupWorkspace({ id: '' }), 'id');
    await expect(h.client.takeSnapshot({ id: 'unknown' })).rejects.toBeInstanceOf(NotFoundError);
  });

  it('DeleteVolumeSnapshot', async () => {
    await rejects(() => h.client.deleteVolumeSnapshot({ id: 's', volumeHandle: '' }), 'volume_handle');
    await rejects(() => h.client.deleteVolumeSnapshot({ id: 's', volumeHandle: 'no-bucket' }), 'volume_handle');
    await rejects(
      () => h.client.deleteVolumeSnapshot({ id: 's', volumeHandle: 'workspaces/x/full.tar@workbay-user-alice' }),
      'volume_handle',
      /not a snapshot/,
    );
    await rejects(
      () =>
        h.client.deleteVolumeSnapshot({ id: 's', volumeHandle: 'workspaces/x/snapshot-1.tar@b1', wsType: 9 as never }),
      'ws_type',
    );
  });

  it('UpdateSSHKey', async () => {
    await rejects(() => h.client.updateSshKey({ id, keys: [] }), 'keys');
    await rejects(() => h.client.updateSshKey({ id, keys: ['ssh-rsa AAAA', 'garbage'] }), 'keys[1]');
    await rejects(() => h.client.updateSshKey({ id: '', keys: ['ssh-rsa AAAA'] }), 'id');
  });

  it('operations that need a running workspace answer FAILED_PRECONDITION once it stopped', async () => {
    const request = startRequest();
    await h.client.startWorkspace(request);
    await waitForPhase(h.client, request.id, 'running');
    await h.client.stopWorkspace({ id: request.id, policy: wsman.StopWorkspacePolicy.ABORT });
    await waitForPhase(h.client, request.id, 'stopped');
    for (const call of [
      () => h.client.takeSnapshot({ id: request.id }),
      () => h.client.backupWorkspace({ id: request.id }),
      () => h.client.markActive({ id: request.id }),
      () => h.client.setTimeout({ id: request.id, duration: '5m' }),
      () => h.client.updateSshKey({ id: request.id, keys: ['ssh-rsa AAAA'] }),
    ]) {
      await expect(call()).rejects.toBeInstanceOf(FailedPreconditionError);
    }
  });
});
