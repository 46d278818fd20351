/**
 * Whether content can be archived at all, checked with the archives' own walk: a tree nested past
 * `maxTreeDepth`, a path past PATH_MAX, or a name that is not UTF-8 fails every backup and snapshot of the
 * workspace, and with them its stop (red team round 9, K2 and U1). Content a repository brings is checked once it is
 * checked out, so that such a workspace fails to start, saying why, instead of running work that can never be saved.
 */
import { LoopYielder } from '../util/small-files.js';
import { walkTreeSync } from './tree.js';

/**
 * Walks `root` as a backup would, throwing the walk's FAILED_PRECONDITION for the first entry no archive can hold.
 * The event loop gets a turn every few milliseconds: a repository chooses its file count.
 */
export async function assertArchivable(root: string, signal?: AbortSignal): Promise<void> {
  const yielder = new LoopYielder(4);
  let sinceYield = 0;
  for (const item of walkTreeSync(root)) {
    void item;
    if (++sinceYield === 64) {
      sinceYield = 0;
      signal?.throwIfAborted();
      await yielder.maybeYield();
    }
  }
}
