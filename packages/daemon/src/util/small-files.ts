import { setImmediate as yieldToLoop } from 'node:timers/promises';

/**
 * Files up to this size are read with synchronous calls: four thread-pool round trips per small file cost
 * more than the read itself, and the pool is busy with uploads during a backup. Callers yield to the event
 * loop regularly (see {@link LoopYielder}) so the daemon stays responsive.
 */
export const smallFileLimit = 256 * 1024;

/** Gives the event loop a turn after every `sliceMs` of synchronous work. */
export class LoopYielder {
  private last = performance.now();
  constructor(private readonly sliceMs = 8) {}

  async maybeYield(): Promise<void> {
    const now = performance.now();
    if (now - this.last < this.sliceMs) return;
    await yieldToLoop();
    this.last = performance.now();
  }
}
