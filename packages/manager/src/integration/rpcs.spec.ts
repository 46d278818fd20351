import { readFile, readdir, stat, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { basename, dirname, join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  InvalidArgumentError,
  NotFoundError,
  ResourceExhaustedError,
  admissionLevel,
  portVisibility,
  workspaceConditionBool,
  workspacePhase,
  wsman,
} from '@workbay/api';
import { startHarness, startRequest, waitForPhase, waitForStatus } from '../test-support/harness.js';
import type { Harness } from '../test-support/harness.js';

const sshKey = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGx1aW4gdGVzdCBrZXkgZm9yIHdvcmtiYXkgdGVzdHM alice@laptop';
const otherKey = 'ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTY= bob@desk';

describe('every WorkspaceManager RPC over gRPC', () => {
  let h: Harness;
  let id: string;
  beforeAll(async () => {
    h = await startHarness({
      config: {
        workspaceClasses: {
          'g1-standard': {
            displayName: 'Standard',
            creditsPerMinute: 0.2,
            resources: { cpu: 2, memory: '4Gi', disk: '10Gi' },
          },
          'g1-large': { displayName: 'Large', description: 'for big repos', creditsPerMinute: 0.4 },
        },
        preferredWorkspaceClass: 'g1-large',
      },
    });
    const request = startRequest({
      spec: {
        ports: [{ port: 3000, visibility: wsman.PortVisibility.PORT_VISIBILITY_PUBLIC, url: '', protocol: 0 }],
        sshPublicKeys: [sshKey],
        envvars: [{ name: 'GREETING', value: 'hello' }],
      },
    });
    id = request.id;
    await h.client.startWorkspace(request);
    await waitForPhase(h.client, id, 'running');
  });
  afterAll(async () => {
    await h?.close();
  });

  it('DescribeWorkspace returns the full status and lastActivity', async () => {
    const { status, lastActivity } = await h.client.describeWorkspace({ id });
    expect(status!.id).toBe(id);
    expect(status!.metadata!.owner).toBe('alice');
    expect(status!.spec!.url).toBe(`http://${h.running.proxyAddress}/ws/${id}/`);
    expect(status!.spec!.exposedPorts).toEqual([
      {
        port: 3000,
        visibility: wsman.PortVisibility.PORT_VISIBILITY_PUBLIC,
        url: `http://${h.running.proxyAddress}/ws/${id}/port/3000/`,
        protocol: wsman.PortProtocol.PORT_PROTOCOL_HTTP,
      },
    ]);
    expect(status!.spec!.class).toBe('g1-standard');
    expect(status!.spec!.timeout).toBe('30m0s');
    expect(status!.auth!.ownerToken).toHaveLength(32);
    expect(status!.runtime!.nodeName).not.toBe('');
    expect(lastActivity).toBe('');
    await expect(h.client.describeWorkspace({ id: 'no-such-workspace' })).rejects.toBeInstanceOf(NotFoundError);
  });

  it('MarkActive records activity (RFC 3339) and first_user_activity; ignore_if_active keeps it', async () => {
    await h.client.markActive({ id });
    const first = await h.client.describeWorkspace({ id });
    expect(Number.isNaN(Date.parse(first.lastActivity))).toBe(false);
    expect(first.lastActivity).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z$/);
    const firstActivity = first.status!.conditions!.firstUserActivity;
    expect(firstActivity).toBeInstanceOf(Date);
    await new Promise((r) => setTimeout(r, 20));
    await h.client.markActive({ id, ignoreIfActive: true });
    expect((await h.client.describeWorkspace({ id })).lastActivity).toBe(first.lastActivity);
    await h.client.markActive({ id });
    const later = await h.client.describeWorkspace({ id });
    expect(Date.parse(later.lastActivity)).toBeGreaterThan(Date.parse(first.lastActivity));
    expect(later.status!.conditions!.firstUserActivity).toEqual(firstActivity);
  });

  it('SetTimeout sets the inactivity timeout (resetting the closed one) and the closed timeout', async () => {
    await h.client.setTimeout({ id, duration: '1h30m', type: wsman.TimeoutType.CLOSED_TIMEOUT });
    expect((await h.client.describeWorkspace({ id })).status!.spec!.closedTimeout).toBe('1h30m0s');
    await h.client.setTimeout({ id, duration: '2h', type: wsman.TimeoutType.WORKSPACE_TIMEOUT });
    const spec = (await h.client.describeWorkspace({ id })).status!.spec!;
    expect(spec.timeout).toBe('2h0m0s');
    expect(spec.closedTimeout).toBe('0s');
    // Capped by timeouts.maxWorkspaceTimeout (24h).
    await h.client.setTimeout({ id, duration: '100h', type: wsman.TimeoutType.WORKSPACE_TIMEOUT });
    expect((await h.client.describeWorkspace({ id })).status!.spec!.timeout).toBe('24h0m0s');
  });

  it('ControlPort exposes, changes and removes ports', async () => {
    await h.client.controlPort({
      id,
      expose: true,
      spec: { port: 8080, visibility: wsman.PortVisibility.PORT_VISIBILITY_PRIVATE, url: '', protocol: 1 },
    });
    let ports = (await h.client.describeWorkspace({ id })).status!.spec!.exposedPorts;
    expect(ports.map((p) => p.port)).toEqual([3000, 8080]);
    expect(ports[1]!.protocol).toBe(wsman.PortProtocol.PORT_PROTOCOL_HTTPS);
    await h.client.controlPort({
      id,
      expose: true,
      spec: { port: 8080, visibility: wsman.PortVisibility.PORT_VISIBILITY_PUBLIC, url: '', protocol: 0 },
    });
    ports = (await h.client.describeWorkspace({ id })).status!.spec!.exposedPorts;
    expect(portVisibility.fromProto(ports[1]!.visibility)).toBe('public');
    await h.client.controlPort({ id, expose: false, spec: { port: 8080, visibility: 0, url: '', protocol: 0 } });
    ports = (await h.client.describeWorkspace({ id })).status!.spec!.exposedPorts;
    expect(ports.map((p) => p.port)).toEqual([3000]);
  });

  it('ControlAdmission switches between owner-only and everyone', async () => {
    await h.client.controlAdmission({ id, level: wsman.AdmissionLevel.ADMIT_EVERYONE });
    let auth = (await h.client.describeWorkspace({ id })).status!.auth!;
    expect(admissionLevel.fromProto(auth.admission)).toBe('everyone');
    await h.client.controlAdmission({ id, level: wsman.AdmissionLevel.ADMIT_OWNER_ONLY });
    auth = (await h.client.describeWorkspace({ id })).status!.auth!;
    expect(admissionLevel.fromProto(auth.admission)).toBe('owner-only');
  });

  it('UpdateSSHKey writes authorized_keys (dir 0700, file 0600); the start wrote the spec keys', async () => {
    const file = join(h.dir, 'workspaces', id, '.ssh', 'authorized_keys');
    expect(await readFile(file, 'utf8')).toBe(`${sshKey}\n`);
    await h.client.updateSshKey({ id, keys: [sshKey, otherKey] });
    expect(await readFile(file, 'utf8')).toBe(`${sshKey}\n${otherKey}\n`);
    expect((await stat(file)).mode & 0o777).toBe(0o600);
    expect((await stat(join(h.dir, 'workspaces', id, '.ssh'))).mode & 0o777).toBe(0o700);
  });

  it('BackupWorkspace backs up the running workspace', async () => {
    const { url } = await h.client.backupWorkspace({ id });
    expect(url).toContain(`meta-${id}`);
  });

  it('TakeSnapshot returns <object>@<bucket>, usable by a snapshot initializer', async () => {
    await writeFile(join(h.dir, 'workspaces', id, 'notes.txt'), 'snapshot me');
    const { url } = await h.client.takeSnapshot({ id, returnImmediately: false });
    expect(url).toMatch(/^workspaces\/meta-[^/]+\/snapshot-\d+\.tar@workbay-user-alice$/);
    expect((await h.client.describeWorkspace({ id })).status!.conditions!.snapshot).toBe(url);

    const fromSnapshot = startRequest({
      initializer: { spec: { $case: 'snapshot', value: { snapshot: url, fromVolumeSnapshot: false } } },
    });
    await h.client.startWorkspace(fromSnapshot);
    await waitForPhase(h.client, fromSnapshot.id, 'running');
    expect(await readFile(join(h.dir, 'workspaces', fromSnapshot.id, 'notes.txt'), 'utf8')).toBe('snapshot me');
    await h.client.stopWorkspace({ id: fromSnapshot.id, policy: wsman.StopWorkspacePolicy.ABORT });
    await waitForPhase(h.client, fromSnapshot.id, 'stopped');
  });

  it('DeleteVolumeSnapshot deletes through the daemon (no storage configured): was_deleted, then NOT_FOUND', async () => {
    const { url } = await h.client.takeSnapshot({ id, returnImmediately: false });
    const [object, bucket] = url.split('@') as [string, string];
    // The daemon's built-in fs storage keeps each object as files named after it in its directory.
    const stored = async (): Promise<string[]> =>
      (await readdir(join(h.dir, 'storage', bucket, dirname(object))).catch(() => [] as string[])).filter((n) =>
        n.startsWith(basename(object)),
      );
    expect(await stored()).not.toEqual([]);
    expect(await h.client.deleteVolumeSnapshot({ id: 'snap', volumeHandle: url })).toEqual({ wasDeleted: true });
    await expect(h.client.deleteVolumeSnapshot({ id: 'snap', volumeHandle: url })).rejects.toBeInstanceOf(
      NotFoundError,
    );
    // soft_delete: an absent snapshot is `was_deleted: false`, not an error.
    expect(await h.client.deleteVolumeSnapshot({ id: 'snap', volumeHandle: url, softDelete: true })).toEqual({
      wasDeleted: false,
    });
    expect(await stored()).toEqual([]);
    // Names the daemon does not write are refused with the manager's field, never deleted.
    const refused = await h.client
      .deleteVolumeSnapshot({ id: 'snap', volumeHandle: `${object}@not-a-workbay-bucket` })
      .catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(InvalidArgumentError);
    expect((refused as InvalidArgumentError).field).toBe('volume_handle');
    // A snapshot initializer for the deleted snapshot fails loudly.
    const from = startRequest({
      initializer: { spec: { $case: 'snapshot', value: { snapshot: url, fromVolumeSnapshot: false } } },
    });
    await h.client.startWorkspace(from);
    const stopped = await waitForPhase(h.client, from.id, 'stopped');
    expect(stopped.conditions!.failed).toMatch(/^Content initialization failed: .*not found/);
  });

  it("TakeSnapshot past the workspace's bound (the daemon's default 20) is RESOURCE_EXHAUSTED; a deletion makes room", async () => {
    const taken: string[] = [];
    let refused: unknown;
    // The first test's snapshot is still stored; the second test's was deleted.
    for (let i = 0; i < 21 && !refused; i++) {
      await h.client.takeSnapshot({ id, returnImmediately: false }).then(
        ({ url }) => taken.push(url),
        (error: unknown) => (refused = error),
      );
    }
    expect(taken).toHaveLength(19);
    expect(refused).toBeInstanceOf(ResourceExhaustedError);
    expect((refused as Error).message).toMatch(/already has 20 snapshots \(at most 20\); delete some first/);
    expect(await h.client.deleteVolumeSnapshot({ id: 'snap', volumeHandle: taken[0]! })).toEqual({ wasDeleted: true });
    await h.client.takeSnapshot({ id, returnImmediately: false });
  });

  it('DescribeCluster lists the classes sorted by id, with the preferred one', async () => {
    const cluster = await h.client.describeCluster({});
    expect(cluster.preferredWorkspaceClass).toBe('g1-large');
    expect(cluster.workspaceClasses.map((c) => c.id)).toEqual(['g1-large', 'g1-standard']);
    expect(cluster.workspaceClasses[0]).toMatchObject({ displayName: 'Large', description: 'for big repos' });
    expect(cluster.workspaceClasses[0]!.creditsPerMinute).toBeCloseTo(0.4);
    expect(cluster.workspaceClasses[1]!.description).toBe('2 vCPU, 4GB memory, 10GB disk');
  });

  it('GetWorkspaces lists it', async () => {
    const { status } = await h.client.getWorkspaces({});
    expect(status.some((s) => s.id === id && workspacePhase.fromProto(s.phase) === 'running')).toBe(true);
  });

  it('StopWorkspace ends in STOPPED with the final backup and the Git status', async () => {
    await h.client.stopWorkspace({ id, policy: wsman.StopWorkspacePolicy.NORMALLY });
    const stopped = await waitForStatus(h.client, id, (s) => workspacePhase.fromProto(s.phase) === 'stopped');
    expect(workspaceConditionBool.fromProto(stopped.conditions!.finalBackupComplete)).toBe(true);
    expect(stopped.conditions!.failed).toBe('');
    // Stopping an unknown or stopped workspace is not an error (as in the original).
    await h.client.stopWorkspace({ id, policy: wsman.StopWorkspacePolicy.NORMALLY });
    await h.client.stopWorkspace({ id: 'never-existed', policy: wsman.StopWorkspacePolicy.NORMALLY });
  });
});

