/**
 * Routing of content calls to the daemon of the workspace's node. The daemons are stand-ins recording the calls
 * they get (the gRPC client itself is DaemonContentService, tested with a real daemon elsewhere); the directory is
 * a map, as NodeDaemons provides it from the DaemonSet's pods (proven on a real API server in
 * packages/integration/src/kubernetes/deploy-manifests.spec.ts).
 */
import { describe, expect, it } from 'vitest';
import { NotFoundError, UnavailableError } from '@workbay/api';
import type { ContentService, InitContentRequest } from './content-service.js';
import type { DaemonClientTls } from './daemon-content-service.js';
import { NodeRoutingContentService } from './node-daemons.js';
import type { DaemonDirectory } from './node-daemons.js';

class StandInDaemon implements ContentService {
  readonly calls: string[] = [];
  readonly content = new Set<string>();
  closed = false;
  constructor(readonly address: string) {}
  async initWorkspace(request: InitContentRequest) {
    this.calls.push(`init ${request.instanceId}`);
    this.content.add(request.instanceId);
    return { contentLocation: `/data/${request.instanceId}` };
  }
  async waitForInit(id: string) {
    this.calls.push(`wait ${id}`);
  }
  async isWorkspaceExists(id: string) {
    this.calls.push(`exists ${id}`);
    return this.content.has(id);
  }
  async takeSnapshot(id: string) {
    this.calls.push(`snapshot ${id}`);
    return `snap-${id}@bucket`;
  }
  async deleteSnapshot(snapshot: string) {
    this.calls.push(`delete-snapshot ${snapshot}`);
    return true;
  }
  async backupWorkspace(id: string) {
    this.calls.push(`backup ${id}`);
    return `backup-${id}`;
  }
  async disposeWorkspace(id: string, backup: boolean) {
    this.calls.push(`dispose ${id} ${backup}`);
    this.content.delete(id);
    return {};
  }
  close() {
    this.closed = true;
  }
}

function setup(addresses: Record<string, string | undefined>, nodeOf?: (id: string) => string | undefined) {
  const directory: DaemonDirectory = {
    addressOf: (node) => addresses[node],
    nodes: () =>
      Object.entries(addresses)
        .filter(([, a]) => a)
        .map(([n]) => n)
        .sort(),
  };
  const daemons = new Map<string, StandInDaemon>();
  const tlsSeen: (DaemonClientTls | undefined)[] = [];
  const tls: DaemonClientTls = { ca: '/etc/workbay/tls/ca.crt', cert: '/c', key: '/k', serverName: 'workbay-daemon' };
  const service = new NodeRoutingContentService({
    daemons: directory,
    tls,
    nodeOf,
    connect: (address, t) => {
      tlsSeen.push(t);
      const daemon = new StandInDaemon(address);
      daemons.set(address, daemon);
      return daemon;
    },
  });
  return { service, daemons, tlsSeen, tls };
}

const request = (instanceId: string): InitContentRequest => ({
  instanceId,
  owner: 'alice',
  metaId: 'ws',
  initializer: '',
  storageQuotaBytes: 0,
});

describe('NodeRoutingContentService', () => {
  it('places new content on the least used node with a ready daemon and reports that node', async () => {
    const { service, daemons } = setup({ 'node-a': '10.0.0.1:7721', 'node-b': '10.0.0.2:7721', 'node-c': undefined });
    const placed = [];
    for (const id of ['i1', 'i2', 'i3']) placed.push((await service.initWorkspace(request(id))).nodeName);
    expect(placed).toEqual(['node-a', 'node-b', 'node-a']);
    expect(daemons.get('10.0.0.1:7721')!.calls).toEqual(['init i1', 'init i3']);
    expect(daemons.get('10.0.0.2:7721')!.calls).toEqual(['init i2']);
  });

  it("sends every later call to the daemon of the workspace's node, with the same TLS settings for all", async () => {
    const { service, daemons, tlsSeen, tls } = setup({ 'node-a': '10.0.0.1:7721', 'node-b': '10.0.0.2:7721' });
    await service.initWorkspace(request('i1'));
    await service.initWorkspace(request('i2'));
    await service.waitForInit('i2');
    expect(await service.isWorkspaceExists('i2')).toBe(true);
    expect(await service.takeSnapshot('i2', false)).toBe('snap-i2@bucket');
    expect(await service.backupWorkspace('i2')).toBe('backup-i2');
    await service.disposeWorkspace('i2', true);
    expect(daemons.get('10.0.0.2:7721')!.calls).toEqual([
      'init i2',
      'wait i2',
      'exists i2',
      'snapshot i2',
      'backup i2',
      'dispose i2 true',
    ]);
    expect(daemons.get('10.0.0.1:7721')!.calls).toEqual(['init i1']);
    // One client per daemon, each with daemon.tls (mTLS to every daemon).
    expect(tlsSeen).toEqual([tls, tls]);
    service.close();
    expect([...daemons.values()].every((d) => d.closed)).toBe(true);
  });

  it('uses the node the caller knows (the record, the pod), and forNode(node) for an explicit choice', async () => {
    const { service, daemons } = setup({ 'node-a': '10.0.0.1:7721', 'node-b': '10.0.0.2:7721' }, (id) =>
      id === 'pinned' ? 'node-b' : undefined,
    );
    expect((await service.initWorkspace(request('pinned'))).nodeName).toBe('node-b');
    await service.forNode('node-a').backupWorkspace('other');
    expect(daemons.get('10.0.0.2:7721')!.calls).toEqual(['init pinned']);
    expect(daemons.get('10.0.0.1:7721')!.calls).toEqual(['backup other']);
  });

  it('after a restart with nothing known, finds the content by asking the daemons', async () => {
    const first = setup({ 'node-a': '10.0.0.1:7721', 'node-b': '10.0.0.2:7721' });
    const { service, daemons } = first;
    await service.forNode('node-b');
    daemons.get('10.0.0.2:7721')!.content.add('left-over');
    await service.forNode('node-a');
    expect(await service.isWorkspaceExists('left-over')).toBe(true);
    await service.disposeWorkspace('left-over', true);
    expect(daemons.get('10.0.0.2:7721')!.calls).toContain('dispose left-over true');
    await expect(service.backupWorkspace('nowhere')).rejects.toBeInstanceOf(NotFoundError);
  });

  it('answers UNAVAILABLE (retried by the core) while the node has no ready daemon', async () => {
    const addresses: Record<string, string | undefined> = { 'node-a': '10.0.0.1:7721' };
    const { service } = setup(addresses);
    await service.initWorkspace(request('i1'));
    addresses['node-a'] = undefined;
    await expect(service.backupWorkspace('i1')).rejects.toBeInstanceOf(UnavailableError);
    await expect(service.initWorkspace(request('i2'))).rejects.toBeInstanceOf(UnavailableError);
    // The daemon came back (a new pod, a new address): calls go to it.
    addresses['node-a'] = '10.0.0.9:7721';
    expect(await service.backupWorkspace('i1')).toBe('backup-i1');
  });
});
