/**
 * Sheds the proxied transfers that hold the manager's TCP budget without using it. `workbay up` caps the manager's
 * socket buffers (cgroup v1, `runtime/local/manager-tcp.ts`) so that the proxy cannot take the node's TCP memory;
 * but the cap is one for every proxied connection, and a client that reads an answer slowly, or not at all, keeps
 * megabytes of it: the rest of the answer queued for it, and more in the paused connection to the workspace. 20-40
 * such connections of one anonymous client filled it, and every owner's downloads through the proxy crawled at
 * 10-25 KB/s for as long as they stayed (red team round 17b, M1).
 *
 * So while the budget is nearly used up, each tracked transfer (and each connection the proxy is closing, its answer's
 * rest queued for the linger) is weighed: the bytes the kernel holds for its two
 * connections (send and receive queues, socket-queues.ts) and the proxy's own buffers for them, less what its peers
 * acknowledged in the last second (a transfer whose peers take more than it holds is using the memory, not sitting on
 * it; one seen for the first time has shown nothing yet). The client addresses are taken heaviest first, and their
 * transfers reset at both ends, until what they held covers the budget's excess over `threshold` less a margin (0.1,
 * growing by 0.1 a tick, up to 0.4, while the pressure lasts). A
 * pace alone does not tell an attacker: a victim's download at 40 KB/s is slow, while readers at 200 KB/s held the
 * budget and passed for fast, and a flood that had just filled its buffers looked like it moved megabytes (red team
 * round 18, N1b: the victim was the first reset). Stalled transfers (their peers took under 16 KiB a second over
 * the last three seconds: a reader's window reopens in steps) go first, by address; then, if that was not enough,
 * those that came with the pressure (a sudden flood is new connections), then the rest, by address. A flood is one client's, so its
 * weight is its address's; a victim's slow download that still moves is reached only when the pressure outlasts every
 * stalled transfer and every heavier address. Who is refused meanwhile (a shed client, an owner flooding from several
 * addresses, a class holding more than its share: one workspace's anonymous clients, or one owner's) is `shed-admission.ts`'s.
 *
 * @module
 */
import type { Socket } from 'node:net';
import type { Logger } from '../logger.js';
import { resetOrDestroy } from './closing.js';
import { coolableOwners, floodingClasses } from './class-shares.js';
import { ShedAdmission, classKey, clientKey } from './shed-admission.js';
import type { ShedRefusal } from './shed-admission.js';
import { connectionKey, readNodeTcpBytes, readSocketQueues } from './socket-queues.js';
import type { ConnectionKey, SocketQueue } from './socket-queues.js';

/** The share of the budget in use (0 to 1, and more when over it). */
export type TcpPressure = () => Promise<number>;

export interface SheddingOptions {
  /** The share of the budget in use, where the kernel caps the manager's socket buffers (cgroup v1). */
  readonly pressure?: TcpPressure;
  /**
   * The budget, in bytes: what a class's share is measured against (with `pressure` too: the cap's size). Without
   * `pressure`, the proxy's connections keep within it by themselves, the share in use being what the tracked
   * transfers hold (the kernel's queues and the proxy's buffers) over it. Without it, the shares are of what the
   * tracked transfers hold.
   */
  readonly budgetBytes?: number;
  /**
   * What the node's TCP sockets hold together (default: `/proc/net/sockstat`; replaced in unit tests): with
   * `budgetBytes`, the proxy's share cannot be more, so the queues are read only once this passes half the mark.
   */
  readonly nodeTcpBytes?: () => Promise<number>;
  /**
   * Shed from this share of the budget on (default 0.8); each round sheds down to 0.1 below it. Transfers are watched
   * (what their peers take) from half of it on.
   */
  readonly threshold?: number;
  readonly intervalMs?: number;
  /**
   * How long a client whose stalled transfers were shed is refused (default 30 s, doubled each time it is shed again
   * within that time, up to 16 times): a flood that reconnects at once would hold the budget again. A client shed
   * while its peers were taking data is not refused. Also how long an owner whose stalled transfers were shed from
   * several clients is refused everywhere (`shed-admission.ts`).
   */
  readonly cooldownMs?: number;
  /**
   * How long after the last tick under pressure with anonymous transfers over their share anonymous requests are still
   * refused (default 10 s).
   */
  readonly pressureHoldMs?: number;
  /**
   * Whether a client address stands for one client (default true). Behind a load balancer or a NAT every client has
   * the same one: each transfer is then weighed on its own, and nobody is refused for a cooldown (round 18b: one
   * flood behind the shared address locked every client behind it out for 30 s).
   */
  readonly addressIsClient?: boolean;
  /**
   * The kernel's queues of the connections with these local ports (default: this process's namespace's, from /proc;
   * replaced in unit tests).
   */
  readonly socketQueues?: (localPorts: ReadonlySet<number>) => Promise<ReadonlyMap<ConnectionKey, SocketQueue>>;
  readonly logger: Logger;
}