// With `storage` configured, the manager deletes in that storage itself (through the storage plugin) instead of
// asking the daemon. Here the plugin is the daemon's own `fs` backend over the daemon's storage root (loaded at run
// time from a plugin module, as a deployment would name a plugin package), so both see the same snapshots.
describe('DeleteVolumeSnapshot through a configured storage plugin', () => {
  let h: Harness;
  beforeAll(async () => {
    h = await startHarness();
    const pluginFile = join(h.dir, 'fs-storage-plugin.mjs');
    const daemonEntry = pathToFileURL(createRequire(import.meta.url).resolve('@workbay/daemon')).href;
    await writeFile(pluginFile, `export { fsStoragePlugin as plugin } from '${daemonEntry}';\n`);
    await h.restart({ plugins: [pluginFile], storage: { kind: 'fs', root: join(h.dir, 'storage') } });
  });
  afterAll(async () => {
    await h?.close();
  });

  it('deletes the snapshot in that storage: was_deleted, then NOT_FOUND, false with soft_delete', async () => {
    const request = startRequest();
    await h.client.startWorkspace(request);
    await waitForPhase(h.client, request.id, 'running');
    const { url } = await h.client.takeSnapshot({ id: request.id });
    expect(await h.client.deleteVolumeSnapshot({ id: 'snap', volumeHandle: url })).toEqual({ wasDeleted: true });
    await expect(h.client.deleteVolumeSnapshot({ id: 'snap', volumeHandle: url })).rejects.toBeInstanceOf(
      NotFoundError,
    );
    expect(await h.client.deleteVolumeSnapshot({ id: 'snap', volumeHandle: url, softDelete: true })).toEqual({
      wasDeleted: false,
    });
    // The manager's storage answered, not the daemon: the daemon refuses buckets outside its layout.
    await expect(
      h.client.deleteVolumeSnapshot({ id: 'snap', volumeHandle: 'workspaces/x/snapshot-1.tar@elsewhere' }),
    ).rejects.toBeInstanceOf(NotFoundError);
    // The daemon sees it gone too: a snapshot initializer for it fails loudly.
    const from = startRequest({
      initializer: { spec: { $case: 'snapshot', value: { snapshot: url, fromVolumeSnapshot: false } } },
    });
    await h.client.startWorkspace(from);
    const stopped = await waitForPhase(h.client, from.id, 'stopped');
    expect(stopped.conditions!.failed).toMatch(/^Content initialization failed: .*not found/);
    await h.client.stopWorkspace({ id: request.id, policy: wsman.StopWorkspacePolicy.ABORT });
    await waitForPhase(h.client, request.id, 'stopped');
  });
});
