import { describe, expect, it } from 'vitest';
import { isWorkbayError, silentLogger } from '@workbay/api';
import { createNetns, createWorkspaceVeth, deleteNetns, listNetns } from '@workbay/nsinsider';
import { parseLocalRuntimeConfig } from './config.js';
import { WorkspaceNetworks, workspaceIfPrefix } from './network.js';

const isRoot = process.getuid?.() === 0;

describe('the most workspace networks a node takes', () => {
  it('is 64 by default, at least 1', () => {
    expect(parseLocalRuntimeConfig({}).network.maxWorkspaces).toBe(64);
    expect(() => parseLocalRuntimeConfig({ network: { maxWorkspaces: 0 } })).toThrow(/maxWorkspaces/);
  });

  // Red team round 15, G1: the conntrack share is divided among this many links, so one past it would take flows
  // beyond the share. Real links and namespaces; other spec files may hold links of their own meanwhile, so the node
  // here is full with one link of this spec's (a limit of 1).
  it.runIf(isRoot)('refuses a network past it, counting links it did not make, and leaves nothing behind', async () => {
    const holder = `wbcap${process.pid % 10000}`;
    await createNetns(holder);
    try {
      await createWorkspaceVeth({
        hostIfName: `${workspaceIfPrefix}cap${process.pid % 10000}`,
        alias: 'workbay test capacity',
        netns: holder,
        cidr: '10.199.10.4/30',
      });
      const networks = new WorkspaceNetworks(
        '10.199.64.0/20',
        WorkspaceNetworks.tagFor('/capacity-spec'),
        silentLogger,
        {
          maxWorkspaces: 1,
        },
      );
      const error = await networks.allocate('cap-1').then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(isWorkbayError(error) && error.code).toBe('resource-exhausted');
      expect((error as Error).message).toMatch(/the most it takes \(runtime\.network\.maxWorkspaces: 1\)/);
      expect(await listNetns()).not.toContain(networks.netnsName('cap-1'));
    } finally {
      // The pair goes with the namespace.
      await deleteNetns(holder);
    }
  });
});
