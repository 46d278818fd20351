import { createHash, randomInt } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import { ResourceExhaustedError } from '@workbay/api';
import type { PluginLogger } from '@workbay/api';
import {
  abortWorkspaceConnections,
  countLinks,
  createNetns,
  createWorkspaceVeth,
  DEFAULT_MAX_CONNECTIONS_PER_WORKSPACE,
  DEFAULT_MAX_FLOWS_PER_WORKSPACE,
  DEFAULT_MAX_WORKSPACE_LINKS,
  deleteLink,
  deleteNetns,
  ensureWorkspaceFirewall,
  isNsinsiderError,
  limitWorkspaceConnections,
  listLinks,
  listNetns,
  MIN_FLOWS_PER_WORKSPACE,
  NETNS_DIR,
  nonPublicNetworks,
  readMaxOrphans,
  sharedConnectionLimit,
} from '@workbay/nsinsider';

/** Host ends of workspace veths start with this; the host firewall matches on it. */
export const workspaceIfPrefix = 'wbv';
/** Workspace netns are named `wb-<runtime tag>-<instance id>`. */
export const netnsPrefix = 'wb-';

/** One isolated workspace's network, as recorded for re-adoption and teardown. */
export interface WorkspaceNet {
  /** Index of the workspace's /30 in the pool. */
  readonly slot: number;
  /** Host end of the veth pair. */
  readonly ifName: string;
  /** The workspace's named netns (`wb-<runtime tag>-<instance id>`). */
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
 * The kernel is the arbiter of who holds a slot: creating the host end `wbv<slot>` fails when the name exists, so
 * two runtimes on one machine (tests run several) never share an address. The link's alias and the netns name carry
 * the runtime (a tag derived from its state directory) and the instance, which is how a runtime tells its own
 * leftovers (after a crash) from another runtime's live workspaces.
 */
/** `runtime.network.egress` of the local runtime's config. */
export interface EgressSettings {
  readonly allowedNetworks: readonly string[];
  readonly blockedNetworks: readonly string[];
  /** Undefined: the host's resolvers ({@link hostResolvers}). */
  readonly dnsServers?: readonly string[];
}

/**
 * The nameservers of the host's `/etc/resolv.conf` (IP literals only), which workspaces use too: their root is the
 * host's, read-only. None when it cannot be read (said in the log: workspaces then resolve nothing private).
 */
export async function hostResolvers(logger: PluginLogger, file = '/etc/resolv.conf'): Promise<string[]> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    logger.warn({ err: error, file }, 'cannot read the host resolvers; workspaces reach no private resolver');
    return [];
  }
  const servers = text
    .split('\n')
    .map((line) => /^\s*nameserver\s+(\S+)/.exec(line)?.[1])
    .filter((address): address is string => address !== undefined && isIP(address) !== 0);
  return [...new Set(servers)];
}

/** What every workspace network of a runtime is held to (`runtime.network`); each has a default. */
export interface WorkspaceNetworkLimits {
  /** New flows one workspace may have tracked at once (conntrack); the host firewall drops those beyond. */
  readonly maxFlowsPerWorkspace?: number;
  /** TCP connections a workspace's processes may have open, loopback included (a table in its namespace). */
  readonly maxConnectionsPerWorkspace?: number;
  /**
   * Workspace links the node holds at once, every runtime's counted: the flows' share of the node's conntrack table
   * is divided among this many, so a network past it is refused.
   */
  readonly maxWorkspaces?: number;
  /** Where workspaces may connect beyond the node (`runtime.network.egress`); default: public addresses only. */
  readonly egress?: EgressSettings;
}

export class WorkspaceNetworks {
  private readonly base: number;
  private readonly slots: number;
  /** Slots this runtime holds or is claiming; tried first by nobody else in this process. */
  private readonly held = new Set<number>();
  private cursor: number;
  /** The flow limit the firewall was last installed with (below the configured one on a crowded node). */
  private flowLimit: number | undefined;
  /** The connection limit the last workspace got (below the configured one where the node's orphan limit is low). */
  private connectionLimit: number | undefined;

  private readonly limits: Required<Omit<WorkspaceNetworkLimits, 'egress'>>;
  private readonly egress: EgressSettings;

