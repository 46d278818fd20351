import { createHash, randomInt } from 'node:crypto';
import { ResourceExhaustedError } from '@workbay/api';
import type { PluginLogger } from '@workbay/api';
import {
  attachVethToNetns,
  claimVethPair,
  createNetns,
  deleteLink,
  deleteNetns,
  ensureWorkspaceFirewall,
  isNsinsiderError,
  listLinks,
  listNetns,
  NETNS_DIR,
} from '@workbay/nsinsider';

/** Host ends of workspace veths (and their netns names) start with this; the host firewall matches on it. */
export const workspaceIfPrefix = 'wbv';

/** One isolated workspace's network, as recorded for re-adoption and teardown. */
export interface WorkspaceNet {
  /** Index of the workspace's /30 in the pool. */
  readonly slot: number;
  /** Host end of the veth pair; also the name of the workspace's netns. */
  readonly ifName: string;
  readonly netns: string;
  readonly cidr: string;
  /** Address of the host end (the workspace's gateway). */
  readonly hostAddress: string;
  /** The workspace's own address: where its ports are reachable. */
  readonly address: string;
}

const maxClaimAttempts = 256;

function parsePool(pool: string): { base: number; slots: number } {
  const [address = '', prefix = ''] = pool.split('/');
  const base = address.split('.').reduce((acc, o) => acc * 256 + Number(o), 0);
  return { base, slots: 2 ** (30 - Number(prefix)) };
}

const formatIp = (n: number): string => [24, 16, 8, 0].map((s) => Math.floor(n / 2 ** s) % 256).join('.');

/**
 * Hands out one /30 of the pool per workspace, with a veth pair and a named netns, and takes them down again.
 *
 * The kernel is the arbiter of who holds a slot: the host end `wbv<slot>` is created first, and creating a link
 * whose name exists fails, so two runtimes on one machine (tests run several) never share an address. The link's
 * alias names the runtime (a tag derived from its state directory) and the instance, which is how a runtime tells
 * its own leftovers (after a crash) from another runtime's live workspaces.
 */
export class WorkspaceNetworks {
  private readonly base: number;
  private readonly slots: number;
  /** Slots this runtime holds or is claiming; tried first by nobody else in this process. */
  private readonly held = new Set<number>();
  private cursor: number;

  constructor(
    pool: string,
    private readonly tag: string,
    private readonly logger: PluginLogger,
  ) {
    ({ base: this.base, slots: this.slots } = parsePool(pool));
    this.cursor = randomInt(this.slots);
  }

  /** A runtime's tag: stable for its state directory, so a restarted runtime recognises its own links. */
  static tagFor(stateDir: string): string {
    return createHash('sha256').update(stateDir).digest('hex').slice(0, 12);
  }

  netnsPath(net: WorkspaceNet): string {
    return `${NETNS_DIR}/${net.netns}`;
  }

  private alias(instanceId: string): string {
    return `workbay ${this.tag} ${instanceId}`;
  }

  /** Installs the host firewall (idempotent); called before any workspace gets a link. */
  async ensureFirewall(): Promise<void> {
    await ensureWorkspaceFirewall({ ifPrefix: workspaceIfPrefix });
  }

  /** Marks a recorded (adopted) workspace's slot as held. */
  hold(net: WorkspaceNet): void {
    this.held.add(net.slot);
  }

  /** Claims a free slot, creates the netns and the veth pair, and configures both ends. */
  async allocate(instanceId: string): Promise<WorkspaceNet> {
    // Re-installed before every workspace (one atomic nft transaction): a flushed ruleset (a firewall reload, an
    // operator's `nft flush ruleset`) must not leave the next workspace unfiltered.
    await this.ensureFirewall();
    let attempts = 0;
    // Round robin from a random start: an address just given up is not handed out again at once (a proxy may
    // still hold connections to it), and runtimes sharing the machine rarely race for the same slot.
    for (let i = 0; i < this.slots && attempts < maxClaimAttempts; i++) {
      const slot = (this.cursor + i) % this.slots;
      if (this.held.has(slot)) continue;
      attempts++;
      const ifName = `${workspaceIfPrefix}${slot}`;
      this.held.add(slot);
      this.cursor = (slot + 1) % this.slots;
      try {
        await claimVethPair({ hostIfName: ifName, alias: this.alias(instanceId) });
      } catch (error) {
        this.held.delete(slot);
        if (isNsinsiderError(error) && error.code === 'EEXIST') continue; // another runtime's workspace
        throw error;
      }
      const cidr = `${formatIp(this.base + slot * 4)}/30`;
      const net: WorkspaceNet = {
        slot,
        ifName,
        netns: ifName,
        cidr,
        hostAddress: formatIp(this.base + slot * 4 + 1),
        address: formatIp(this.base + slot * 4 + 2),
      };
      try {
        await this.createNetnsReplacingLeftover(net.netns);
        await attachVethToNetns({ hostIfName: ifName, netns: net.netns, cidr });
      } catch (error) {
        await this.release(net);
        throw error;
      }
      return net;
    }
    throw new ResourceExhaustedError(`no free /30 left in the workspace network pool (tried ${attempts} slots)`);
  }

  /** The link is ours, so a netns of the same name can only be a leftover of a crashed runtime. */
  private async createNetnsReplacingLeftover(name: string): Promise<void> {
    try {
      await createNetns(name);
    } catch (error) {
      if (!isNsinsiderError(error) || error.code !== 'EEXIST') throw error;
      this.logger.warn({ netns: name }, 'removing a leftover workspace network namespace');
      await deleteNetns(name);
      await createNetns(name);
    }
  }

  /** Removes the veth pair and the netns (idempotent). */
  async release(net: WorkspaceNet): Promise<void> {
    try {
      await releaseWorkspaceNet(net);
    } finally {
      this.held.delete(net.slot);
    }
  }

  /**
   * Removes what a crashed runtime left: links of this runtime whose instance is not live, and named netns of our
   * prefix without a link (nobody holds them: an owner creates its link first and deletes it last).
   */
  async cleanupLeftovers(live: ReadonlySet<string>): Promise<number> {
    let removed = 0;
    const links = await listLinks(workspaceIfPrefix);
    for (const link of links) {
      const [marker, tag, instanceId] = link.alias.split(' ');
      if (marker !== 'workbay' || tag !== this.tag || (instanceId && live.has(instanceId))) continue;
      this.logger.warn({ link: link.name, instanceId }, 'removing a leftover workspace network');
      await deleteLink(link.name);
      await deleteNetns(link.name);
      removed++;
    }
    const names = new Set((await listLinks(workspaceIfPrefix)).map((l) => l.name));
    for (const netns of await listNetns(workspaceIfPrefix)) {
      if (names.has(netns) || !/^wbv\d+$/.test(netns)) continue;
      this.logger.warn({ netns }, 'removing a leftover workspace network namespace');
      await deleteNetns(netns);
      removed++;
    }
    return removed;
  }
}

/**
 * Removes a recorded workspace network (idempotent); also usable by a runtime that no longer isolates. The link goes
 * first: a live owner always holds its link, so a netns without one is known to be a leftover.
 */
export async function releaseWorkspaceNet(net: WorkspaceNet): Promise<void> {
  await deleteLink(net.ifName);
  await deleteNetns(net.netns);
}