interface Transfer {
  readonly ends: readonly Socket[];
  /** Each end's connection, as the kernel lists it (taken when tracked: a closed socket forgets its addresses). */
  readonly keys: (ConnectionKey | undefined)[];
  /** The client's address (its /64 for IPv6), with the owner whose token it carried: whose transfer this is. */
  readonly client: string;
  /** The client's address (taken when tracked: a closed socket forgets it), and the owner whose token it carried. */
  readonly address: string;
  readonly owner: string | undefined;
  /** The workspace its requests went to ('' when not known): anonymous transfers are classed by it. */
  readonly workspace: string;
  /** When it was tracked (ms). */
  readonly since: number;
  /**
   * Bytes each end's peer had acknowledged at the last watched ticks, oldest first, at most {@link progressTicks} + 1
   * of them (empty: not watched yet).
   */
  acked: number[][];
}

/**
 * Progress is judged over this many ticks: a reader's window reopens in steps (on loopback, ~98 KB every 2-3 s for a
 * 40 KB/s reader), so one second can show none from a client that reads (round 18c).
 */
const progressTicks = 3;

/**
 * A transfer's weight (bytes it holds less what its peers take a second), what it holds, and whether its peers took
 * almost nothing.
 */
interface Weight {
  readonly weight: number;
  readonly holds: number;
  readonly stalled: boolean;
}

/**
 * A transfer is stalled only while at least this much waits in the kernel on one of its peers (a send queue): a
 * download whose bytes do not even reach its client's socket is starved by the budget, not holding it (round 19: a
 * 40 KB/s reader, starved while a flood held the cap full, looked stalled, and was reset and cooled like the flood).
 */
const waitingBytes = 16 * 1024;

/** A transfer's class: its owner, or the anonymous clients of its workspace (shed-admission.ts's classKey). */
const classOf = (transfer: Transfer): string => classKey(transfer.owner, transfer.workspace);

/** Below this a client's transfers together hold too little to be worth a reset. */
const minWeight = 64 * 1024;

/** What a tick has chosen so far: the transfers to reset, the clients to cool down, the bytes that frees. */
interface Choice {
  readonly victims: Set<Transfer>;
  /** Each client whose stalled transfers go, with one of them (its address and owner). */
  readonly cooled: Map<string, Transfer>;
  freed: number;
}

export class TransferShedder {
  private readonly transfers = new Set<Transfer>();
  private readonly timer: NodeJS.Timeout;
  private readonly threshold: number;
  private readonly intervalMs: number;
  private readonly socketQueues: (localPorts: ReadonlySet<number>) => Promise<ReadonlyMap<ConnectionKey, SocketQueue>>;
  private readonly addressIsClient: boolean;
  private readonly admission: ShedAdmission;
  /** Transfers tracked so far: a transfer's own key where addresses do not tell clients apart. */
  private tracked = 0;
  /** Bytes a transfer's peers must take in an interval not to be stalled (16 KiB a second). */
  private readonly minProgress: number;
  private running = false;
  /** Ticks in a row over the mark (1 on the first). */
  private pressuredTicks = 0;
  /** When the ticks over the mark began (undefined: below it). */
  private pressureSince: number | undefined;
  /** Transfers reset so far (for metrics and tests). */
  shed = 0;

  constructor(private readonly options: SheddingOptions) {
    this.threshold = options.threshold ?? 0.8;
    this.intervalMs = options.intervalMs ?? 1_000;
    this.socketQueues = options.socketQueues ?? readSocketQueues;
    this.addressIsClient = options.addressIsClient ?? true;
    const cooldownMs = options.cooldownMs ?? 30_000;
    this.admission = new ShedAdmission({
      cooldownMs: this.addressIsClient ? cooldownMs : 0,
      ownerCooldownMs: cooldownMs,
      // Behind a load balancer each transfer is a client of its own: an owner's few paused downloads are not a flood.
      ownerClients: this.addressIsClient ? 3 : 8,
      networkAddresses: this.addressIsClient ? 8 : 0,
      pressureHoldMs: options.pressureHoldMs ?? 10_000,
    });
    this.minProgress = (16 * 1024 * this.intervalMs) / 1000;
    this.timer = setInterval(() => void this.tick(), this.intervalMs);
    this.timer.unref();
  }

