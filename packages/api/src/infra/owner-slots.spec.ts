import { describe, expect, it } from 'vitest';
import { AcquireAborted } from './concurrency.js';
import { OwnerSlots } from './owner-slots.js';
import type { ReleaseSlot } from './owner-slots.js';

/** Acquires and records the order in which grants arrive. */
function recorder(slots: OwnerSlots) {
  const granted: string[] = [];
  const releases = new Map<string, ReleaseSlot>();
  const ask = (owner: string, label: string): Promise<void> =>
    slots.acquire(owner).then((release) => {
      granted.push(label);
      releases.set(label, release);
    });
  const settle = () => new Promise((r) => setImmediate(r));
  return { granted, releases, ask, settle };
}

describe('OwnerSlots', () => {
  it('never gives one owner more than its share, and gives the rest to others at once', async () => {
    const slots = new OwnerSlots(5, 4);
    const { granted, ask, settle } = recorder(slots);
    // mallory asks for five backups first, then alice for one.
    for (let i = 1; i <= 5; i++) void ask('mallory', `m${i}`);
    void ask('alice', 'a1');
    await settle();
    expect(granted).toEqual(['m1', 'm2', 'm3', 'm4', 'a1']);
    expect(slots.inUse('mallory')).toBe(4);
    expect(slots.inUse()).toBe(5);
  });

  it('hands freed slots to the waiting owners in turn, the one served longest ago first', async () => {
    const slots = new OwnerSlots(2, 2);
    const { granted, releases, ask, settle } = recorder(slots);
    void ask('mallory', 'm1');
    void ask('mallory', 'm2');
    void ask('mallory', 'm3');
    void ask('mallory', 'm4');
    void ask('alice', 'a1');
    void ask('bob', 'b1');
    void ask('alice', 'a2');
    await settle();
    expect(granted).toEqual(['m1', 'm2']);
    releases.get('m1')!();
    await settle();
    // alice waited, mallory was just served: alice first, then bob, then mallory again.
    releases.get('m2')!();
    await settle();
    releases.get('a1')!();
    await settle();
    releases.get('b1')!();
    await settle();
    expect(granted).toEqual(['m1', 'm2', 'a1', 'b1', 'm3', 'a2']);
  });

  it('a release twice frees one slot; run releases when the task fails', async () => {
    const slots = new OwnerSlots(1, 1);
    const release = await slots.acquire('alice');
    release();
    release();
    expect(slots.inUse()).toBe(0);
    await expect(slots.run('bob', () => Promise.reject(new Error('boom')))).rejects.toThrow('boom');
    expect(slots.inUse()).toBe(0);
    expect(await slots.run('bob', () => Promise.resolve(7))).toBe(7);
  });

  it('an aborted wait leaves the queue holding nothing; the next owner gets the freed slot', async () => {
    const slots = new OwnerSlots(1, 1);
    const held = await slots.acquire('alice');
    const controller = new AbortController();
    const mallory = slots.acquire('mallory', controller.signal);
    const bob = slots.acquire('bob');
    controller.abort();
    await expect(mallory).rejects.toBeInstanceOf(AcquireAborted);
    await expect(slots.acquire('carol', AbortSignal.abort())).rejects.toBeInstanceOf(AcquireAborted);
    held();
    const release = await bob;
    expect(slots.inUse('bob')).toBe(1);
    expect(slots.inUse('mallory')).toBe(0);
    release();
    expect(slots.inUse()).toBe(0);
  });

  it('refuses sizes that would never grant a slot', () => {
    expect(() => new OwnerSlots(0, 1)).toThrow(RangeError);
    expect(() => new OwnerSlots(2, 0)).toThrow(RangeError);
  });
});