  constructor(
    pool: string,
    private readonly tag: string,
    private readonly logger: PluginLogger,
    limits: WorkspaceNetworkLimits = {},
  ) {
    ({ base: this.base, slots: this.slots } = parsePool(pool));
    this.cursor = randomInt(this.slots);
    this.limits = {
      maxFlowsPerWorkspace: limits.maxFlowsPerWorkspace ?? DEFAULT_MAX_FLOWS_PER_WORKSPACE,
      maxConnectionsPerWorkspace: limits.maxConnectionsPerWorkspace ?? DEFAULT_MAX_CONNECTIONS_PER_WORKSPACE,
      maxWorkspaces: limits.maxWorkspaces ?? DEFAULT_MAX_WORKSPACE_LINKS,
    };
    this.egress = limits.egress ?? { allowedNetworks: [], blockedNetworks: [] };
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
    const dns = this.egress.dnsServers ?? (await hostResolvers(this.logger));
    const flows = await ensureWorkspaceFirewall({
      ifPrefix: workspaceIfPrefix,
      maxFlowsPerWorkspace: this.limits.maxFlowsPerWorkspace,
      maxWorkspaceLinks: this.limits.maxWorkspaces,
      egress: {
        blocked: [...nonPublicNetworks.ipv4, ...nonPublicNetworks.ipv6, ...this.egress.blockedNetworks],
        allowed: this.egress.allowedNetworks,
        dns,
      },
    });
    if (flows.maxFlows !== this.flowLimit) {
      // Its share of the node's conntrack table (nsinsider's flow-share.ts).
      this.logger.info(
        {
          maxFlows: flows.maxFlows,
          newFlowsPerSecond: flows.newFlowsPerSecond,
          configured: this.limits.maxFlowsPerWorkspace,
          maxWorkspaces: this.limits.maxWorkspaces,
        },
        'tracked flows each workspace may hold, and open per second',
      );
      if (flows.maxFlows < MIN_FLOWS_PER_WORKSPACE)
        this.logger.warn(
          { maxFlows: flows.maxFlows },
          "each workspace may hold few flows: raise the node's nf_conntrack_max or lower runtime.network.maxWorkspaces",
        );
      this.flowLimit = flows.maxFlows;
    }
  }

  /**
   * The connections each workspace may have open: the configured number, or less where `maxWorkspaces` of them could
   * hold more than their share of the node's orphan limit (nsinsider's `sharedConnectionLimit`). Read at every start:
   * an operator may raise `tcp_max_orphans` while the runtime runs.
   */
  private async sharedConnectionLimit(): Promise<number> {
    const maxOrphans = await readMaxOrphans();
    const max = sharedConnectionLimit(this.limits.maxConnectionsPerWorkspace, maxOrphans, this.limits.maxWorkspaces);
    if (max !== this.connectionLimit) {
      this.logger.info(
        { maxConnections: max, configured: this.limits.maxConnectionsPerWorkspace, maxOrphans },
        'TCP connections each workspace may have open',
      );
      if (max < MIN_FLOWS_PER_WORKSPACE)
        this.logger.warn(
          { maxConnections: max },
          "each workspace may open few connections: raise the node's net.ipv4.tcp_max_orphans or lower runtime.network.maxWorkspaces",
        );
      this.connectionLimit = max;
    }
    return max;
  }

  /**
   * Installs the host firewall again every `intervalMs` (0: never), so that a ruleset flushed by a firewall reload or
   * an operator leaves running workspaces unfiltered for at most that long. Returns the function that stops it.
   */
  watchFirewall(intervalMs: number): () => void {
    if (intervalMs === 0) return () => undefined;
    let running = false;
    const timer = setInterval(() => {
      if (running) return;
      running = true;
      this.ensureFirewall()
        .catch((error: unknown) => {
          // Deliberate: retried at the next interval; said loudly, since workspaces may be unfiltered meanwhile.
          this.logger.error({ err: error }, 'could not install the host firewall for the workspaces again');
        })
        .finally(() => {
          running = false;
        });
    }, intervalMs);
    timer.unref();
    return () => clearInterval(timer);
  }

  /** Marks a recorded (adopted) workspace's slot as held. */
  hold(net: WorkspaceNet): void {
    this.held.add(net.slot);
  }

  /** The workspace's netns name: this runtime's and this instance's, so leftovers are known by name. */
  netnsName(instanceId: string): string {
    return `${netnsPrefix}${this.tag}-${instanceId}`;
  }

