/**
 * Who the proxy refuses while (and just after) the shedder (`shedding.ts`) resets transfers for the manager's TCP
 * budget. A reset costs a flood nothing to retry: each new connection takes its share of the budget again before the
 * next tick. So:
 *
 * - a **client** (an address, with the owner whose token its requests carry) whose stalled transfers were shed is
 *   refused for a cooldown (30 s, doubling each time it is shed again soon after, up to 16 times; red team round 18);
 * - an **owner** whose stalled token-carrying transfers were shed from several addresses is refused from every
 *   address: its own account floods (round 18b, N2b with the token);
 * - anonymous requests from a **network** (an IPv4 /24, an IPv6 /48) of which several addresses were shed so are
 *   refused: a flood from fresh addresses of one network (an IPv6 /48 has 65,536 /64s) is one client's;
 * - while the budget is under pressure and the anonymous transfers (or one owner's) hold more than their share of it,
 *   and for a hold after, **every request of that class** is refused: a flood that comes back from a fresh address for
 *   every reset never waits out a cooldown (round 18b, N2b: 400 addresses in 60 s kept the cap full for 59 s), any
 *   reputation an address could earn first a flood earns too (round 19: addresses primed with one request each kept
 *   the cap full 33 of 35 s), and transfers recycled before they look stalled are never cooled (round 19, N8).
 *
 * @module
 */
import { addressKey } from './connection-limits.js';

/**
 * Why a request is refused: its client (or owner, or network) cools down, or its class holds too much; and when it
 * may come back (whole seconds, at least 1).
 */
export interface ShedRefusal {
  readonly reason: 'cooling' | 'pressure';
  readonly retryAfterSeconds: number;
}

const retryAfter = (until: number, now: number): number => Math.max(1, Math.ceil((until - now) / 1000));

export interface ShedAdmissionOptions {
  /** How long a client whose stalled transfers were shed is refused (0: never; behind a load balancer). */
  readonly cooldownMs: number;
  /** How long an owner whose stalled transfers were shed from `ownerClients` clients is refused everywhere. */
  readonly ownerCooldownMs: number;
  /** Distinct clients an owner's stalled transfers were shed from, within its cooldown, before it is refused. */
  readonly ownerClients: number;
  /**
   * Distinct addresses of a network (/24, /48) whose anonymous stalled transfers were shed within the cooldown before
   * its anonymous requests are refused (0: never; behind a load balancer).
   */
  readonly networkAddresses: number;
  /** How long after the last tick a class (anonymous, an owner) held too much its requests are still refused. */
  readonly pressureHoldMs: number;
}

/** A cooled key: refused until `until`; cooled again before `until + cooldown`, it stays out twice as long. */
interface Cooling {
  readonly until: number;
  readonly strikes: number;
  /** The cooldown it doubles. */
  readonly base: number;
}

/** Keys remembered at most (the oldest forgotten first): an IPv6 flood has many /64s. */
const maxRemembered = 65_536;

/**
 * A client: an address (its /64 for IPv6), and the owner whose token its requests carry. An owner's token-carrying
 * flood is cooled down on its own (round 18c, N6), and an anonymous flood does not lock that owner out of its address
 * (18b, N3).
 */
export function clientKey(address: string, owner: string | undefined): string {
  const key = addressKey(address);
  return owner === undefined ? key : `${key}|owner:${owner}`;
}

const ownerKey = (owner: string): string => `owner:${owner}`;

/**
 * A class of transfers, held to its share of the budget as a whole: an owner's (requests with its token, to any of its
 * workspaces), or the anonymous clients of one workspace (`''`: not known). Anonymous clients were one class: a flood
 * of one workspace's had every anonymous visitor of every workspace refused (red team round 19c, N12).
 */
export function classKey(owner: string | undefined, workspace: string): string {
  return owner === undefined ? `${anonymousClass}${workspace}` : ownerKey(owner);
}

const anonymousClass = 'anonymous:';

/** Whether a {@link classKey} is one of anonymous clients (of a workspace). */
export const isAnonymousClass = (key: string): boolean => key.startsWith(anonymousClass);

/** The network of an address, as a cooling key: its IPv4 /24 or its IPv6 /48. */
function networkKey(address: string): string {
  const key = addressKey(address);
  if (key.endsWith('::/64')) return `net:${key.split(':').slice(0, 3).join(':')}::/48`;
  return `net:${key.split('.').slice(0, 3).join('.')}.0/24`;
}

export class ShedAdmission {
  private readonly cooling = new Map<string, Cooling>();
  /** For each owner (network), the clients (addresses) its stalled transfers were shed from, with when (ms). */
  private readonly groupSheds = new Map<string, Map<string, number>>();
  /** Until when requests of a class are refused (ms), by {@link classKey}. */
  private readonly overShareUntil = new Map<string, Cooling>();
  /** Requests refused so far because their client or owner cooled down. */
  refusedCooling = 0;
  /** Requests refused so far because their class (anonymous, an owner) held too much of the budget. */
  refusedPressure = 0;

