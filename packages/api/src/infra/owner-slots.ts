/**
 * Slots shared by the owners of one node's workspaces (the daemon's backups and restores, the manager's starts): at
 * most `total` held at once, at most `perOwner` by any one owner, and a freed slot goes to the owners waiting in turn (the owner served longest ago first; one owner's
 * requests in the order they came). A plain semaphore serves requests in arrival order, so one owner who asks for
 * many backups at once (five workspaces with huge content: red team round 5) held every slot while another owner's
 * backup waited behind all of them.
 *
 * @module
 */

import { AcquireAborted } from './concurrency.js';

/** Releases a slot; calling it again does nothing. */
export type ReleaseSlot = () => void;

export class OwnerSlots {
  private held = 0;
  private readonly heldBy = new Map<string, number>();
  /** Owners with requests waiting, in the order they started waiting (a Map keeps insertion order). */
  private readonly waiting = new Map<string, Array<(release: ReleaseSlot) => void>>();
  /** When each owner holding slots or waiting was last given one (a grant counter), to serve in turn. */
  private readonly lastServed = new Map<string, number>();
  private grants = 0;

  constructor(
    readonly total: number,
    readonly perOwner: number,
  ) {
    if (!Number.isSafeInteger(total) || total < 1) throw new RangeError('total slots must be a positive integer');
    if (!Number.isSafeInteger(perOwner) || perOwner < 1) throw new RangeError('perOwner must be a positive integer');
  }

  /**
   * Resolves with the release of a slot once `owner` may have one. When `signal` aborts first, the request leaves
   * the queue and the promise rejects with {@link AcquireAborted}; no slot is held then.
   */
  acquire(owner: string, signal?: AbortSignal): Promise<ReleaseSlot> {
    if (signal?.aborted) return Promise.reject(new AcquireAborted());
    return new Promise((resolve, reject) => {
      const onAbort = (): void => {
        const queue = this.waiting.get(owner);
        const index = queue?.indexOf(grant) ?? -1;
        if (queue && index >= 0) {
          queue.splice(index, 1);
          if (queue.length === 0) {
            this.waiting.delete(owner);
            if (!this.heldBy.has(owner)) this.lastServed.delete(owner);
          }
        }
        reject(new AcquireAborted());
      };
      const grant = (release: ReleaseSlot): void => {
        signal?.removeEventListener('abort', onAbort);
        resolve(release);
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      const queue = this.waiting.get(owner);
      if (queue) queue.push(grant);
      else this.waiting.set(owner, [grant]);
      this.dispatch();
    });
  }

  /** Runs `task` holding one of `owner`'s slots. */
  async run<T>(owner: string, task: () => Promise<T>): Promise<T> {
    const release = await this.acquire(owner);
    try {
      return await task();
    } finally {
      release();
    }
  }

  /** Slots held now, all owners together and by `owner` (for tests and metrics). */
  inUse(owner?: string): number {
    return owner === undefined ? this.held : (this.heldBy.get(owner) ?? 0);
  }

  private dispatch(): void {
    while (this.held < this.total) {
      const next = this.nextOwner();
      if (next === undefined) return;
      const queue = this.waiting.get(next) as Array<(release: ReleaseSlot) => void>;
      const grant = queue.shift() as (release: ReleaseSlot) => void;
      if (queue.length === 0) this.waiting.delete(next);
      this.lastServed.set(next, ++this.grants);
      this.held += 1;
      this.heldBy.set(next, (this.heldBy.get(next) ?? 0) + 1);
      grant(this.releaser(next));
    }
  }

  /** Of the owners waiting under their own cap, the one served longest ago (never: first), then the earliest. */
  private nextOwner(): string | undefined {
    let next: string | undefined;
    let nextServed = Infinity;
    for (const owner of this.waiting.keys()) {
      if ((this.heldBy.get(owner) ?? 0) >= this.perOwner) continue;
      const served = this.lastServed.get(owner) ?? 0;
      if (served < nextServed) {
        next = owner;
        nextServed = served;
      }
    }
    return next;
  }

  private releaser(owner: string): ReleaseSlot {
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.held -= 1;
      const left = (this.heldBy.get(owner) ?? 1) - 1;
      if (left > 0) this.heldBy.set(owner, left);
      else this.heldBy.delete(owner);
      // Forgotten once it neither holds nor waits: the map stays as small as the owners active now.
      if (left <= 0 && !this.waiting.has(owner)) this.lastServed.delete(owner);
      this.dispatch();
    };
  }
}
