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

/**
 * The classes taken for flooding ones, given what each holds, the budget, and how many ticks the pressure has lasted:
 * those over {@link classShare}; else, where anonymous transfers together are over it, spread over workspaces, the
 * workspaces whose anonymous transfers hold the most until they make half of what anonymous ones hold (a workspace
 * whose visitors hold little is not one of them); else, once the pressure has lasted {@link lastingTicks}, the class
 * holding the most, if it holds {@link coolingShare}. Empty: no class floods, every class's transfers may be shed.
 */
export function floodingClasses(
  heldByClass: ReadonlyMap<string, number>,
  budget: number,
  pressuredTicks: number,
): Set<string> {
  const over = classesHolding(heldByClass, budget, classShare);
  if (over.size > 0) return over;
  const byHoldings = [...heldByClass].sort(([, a], [, b]) => b - a);
  const anonymous = byHoldings.filter(([key]) => isAnonymousClass(key));
  const anonymousTotal = anonymous.reduce((sum, [, bytes]) => sum + bytes, 0);
  if (anonymousTotal / budget > classShare) {
    let covered = 0;
    for (const [key, bytes] of anonymous) {
      if (covered >= anonymousTotal / 2) break;
      over.add(key);
      covered += bytes;
    }
    return over;
  }
  const [biggest] = byHoldings;
  if (pressuredTicks >= lastingTicks && biggest && biggest[1] / budget > coolingShare) over.add(biggest[0]);
  return over;
}