  constructor(private readonly options: ShedAdmissionOptions) {}

  /**
   * Whether a request from `address` (with `owner`'s token, when it carries one) to `workspace` (`''`: not known) is
   * refused, and why.
   */
  refuses(address: string, owner: string | undefined, workspace = '', now = Date.now()): ShedRefusal | undefined {
    const keys = [clientKey(address, owner), owner === undefined ? networkKey(address) : ownerKey(owner)];
    const cooledUntil = Math.max(...keys.map((key) => this.cooling.get(key)?.until ?? 0));
    if (cooledUntil > now) {
      this.refusedCooling += 1;
      return { reason: 'cooling', retryAfterSeconds: retryAfter(cooledUntil, now) };
    }
    const heldUntil = this.overShareUntil.get(classKey(owner, workspace))?.until ?? 0;
    if (now >= heldUntil) return undefined;
    this.refusedPressure += 1;
    return { reason: 'pressure', retryAfterSeconds: retryAfter(heldUntil, now) };
  }

  /**
   * The transfers of a class ({@link classKey}) hold more than their share of a budget under pressure, at `now` (once
   * a tick): its requests are refused for the hold.
   */
  overShare(key: string, now = Date.now()): void {
    const base = this.options.pressureHoldMs;
    const previous = this.overShareUntil.get(key);
    // Over its share again soon after its requests were let back in: the hold doubles (up to 16 times), so that a flood
    // refilling the cap the moment it may (round 19c, N13: every 12 s, each refill stalling owners' downloads in flight)
    // does so ever more rarely. While it holds, each tick only extends it.
    const strikes = !previous
      ? 0
      : now < previous.until
        ? previous.strikes
        : now < previous.until + base * 2 ** previous.strikes
          ? Math.min(previous.strikes + 1, 4)
          : 0;
    this.overShareUntil.delete(key);
    this.overShareUntil.set(key, { until: now + base * 2 ** strikes, strikes, base });
    forgetOldest(this.overShareUntil, (entry) => entry.until + entry.base * 2 ** entry.strikes <= now);
  }

  /**
   * `client`'s stalled transfers, from `address`, were shed at `now`; `owner` when they carried its token. An owner (or,
   * for anonymous ones, a network) that many clients were shed for is refused as a whole.
   */
  shedStalled(client: string, address: string, owner: string | undefined, now = Date.now()): void {
    const { cooldownMs, ownerCooldownMs, ownerClients, networkAddresses } = this.options;
    if (cooldownMs > 0) this.cool(client, cooldownMs, now);
    if (owner !== undefined) {
      if (ownerCooldownMs > 0) this.escalate(ownerKey(owner), client, ownerClients, ownerCooldownMs, now);
    } else if (networkAddresses > 0 && cooldownMs > 0) {
      this.escalate(networkKey(address), addressKey(address), networkAddresses, cooldownMs, now);
    }
  }

  /** Records that `member` of `group` was shed; the group is cooled once `threshold` members were within `windowMs`. */
  private escalate(group: string, member: string, threshold: number, windowMs: number, now: number): void {
    const sheds = this.groupSheds.get(group) ?? new Map<string, number>();
    for (const [key, at] of sheds) if (at + windowMs <= now) sheds.delete(key);
    sheds.set(member, now);
    this.groupSheds.delete(group);
    this.groupSheds.set(group, sheds);
    forgetOldest(this.groupSheds, () => false);
    if (sheds.size >= threshold) this.cool(group, windowMs, now);
  }

  private cool(key: string, cooldownMs: number, now: number): void {
    const previous = this.cooling.get(key);
    // Still cooling down (shed again in the same tick, or its transfers from before the refusal): nothing new.
    if (previous && now < previous.until) return;
    // Shed again soon after it was let back in: the same client, twice as long (round 19: counting every shed of one
    // tick as a strike locked an owner out for 8 minutes at once).
    const strikes =
      previous && now < previous.until + cooldownMs * 2 ** previous.strikes ? Math.min(previous.strikes + 1, 4) : 0;
    this.cooling.delete(key);
    this.cooling.set(key, { until: now + cooldownMs * 2 ** strikes, strikes, base: cooldownMs });
    // Oldest first: forgotten once it would no longer double, or when too many are remembered.
    forgetOldest(this.cooling, (entry) => entry.until + entry.base * 2 ** entry.strikes <= now);
  }
}

/** Forgets the oldest entries of `map` while it is over its bound or `expired` says so. */
function forgetOldest<V>(map: Map<string, V>, expired: (value: V) => boolean): void {
  for (const [key, value] of map) {
    if (map.size <= maxRemembered && !expired(value)) break;
    map.delete(key);
  }
}