  /** Creates the workspace's netns, claims a free slot with its veth pair and configures both ends. */
  async allocate(instanceId: string): Promise<WorkspaceNet> {
    // Re-installed before every workspace (one atomic nft transaction): a flushed ruleset (a firewall reload, an
    // operator's `nft flush ruleset`) must not leave the next workspace unfiltered.
    await this.ensureFirewall();
    await this.checkNodeCapacity(1);
    const netns = this.netnsName(instanceId);
    await this.createNetnsReplacingLeftover(netns);
    // The namespace's own table needs only the namespace: installed while the pair is made (an nft start-up, ~20 ms).
    const limited = this.sharedConnectionLimit().then((max) => limitWorkspaceConnections(netns, max));
    // Its failure is taken from `limited` below, or left for the deletion that follows another failure.
    limited.catch(() => undefined);
    try {
      let attempts = 0;
      // Round robin from a random start: an address just given up is not handed out again at once (a proxy may
      // still hold connections to it), and runtimes sharing the machine rarely race for the same slot.
      for (let i = 0; i < this.slots && attempts < maxClaimAttempts; i++) {
        const slot = (this.cursor + i) % this.slots;
        if (this.held.has(slot)) continue;
        attempts++;
        this.held.add(slot);
        this.cursor = (slot + 1) % this.slots;
        const ifName = `${workspaceIfPrefix}${slot}`;
        const cidr = `${formatIp(this.base + slot * 4)}/30`;
        try {
          await createWorkspaceVeth({ hostIfName: ifName, alias: this.alias(instanceId), netns, cidr });
        } catch (error) {
          this.held.delete(slot);
          if (isNsinsiderError(error) && error.code === 'EEXIST') continue; // another runtime's workspace
          throw error;
        }
        try {
          // Again now that the link is there: runtimes starting workspaces at once all passed the first check.
          await this.checkNodeCapacity(0);
          await limited;
        } catch (error) {
          // The pair goes with the namespace (the catch below deletes it); the slot is free again.
          this.held.delete(slot);
          throw error;
        }
        return {
          slot,
          ifName,
          netns,
          cidr,
          hostAddress: formatIp(this.base + slot * 4 + 1),
          address: formatIp(this.base + slot * 4 + 2),
        };
      }
      throw new ResourceExhaustedError(`no free /30 left in the workspace network pool (tried ${attempts} slots)`);
    } catch (error) {
      // Not deleted under a running nft: it would install its table in a namespace that is going away.
      await limited.catch(() => undefined);
      await deleteNetns(netns).catch(() => undefined);
      throw error;
    }
  }

  /**
   * Refuses a network that would make more than `maxWorkspaces` workspace links on the node, every runtime's counted:
   * the workspaces' share of the node's conntrack table is divided among that many (nsinsider's flow-share.ts), and
   * a link past it would take flows beyond the share.
   */
  private async checkNodeCapacity(adding: number): Promise<void> {
    const links = await countLinks(workspaceIfPrefix);
    if (links + adding <= this.limits.maxWorkspaces) return;
    throw new ResourceExhaustedError(
      `this node has ${links} workspace networks, the most it takes (runtime.network.maxWorkspaces: ${this.limits.maxWorkspaces}); the workspaces share its connection-tracking table among that many`,
    );
  }

  /** The netns name is this instance's, so one that exists can only be a leftover of a crashed runtime. */
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
   * Removes what a crashed runtime left: this runtime's links and netns whose instance is not live. Other runtimes'
   * (another tag) are left alone: they may be running on this machine right now.
   */
  async cleanupLeftovers(live: ReadonlySet<string>): Promise<number> {
    let removed = 0;
    for (const link of await listLinks(workspaceIfPrefix)) {
      const [marker, tag, instanceId] = link.alias.split(' ');
      if (marker !== 'workbay' || tag !== this.tag || (instanceId && live.has(instanceId))) continue;
      this.logger.warn({ link: link.name, instanceId }, 'removing a leftover workspace network');
      await deleteLink(link.name);
      removed++;
    }
    const ours = `${netnsPrefix}${this.tag}-`;
    for (const netns of await listNetns(ours)) {
      if (live.has(netns.slice(ours.length))) continue;
      this.logger.warn({ netns }, 'removing a leftover workspace network namespace');
      // As in releaseWorkspaceNet: its orphans would outlive it. Logged, not thrown: the namespace goes regardless.
      await abortWorkspaceConnections(netns).catch((error: unknown) =>
        this.logger.warn({ netns, error: String(error) }, 'could not reset the sockets left in a namespace'),
      );
      await deleteNetns(netns);
      removed++;
    }
    return removed;
  }
}

/**
 * Removes a recorded workspace network (idempotent); also usable by a runtime that no longer isolates. The sockets
 * its processes left (orphans still sending what they had queued) are reset first, while the link is up: they count
 * against the node's orphan limit, and the namespace's deletion does not end them (`abortWorkspaceConnections`).
 * Then the link: a live owner always holds its link, so a netns without one is known to be a leftover. A failed
 * abort fails the release, but only after the link and the netns are gone.
 */
export async function releaseWorkspaceNet(net: WorkspaceNet): Promise<void> {
  const aborted = await abortWorkspaceConnections(net.netns).then(
    () => undefined,
    (error: unknown) => ({ error }),
  );
  await deleteLink(net.ifName);
  await deleteNetns(net.netns);
  if (aborted) throw aborted.error;
}
