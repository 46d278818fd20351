/**
 * Bounded input (invariants 7 and 12): every oversized string, list, map or nesting of every RPC gets a prompt,
 * short INVALID_ARGUMENT naming the field, changes nothing, and does not stall other calls on the same HTTP/2
 * connection.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { InvalidArgumentError, createWorkspaceManagerClient } from '@workbay/api';
import type { contentservice, wsman } from '@workbay/api';
import { startHarness, startRequest } from '../test-support/harness.js';
import type { Harness } from '../test-support/harness.js';

const mb = 'x'.repeat(1024 * 1024);
const validKey = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGv6Zm9vYmFyYmF6cXV1eHF1dXhxdXV4cXV1eHF1dXhx test@example';

function nested(depth: number): contentservice.WorkspaceInitializer {
  let init: contentservice.WorkspaceInitializer = { spec: { $case: 'empty', value: {} } };
  for (let i = 0; i < depth; i += 1) init = { spec: { $case: 'composite', value: { initializer: [init] } } };
  return init;
}

describe('bounded input on every RPC', () => {
  let h: Harness;
  beforeAll(async () => {
    h = await startHarness();
  });
  afterAll(async () => {
    await h?.close();
  });

  /** Runs `call`, expects INVALID_ARGUMENT naming `field` with a short message, and returns the message. */
  async function refused(call: () => Promise<unknown>, field: RegExp): Promise<string> {
    const error = await call().then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(InvalidArgumentError);
    const invalid = error as InvalidArgumentError;
    expect(invalid.field).toMatch(field);
    expect(invalid.message.length).toBeLessThan(300);
    expect(invalid.message).not.toContain('x'.repeat(65));
    return invalid.message;
  }

  const cases: Array<[string, (c: Harness['client']) => Promise<unknown>, RegExp]> = [
    ['StopWorkspace id', (c) => c.stopWorkspace({ id: mb, policy: 0 }), /^id$/],
    ['DescribeWorkspace id', (c) => c.describeWorkspace({ id: mb }), /^id$/],
    ['MarkActive id', (c) => c.markActive({ id: mb, closed: false, ignoreIfActive: false }), /^id$/],
    ['SetTimeout duration', (c) => c.setTimeout({ id: 'w', duration: mb, type: 0 }), /^duration$/],
    ['TakeSnapshot id', (c) => c.takeSnapshot({ id: mb, returnImmediately: false }), /^id$/],
    ['BackupWorkspace id', (c) => c.backupWorkspace({ id: mb }), /^id$/],
    ['ControlAdmission id', (c) => c.controlAdmission({ id: mb, level: 0 }), /^id$/],
    ['ControlPort id', (c) => c.controlPort({ id: mb, expose: true }), /^id$/],
    [
      'DeleteVolumeSnapshot handle',
      (c) => c.deleteVolumeSnapshot({ id: 'w', volumeHandle: mb, softDelete: false, wsType: 0 }),
      /^volume_handle$/,
    ],
    [
      'DeleteVolumeSnapshot handle (within the size limit, quoted by the parser)',
      (c) => c.deleteVolumeSnapshot({ id: 'w', volumeHandle: 'x'.repeat(1000), softDelete: false, wsType: 0 }),
      /^volume_handle$/,
    ],
    [
      // Quoting cuts a value of astral characters: a lone surrogate must not reach grpc-js's encodeURI.
      'DeleteVolumeSnapshot handle of astral characters',
      (c) => c.deleteVolumeSnapshot({ id: 'w', volumeHandle: '\u{1f600}'.repeat(100), softDelete: false, wsType: 0 }),
      /^volume_handle$/,
    ],
    ['UpdateSSHKey key', (c) => c.updateSshKey({ id: 'w', keys: [`${validKey} ${mb}`] }), /^keys\[0\]$/],
    ['UpdateSSHKey many keys', (c) => c.updateSshKey({ id: 'w', keys: new Array(1000).fill(validKey) }), /^keys$/],
    [
      'GetWorkspaces filter annotation',
      (c) => c.getWorkspaces({ mustMatch: { owner: '', metaId: '', annotations: { a: mb } } }),
      /^must_match\.annotations$/,
    ],
    [
      'GetWorkspaces filter annotation key',
      (c) => c.getWorkspaces({ mustMatch: { owner: '', metaId: '', annotations: { [mb]: 'v' } } }),
      /^must_match\.annotations$/,
    ],
  ];

  it.each(cases)('%s: a 1 MB value gets a short INVALID_ARGUMENT', async (_name, call, field) => {
    await refused(() => call(h.client), field);
  });

  const startCases: Array<[string, (r: wsman.StartWorkspaceRequest) => void, RegExp]> = [
    ['id', (r) => (r.id = mb), /^id$/],
    ['owner', (r) => (r.metadata!.owner = mb), /^metadata\.owner$/],
    ['annotation value', (r) => (r.metadata!.annotations = { big: mb }), /^metadata\.annotations$/],
    [
      // The field travels in gRPC metadata (printable ASCII only): a unicode key must not end up in it.
      'annotation with a unicode key',
      (r) => (r.metadata!.annotations = { '\u202e\u0000\uffff\u2f5d': 'x'.repeat(5000) }),
      /^metadata\.annotations$/,
    ],
    [
      'annotation count',
      (r) => (r.metadata!.annotations = Object.fromEntries(Array.from({ length: 500 }, (_, i) => [`k${i}`, 'v']))),
      /^metadata\.annotations$/,
    ],
    ['image', (r) => (r.spec!.workspaceImage = mb), /^spec\.workspace_image$/],
    ['env value', (r) => (r.spec!.envvars = [{ name: 'A', value: mb }]), /^spec\.envvars\[0\]\.value$/],
    [
      'env count',
      (r) => (r.spec!.envvars = Array.from({ length: 5000 }, (_, i) => ({ name: `A${i}`, value: 'v' }))),
      /^spec\.envvars$/,
    ],
    [
      'ports',
      (r) =>
        (r.spec!.ports = Array.from({ length: 1000 }, (_, i) => ({
          port: 1000 + i,
          visibility: 0,
          url: '',
          protocol: 0,
        }))),
      /^spec\.ports$/,
    ],
    ['ssh key', (r) => (r.spec!.sshPublicKeys = [`${validKey}${mb}`]), /^spec\.ssh_public_keys\[0\]$/],
    ['initializer nesting', (r) => (r.spec!.initializer = nested(40)), /^spec\.initializer/],
    // Too deep for the decoder itself: still INVALID_ARGUMENT, not grpc-js's INTERNAL.
    ['initializer nested 1,000 deep', (r) => (r.spec!.initializer = nested(1000)), /^(request|spec\.initializer)$/],
    [
      'initializer width',
      (r) =>
        (r.spec!.initializer = {
          spec: {
            $case: 'composite',
            value: { initializer: Array.from({ length: 5000 }, () => ({ spec: { $case: 'empty', value: {} } })) },
          },
        }),
      /^spec\.initializer\.composite\.initializer$/,
    ],
  ];

  startCases.push([
    'owner of astral characters',
    (r) => (r.metadata!.owner = '\u{1f600}'.repeat(100)),
    /^metadata\.owner$/,
  ]);

  it.each(startCases)('StartWorkspace %s: refused, nothing registered', async (_name, mutate, field) => {
    const request = startRequest();
    mutate(request);
    await refused(() => h.client.startWorkspace(request), field);
    const { status } = await h.client.getWorkspaces({});
    expect(status.map((s) => s.id)).not.toContain(request.id);
  });

  it('a 1 MB bad value does not stall other calls on the same connection', async () => {
    const bad = Array.from({ length: 8 }, () => h.client.stopWorkspace({ id: mb, policy: 0 }).catch((e: unknown) => e));
    const good = Array.from({ length: 20 }, () => h.client.describeCluster({}));
    const results = await Promise.all(good);
    expect(results.every((r) => r.workspaceClasses.length > 0)).toBe(true);
    for (const error of await Promise.all(bad)) expect(error).toBeInstanceOf(InvalidArgumentError);
  });

  it('oversized metadata is refused without taking the server down', async () => {
    const address = h.running.grpcAddress;
    const heavy = createWorkspaceManagerClient(address, {
      metadata: { 'x-junk': 'z'.repeat(256 * 1024) },
      defaultTimeoutMs: 10_000,
    });
    await expect(heavy.describeCluster({})).rejects.toBeInstanceOf(Error);
    heavy.close();
    expect((await h.client.describeCluster({})).workspaceClasses.length).toBeGreaterThan(0);
  });

  it('a message over the receive limit gets RESOURCE_EXHAUSTED, and the server keeps serving', async () => {
    const huge = 'y'.repeat(3 * 1024 * 1024);
    const error = await h.client.stopWorkspace({ id: huge, policy: 0 }).then(
      () => undefined,
      (e: unknown) => e as Error,
    );
    expect(error?.message ?? '').toMatch(/larger than max|resource|exhausted/i);
    expect((error?.message ?? '').length).toBeLessThan(300);
    expect((await h.client.describeCluster({})).workspaceClasses.length).toBeGreaterThan(0);
  });
});