  /**
   * Tracks a transfer between `ends` (client first), of `owner` when it carries that owner's token, to `workspace`
   * when known; returns the function that stops tracking it.
   */
  track(ends: readonly Socket[], owner?: string, workspace = ''): () => void {
    const transfer: Transfer = {
      ends,
      keys: ends.map((end) => connectionKey(end.localAddress, end.localPort, end.remoteAddress, end.remotePort)),
      client: this.addressIsClient ? clientKey(ends[0]?.remoteAddress ?? '', owner) : `#${++this.tracked}`,
      address: ends[0]?.remoteAddress ?? '',
      owner,
      workspace,
      since: Date.now(),
      acked: [],
    };
    this.transfers.add(transfer);
    return () => this.transfers.delete(transfer);
  }

  /**
   * Whether a request from `address` (with `owner`'s token, when it carries one) to `workspace` is refused, and why
   * (`shed-admission.ts`): its client or owner was just shed for holding the budget without reading, or its class
   * (the owner, or the workspace's anonymous clients) holds too much of a budget under pressure.
   */
  refuses(address: string, owner?: string, workspace = ''): ShedRefusal | undefined {
    return this.admission.refuses(address, owner, workspace);
  }

  /** Requests refused so far: their client or owner cooling down, and new anonymous ones under pressure. */
  get refused(): { readonly cooling: number; readonly pressure: number } {
    return { cooling: this.admission.refusedCooling, pressure: this.admission.refusedPressure };
  }

  get size(): number {
    return this.transfers.size;
  }

  stop(): void {
    clearInterval(this.timer);
    this.transfers.clear();
  }

  /**
   * Each transfer's weight: what it holds (kernel queues and the proxy's buffers) less what its peers acknowledged a
   * tick over the last watched ticks (up to {@link progressTicks}), and whether it is stalled (its peers took under
   * `minProgress` a tick); and what all of them hold together. A transfer seen for the first time weighs what it holds and is not stalled.
   */
  private weigh(queues: ReadonlyMap<ConnectionKey, SocketQueue>): {
    weighed: Map<Transfer, Weight>;
    held: number;
    /** What each class holds (classOf). */
    heldByClass: Map<string, number>;
  } {
    const weighed = new Map<Transfer, Weight>();
    let held = 0;
    const heldByClass = new Map<string, number>();
    for (const transfer of this.transfers) {
      // An end tracked while still connecting (the proxy's connection to the workspace) has its addresses only now
      // (round 19b, N10: that half, most of what a flood holds, was never weighed).
      for (const [i, end] of transfer.ends.entries()) {
        transfer.keys[i] ??= connectionKey(end.localAddress, end.localPort, end.remoteAddress, end.remotePort);
      }
      const kernel = transfer.keys.map((key) => (key ? queues.get(key) : undefined));
      // What the kernel charges where known (small segments cost more than their data), else the data queued.
      const holds = transfer.ends.reduce(
        (sum, end, i) =>
          sum + end.writableLength + (kernel[i]?.memory ?? (kernel[i]?.send ?? 0) + (kernel[i]?.receive ?? 0)),
        0,
      );
      // Handed to the kernel (bytesWritten counts the proxy's buffer too) and no longer in its send queue.
      const acked = transfer.ends.map((end, i) => end.bytesWritten - end.writableLength - (kernel[i]?.send ?? 0));
      const oldest = transfer.acked[0];
      const ticks = transfer.acked.length;
      transfer.acked.push(acked);
      if (transfer.acked.length > progressTicks + 1) transfer.acked.shift();
      held += holds;
      heldByClass.set(classOf(transfer), (heldByClass.get(classOf(transfer)) ?? 0) + holds);
      if (!oldest) {
        weighed.set(transfer, { weight: holds, holds, stalled: false });
        continue;
      }
      const taken = acked.reduce((sum, bytes, i) => sum + Math.max(0, bytes - oldest[i]!), 0);
      const waiting = kernel.some((queue) => (queue?.send ?? 0) >= waitingBytes);
      weighed.set(transfer, {
        weight: holds - taken / ticks,
        holds,
        // Only over the whole window: one or two seconds can show nothing from a client that reads.
        stalled: ticks >= progressTicks && taken < this.minProgress * ticks && waiting,
      });
    }
    return { weighed, held, heldByClass };
  }

