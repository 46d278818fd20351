/**
 * The one counting semaphore of Workbay (the daemon's write slots and every plain bound); slots shared fairly
 * between owners are `OwnerSlots` (owner-slots.ts).
 *
 * @module
 */

/** Gives a held slot back; calling it more than once has no further effect. */
export type Release = () => void;

/** Thrown by {@link Semaphore.acquire} when its signal aborts before a slot was free. */
export class AcquireAborted extends Error {
  constructor() {
    super('semaphore acquire aborted');
    this.name = 'AcquireAborted';
  }
}

interface Waiter {
  readonly grant: () => void;
}

/** A counting semaphore: waiters are served in arrival order and may give up through an AbortSignal. */
export class Semaphore {
  private available: number;
  private readonly waiters: Waiter[] = [];

  constructor(readonly capacity: number) {
    if (!Number.isInteger(capacity) || capacity < 1) throw new RangeError('semaphore capacity must be >= 1');
    this.available = capacity;
  }

  /** How many slots are held right now. */
  get inUse(): number {
    return this.capacity - this.available;
  }

  /** How many callers wait for a slot. */
  get waiting(): number {
    return this.waiters.length;
  }

  /**
   * Waits for a free slot. When `signal` aborts first, the caller leaves the queue and the promise rejects with
   * {@link AcquireAborted}; no slot is held then.
   */
  acquire(signal?: AbortSignal): Promise<Release> {
    if (signal?.aborted) return Promise.reject(new AcquireAborted());
    if (this.available > 0) {
      this.available -= 1;
      return Promise.resolve(this.releaser());
    }
    return new Promise((resolve, reject) => {
      const onAbort = (): void => {
        const index = this.waiters.indexOf(waiter);
        if (index >= 0) this.waiters.splice(index, 1);
        reject(new AcquireAborted());
      };
      const waiter: Waiter = {
        grant: () => {
          signal?.removeEventListener('abort', onAbort);
          resolve(this.releaser());
        },
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.waiters.push(waiter);
    });
  }

  /** Runs `fn` while holding a slot. */
  async run<T>(fn: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    const release = await this.acquire(signal);
    try {
      return await fn();
    } finally {
      release();
    }
  }

  private releaser(): Release {
    let released = false;
    return () => {
      if (released) return;
      released = true;
      // A slot passes straight to the next waiter, so a newcomer cannot overtake the queue.
      const next = this.waiters.shift();
      if (next) next.grant();
      else this.available += 1;
    };
  }
}
