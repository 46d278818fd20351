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
 * {@link coolingShare}) is taken for the flooding one: two floods each just under half (an anonymous one and a
 * tenant's with its token) filled the cap, and neither was ever refused.
 */
export const lastingTicks = 3;

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
 * (from {@link coolingShare} on): the workspaces whose anonymous transfers hold the most of it, until they make half
 * (spread over workspaces: a workspace is a class of them, not an address; those are cheap, public ports are not).
 * Else, once the pressure has lasted, the owner holding the most, from {@link coolingShare} on. Empty: no class
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
    (lasting && anonymousTotal / budget > coolingShare && anonymousTotal >= (topOwner?.[1] ?? 0));
  if (anonymousFlood) {
    let covered = 0;
    for (const [key, bytes] of anonymous) {
      if (covered >= anonymousTotal / 2) break;
      over.add(key);
      covered += bytes;
    }
  } else if (lasting && topOwner && topOwner[1] / budget > coolingShare) {
    over.add(topOwner[0]);
  }
  return over;
}