  /**
   * The transfers to reset, and the clients to cool down, until what they hold covers the excess (`load` over the
   * target, as a share of what all tracked transfers hold). First the stalled transfers, by client address, heaviest first: a flood
   * that only holds goes before anyone who reads (round 18b: 80 addresses of one attacker, each holding less than a
   * victim's one download at 40 KB/s, had the victim reset first, then locked out by the cooldown). Then, if that is
   * not enough, the transfers that came with the pressure, then every other, by client address, heaviest first, each
   * holding at least a quarter of what is still to free; those clients are not cooled down. Only the transfers of a
   * class (anonymous, an owner's) holding more than its share while one does, or, once the pressure has lasted
   * three ticks without one, of the class holding the most (class-shares.ts).
   */
  private victims(
    weighed: ReadonlyMap<Transfer, Weight>,
    held: number,
    heldByClass: ReadonlyMap<string, number>,
    load: number,
    now: number,
  ): { victims: Transfer[]; cooled: Map<string, Transfer>; overShare: Set<string>; heavy: Set<string> } {
    // Deeper while the pressure lasts: a flood that comes back from fresh addresses refills what one tick freed before
    // the next (round 18b, N2b: 400 addresses in 60 s kept the cap full for 59 s). 0.1 below the mark, then 0.2, 0.3, 0.4.
    const target = Math.max(0, this.threshold - 0.1 * Math.min(this.pressuredTicks, 4));
    const excess = (held * (load - target)) / load;
    const chosen: Choice = { victims: new Set(), cooled: new Map(), freed: 0 };
    // Of the budget: other sockets in the cap (the daemon's) do not make one owner's few transfers its biggest holder.
    const budget = this.options.budgetBytes ?? held / load;
    // What looks like a flood: transfers that came with the pressure, or stalled ones. Older transfers that move (someone's
    // downloads) do not make their class the one to refuse (red team round 20b, N15, N16: a victim's slow downloads made
    // its workspace's anonymous visitors, or its owner, the class holding the most, and they were refused, not the flood).
    const episode = (this.pressureSince ?? now) - 2 * this.intervalMs;
    const suspectByClass = new Map<string, number>();
    for (const [transfer, w] of weighed) {
      if (!w.stalled && transfer.since < episode) continue;
      suspectByClass.set(classOf(transfer), (suspectByClass.get(classOf(transfer)) ?? 0) + w.holds);
    }
    const holdings = { heldByClass, suspectByClass, budget, pressuredTicks: this.pressuredTicks };
    const overShare = floodingClasses(holdings);
    // While a class holds more than its share, only its transfers are shed: an owner's download is not the price of an
    // anonymous flood, or of another owner's (round 19: the first tick of one reset an owner's 40 KB/s reader, the
    // heaviest client; transfers recycled before they could look stalled kept the cap full).
    // Stalled ones of other classes neither (round 19c, N14: an owner's 10 KB/s downloads were reset again and again
    // for an anonymous flood): the flooding class's requests wait meanwhile, so its transfers only age into stalled ones.
    const flooding = (t: Transfer): boolean => overShare.size === 0 || overShare.has(classOf(t));
    this.choose(weighed, { among: flooding, flood: overShare.size > 0 }, excess, chosen, now);
    return {
      victims: [...chosen.victims],
      cooled: chosen.cooled,
      overShare,
      heavy: coolableOwners(holdings),
    };
  }

