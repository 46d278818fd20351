/**
 * The node's start slots (content initialization and process launch run for at most `maxConcurrentStarts`
 * workspaces at once), shared fairly: one owner holds at most `maxConcurrentStartsPerOwner` of them. Red team round
 * 12 (G2) filled every slot with starts from slow git remotes and held other owners' starts PENDING.
 */
import { KeyedSemaphore, Semaphore } from '@workbay/api';
import type { Release } from '@workbay/api';

export class StartSlots {
  private readonly node: Semaphore;
  private readonly owners: KeyedSemaphore;

  constructor(limits: { readonly node: number; readonly perOwner: number }) {
    this.node = new Semaphore(limits.node);
    this.owners = new KeyedSemaphore(Math.min(limits.perOwner, limits.node));
  }

  /** Starts holding a slot right now. */
  get inUse(): number {
    return this.node.inUse;
  }

  /**
   * Waits for a slot of `owner`'s share first, then for one of the node's: an owner's starts beyond its share wait
   * outside the node's queue, so they never stand before other owners' starts. Rejects with `AcquireAborted` when
   * `signal` aborts first (nothing held then).
   */
  async acquire(owner: string, signal?: AbortSignal): Promise<Release> {
    const ownerSlot = await this.owners.acquire(owner, signal);
    try {
      const nodeSlot = await this.node.acquire(signal);
      return () => {
        nodeSlot();
        ownerSlot();
      };
    } catch (error) {
      ownerSlot();
      throw error;
    }
  }
}
