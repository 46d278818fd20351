/**
 * Which classes of transfers hold too much of the proxy's TCP budget under pressure (shedding.ts): a class is one
 * owner's transfers (requests with its token, to any of its workspaces) or one workspace's anonymous ones
 * (shed-admission.ts's `classKey`). Addresses are cheap, so what an attacker can hold is judged by class, which it
 * cannot farm: only the flooding classes' transfers are reset, and their requests wait (red team rounds 19-19c).
 *
 * @module
 */
import { isAnonymousClass } from './shed-admission.js';

/**
 * The share of the budget one class may hold under pressure: past it only that class's transfers are shed, and its
 * requests are refused (shed-admission.ts). The others keep the rest.
 */
export const classShare = 0.5;

/** An owner whose transfers hold less than this share of the budget is not cooled down when its stalled ones are shed. */
export const coolingShare = 0.25;

/**
 * Ticks the pressure may last, no class over its share, before the class holding the most (at least
 * {@link lastingShare}) is taken for the flooding one: two floods each just under half (an anonymous one and a
 * tenant's with its token) filled the cap, and neither was ever refused.
 */
export const lastingTicks = 3;

/**
 * Once the pressure has lasted {@link lastingTicks}, the group (anonymous clients together, or an owner) holding the most
 * of what looks like a flood is taken for the flooding one from this share on: a flood spread over three workspaces and
 * three owners' tokens, every class under a quarter, kept the cap at 94-100% for 29 s, and nothing was refused (red
 * team round 20b, N17).
 */
export const lastingShare = 0.1;

/** The classes holding more than `share` of `budget` bytes. */
export function classesHolding(heldByClass: ReadonlyMap<string, number>, budget: number, share: number): Set<string> {
  return new Set([...heldByClass].filter(([, bytes]) => bytes / budget > share).map(([key]) => key));
}

/** What {@link floodingClasses} judges by. */
export interface ClassHoldings {
  /** What each class's transfers hold. */
  readonly heldByClass: ReadonlyMap<string, number>;
  /** What each class's transfers that look like a flood hold: those that came with the pressure, and stalled ones. */
  readonly suspectByClass: ReadonlyMap<string, number>;
  readonly budget: number;
  /** How many ticks the pressure has lasted. */
  readonly pressuredTicks: number;
}

/**
 * The classes taken for flooding ones: those holding more than {@link classShare} of the budget. Else, by what looks
 * like a flood only (older transfers that move are someone's downloads: red team round 20b, N15, N16), where the
 * anonymous ones together are over that share, or hold the most once the pressure has lasted {@link lastingTicks}
 * (from {@link lastingShare} on): the workspaces whose anonymous transfers hold the most of it, until they make half
 * (spread over workspaces: a workspace is a class of them, not an address; those are cheap, public ports are not).
 * Else, once the pressure has lasted, the owner holding the most, from {@link lastingShare} on. Empty: no class
 * floods, every class's transfers may be shed.
 */
export function floodingClasses({ heldByClass, suspectByClass, budget, pressuredTicks }: ClassHoldings): Set<string> {
  const over = classesHolding(heldByClass, budget, classShare);
  if (over.size > 0) return over;
  const suspect = [...suspectByClass].filter(([, bytes]) => bytes > 0).sort(([, a], [, b]) => b - a);
  const anonymous = suspect.filter(([key]) => isAnonymousClass(key));
  const anonymousTotal = anonymous.reduce((sum, [, bytes]) => sum + bytes, 0);
  const [topOwner] = suspect.filter(([key]) => !isAnonymousClass(key));
  const lasting = pressuredTicks >= lastingTicks;
  const anonymousFlood =
    anonymousTotal / budget > classShare ||
    (lasting && anonymousTotal / budget > lastingShare && anonymousTotal >= (topOwner?.[1] ?? 0));
  if (anonymousFlood) {
    let covered = 0;
    for (const [key, bytes] of anonymous) {
      if (covered >= anonymousTotal / 2) break;
      over.add(key);
      covered += bytes;
    }
  } else if (lasting && topOwner && topOwner[1] / budget > lastingShare) {
    over.add(topOwner[0]);
  }
  return over;
}

/**
 * The owners whose clients cool down when their stalled transfers are shed: those holding {@link coolingShare} of the
 * budget, and no less of what looks like a flood than any other owner or the anonymous clients together. A flood
 * recycled before it could look stalled left a victim's slow downloads the only stalled transfers, and the victim,
 * holding a quarter, was cooled down twice, its IDE refused (red team round 20, N16).
 */
export function coolableOwners({ heldByClass, suspectByClass, budget }: ClassHoldings): Set<string> {
  const groups = new Map<string, number>();
  for (const [key, bytes] of suspectByClass) {
    const group = isAnonymousClass(key) ? '' : key;
    groups.set(group, (groups.get(group) ?? 0) + bytes);
  }
  const most = Math.max(0, ...groups.values());
  return new Set(
    [...classesHolding(heldByClass, budget, coolingShare)].filter(
      (key) => !isAnonymousClass(key) && (groups.get(key) ?? 0) >= most,
    ),
  );
}