  /**
   * Adds to `chosen` the transfers `among` to reset until it has freed `excess`: stalled ones, then those that came with
   * the pressure, then (only where neither had any) every other, by client, heaviest first; a moving client only where
   * it holds at least a quarter of what is still to free.
   */
  private choose(
    weighed: ReadonlyMap<Transfer, Weight>,
    /** The transfers that may be chosen, and whether they are a flooding class's (shed down to the smallest). */
    { among, flood }: { readonly among: (transfer: Transfer) => boolean; readonly flood: boolean },
    excess: number,
    chosen: Choice,
    now: number,
  ): void {
    const { victims, cooled } = chosen;
    // The flood that brought a sudden pressure is in the transfers that came with it: those that move and came
    // with or after it go before older ones (round 18c: the first ticks of a sudden flood, nothing watched before,
    // reset a 300 KB/s and a 128 KB/s download older than the flood, each heavier than any one flooding address).
    const episode = (this.pressureSince ?? now) - 2 * this.intervalMs;
    const passes: Array<(transfer: Transfer, w: Weight) => boolean> = [
      (_, w) => w.stalled,
      (transfer) => transfer.since >= episode,
      () => true,
    ];
    const done = (): boolean => victims.size > 0 && chosen.freed >= excess;
    for (const [pass, inPass] of passes.entries()) {
      if (done()) return;
      // Transfers older than the pressure that still move are the likeliest to be someone's real download: they go only
      // in a tick that found nothing else, after the pressure was read again (a flood's fresh transfers, each seen once,
      // weigh only what they held so far: CI, a loaded machine, had the first tick of one reset a 40 KB/s download too).
      if (pass === passes.length - 1 && victims.size > 0) return;
      const stalledPass = pass === 0;
      const byClient = new Map<string, { transfers: Transfer[]; weight: number }>();
      for (const [transfer, w] of weighed) {
        if (w.weight <= 0 || !inPass(transfer, w) || victims.has(transfer)) continue;
        if (!among(transfer)) continue;
        const entry = byClient.get(transfer.client) ?? { transfers: [], weight: 0 };
        entry.transfers.push(transfer);
        entry.weight += w.weight;
        byClient.set(transfer.client, entry);
      }
      // A transfer that moves is reset only where that frees a good part of the excess: the pressure of readers that
      // take everything in bursts is not a steady slow download's doing (round 18b: such a spike reset the victim's).
      // Nor for a flooding class's transfers that came with the pressure: a flood spread over many addresses, each
      // holding little, is still the flood (red team round 20b, N17: nothing was ever reset). Its older ones that move
      // keep it: the class's own visitors' downloads.
      const floor = stalledPass || (flood && pass === 1) ? minWeight : Math.max(minWeight, (excess - chosen.freed) / 4);
      for (const [client, entry] of [...byClient].sort(([, a], [, b]) => b.weight - a.weight)) {
        if (entry.weight < floor || done()) break;
        for (const transfer of entry.transfers) victims.add(transfer);
        if (stalledPass) cooled.set(client, entry.transfers[0]!);
        chosen.freed += entry.weight;
      }
    }
  }

  private async tick(): Promise<void> {
    if (this.running) return;
    this.running = true;
    try {
      // With a budget of its own, the node's total first: an upper bound of the proxy's share, read cheaply.
      const budget = this.options.budgetBytes;
      let load = this.options.pressure
        ? await this.options.pressure()
        : (await (this.options.nodeTcpBytes ?? readNodeTcpBytes)()) / (budget ?? Infinity);
      if (!(load >= this.threshold / 2)) {
        // Far from the mark: nothing to watch (reading the kernel's queues costs a pass over every connection).
        for (const transfer of this.transfers) transfer.acked = [];
        return;
      }
      const localPorts = new Set<number>();
      for (const transfer of this.transfers) for (const end of transfer.ends) localPorts.add(end.localPort ?? 0);
      const { weighed, held, heldByClass } = this.weigh(await this.socketQueues(localPorts));
      if (!this.options.pressure) load = held / (budget ?? Infinity);
      if (!(load >= this.threshold)) {
        this.pressuredTicks = 0;
        this.pressureSince = undefined;
        return;
      }
      this.pressuredTicks += 1;
      this.pressureSince ??= Date.now();
      const now = Date.now();
      const { victims, cooled, overShare, heavy } = this.victims(weighed, held, heldByClass, load, now);
      for (const cls of overShare) this.admission.overShare(cls, now);
      const clients = new Set(victims.map((v) => v.client));
      for (const [client, one] of cooled) {
        // An owner's stalled transfers are reset, but its clients cool down only where the owner holds a good part of
        // the budget: slow downloads of an owner on a poor link are not a flood (round 19, N9: eight 10 KB/s downloads
        // had their owner refused everywhere, its IDE too, during another client's flood), and no less of what looks
        // like a flood than anyone else (round 20, N16: a flood recycled before it could look stalled).
        if (one.owner !== undefined && !heavy.has(classOf(one))) continue;
        this.admission.shedStalled(client, one.address, one.owner, now);
      }
      for (const transfer of victims) {
        this.transfers.delete(transfer);
        for (const end of transfer.ends) resetOrDestroy(end);
      }
      const shed = victims.length;
      this.shed += shed;
      if (shed > 0) {
        this.options.logger.warn(
          {
            shed,
            clients: clients.size,
            ...(this.addressIsClient ? { cooled: cooled.size } : {}),
            load: Math.round(load * 100) / 100,
          },
          'reset the proxied transfers holding the most: the manager’s TCP budget is nearly used up',
        );
      }
    } catch (error) {
      // Deliberate: the pressure or the queues could not be read (a cgroup gone); retried at the next tick.
      this.options.logger.debug({ err: error }, 'cannot weigh the proxied transfers');
    } finally {
      this.running = false;
    }
  }
}
