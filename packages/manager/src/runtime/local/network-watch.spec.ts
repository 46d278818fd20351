import { describe, expect, it } from 'vitest';
import { silentLogger } from '@workbay/api';
import { readWorkspaceFirewall, WORKSPACE_FIREWALL_TABLE } from '@workbay/nsinsider';
import { parseLocalRuntimeConfig } from './config.js';
import { WorkspaceNetworks } from './network.js';

const isRoot = process.getuid?.() === 0;

describe('the host firewall watch', () => {
  it('checks every 10 s by default; 0 turns the watch off', () => {
    expect(parseLocalRuntimeConfig({}).network.firewallCheckIntervalMs).toBe(10_000);
    expect(parseLocalRuntimeConfig({ network: { firewallCheckIntervalMs: 0 } }).network.firewallCheckIntervalMs).toBe(
      0,
    );
    expect(() => parseLocalRuntimeConfig({ network: { firewallCheckIntervalMs: -1 } })).toThrow(
      /firewallCheckIntervalMs/,
    );
  });

  // The real nft transaction, on this machine's table. Deleting the table to watch it come back would unfilter the
  // workspaces of spec files running beside this one, so the spec counts the installs and checks the table after them.
  it.runIf(isRoot)(
    'installs the real table again at every interval, one install at a time, until stopped',
    async () => {
      const networks = new WorkspaceNetworks('10.88.0.0/16', WorkspaceNetworks.tagFor('/watch-spec'), silentLogger);
      let installs = 0;
      let concurrent = 0;
      let maxConcurrent = 0;
      const install = networks.ensureFirewall.bind(networks);
      networks.ensureFirewall = async () => {
        installs++;
        maxConcurrent = Math.max(maxConcurrent, ++concurrent);
        try {
          await install();
        } finally {
          concurrent--;
        }
      };
      const stop = networks.watchFirewall(20);
      await new Promise((resolve) => setTimeout(resolve, 600));
      stop();
      const counted = installs;
      // nft takes 15–25 ms here: an interval shorter than that never stacks installs.
      expect(counted).toBeGreaterThanOrEqual(3);
      expect(maxConcurrent).toBe(1);
      expect(await readWorkspaceFirewall()).toContain(`table inet ${WORKSPACE_FIREWALL_TABLE}`);
      await new Promise((resolve) => setTimeout(resolve, 100));
      expect(installs - counted).toBeLessThanOrEqual(1); // at most the one already under way when stopped
    },
  );
});
