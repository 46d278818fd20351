import { InvalidArgumentError } from '@workbay/api';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import type { FloodGuardConfig, FloodPenalty } from './flood-guard.js';
import { FloodGuard } from './flood-guard.js';

// The penalty's bookkeeping with a fake clock and a fake listener; the real listener is in flood.spec.ts.

const config: FloodGuardConfig = {
  penaltyThreshold: 10,
  penaltyWindowMs: 1000,
  penaltyCooldownMs: 100,
  penaltyMaxCooldownMs: 400,
};

describe('FloodGuard', () => {
  let clock = 0;
  let events: string[];
  let penalties: FloodPenalty[];
  const target = {
    suspend: async () => {
      events.push('suspend');
    },
    resume: async () => {
      events.push('resume');
    },
  };
  const guard = (overrides: Partial<FloodGuardConfig> = {}): FloodGuard =>
    new FloodGuard({ ...config, ...overrides }, { now: () => clock, onPenalty: (p) => penalties.push(p) });
  /** Advances both clocks (the guard's and the cooldown timers) and lets the transitions run. */
  const advance = async (ms: number): Promise<void> => {
    clock += ms;
    await vi.advanceTimersByTimeAsync(ms);
  };
  const offences = (g: FloodGuard, n: number): void => {
    for (let i = 0; i < n; i++) g.offence('calls');
  };

  beforeEach(() => {
    vi.useFakeTimers();
    clock = 1_000_000;
    events = [];
    penalties = [];
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('forgives a burst up to the threshold and penalises the offence beyond it', async () => {
    const g = guard();
    g.attach(target);
    offences(g, 10);
    await advance(0);
    expect([g.suspended, events]).toEqual([false, []]);
    g.offence('connections');
    await advance(0);
    expect(g.suspended).toBe(true);
    expect(events).toEqual(['suspend']);
    expect(penalties).toEqual([{ reason: 'connections', cooldownMs: 100, strikes: 1 }]);
    // Offences while suspended do not count (there is nothing to count them on).
    offences(g, 100);
    await advance(99);
    expect(events).toEqual(['suspend']);
    await advance(1);
    expect([g.suspended, events]).toEqual([false, ['suspend', 'resume']]);
  });

  it('never penalises a steady pace below threshold per window, however long it lasts', async () => {
    const g = guard();
    g.attach(target);
    // 9 offences a second against 10 per second: a client refused on every call of its polling loop.
    for (let second = 0; second < 120; second++) {
      offences(g, 9);
      await advance(1000);
    }
    expect([penalties, events]).toEqual([[], []]);
  });

  it('doubles the cooldown on repeat offences up to the maximum, and forgives a strike per maximum cooldown', async () => {
    const g = guard();
    g.attach(target);
    const cooldowns: number[] = [];
    for (let round = 0; round < 5; round++) {
      offences(g, 11);
      cooldowns.push(penalties.at(-1)!.cooldownMs);
      await advance(penalties.at(-1)!.cooldownMs);
      expect(g.suspended).toBe(false);
    }
    expect(cooldowns).toEqual([100, 200, 400, 400, 400]);
    // Two maximum cooldowns of good behaviour forgive two strikes: the next cooldown is halved twice.
    await advance(800);
    offences(g, 11);
    expect(penalties.at(-1)!.cooldownMs).toBe(100);
  });

  it('lets a workspace back in on probation: a flood that resumes is cut off after a tenth of the threshold', async () => {
    const g = guard({ penaltyThreshold: 100 });
    g.attach(target);
    offences(g, 101);
    await advance(100);
    expect(g.suspended).toBe(false);
    offences(g, 11);
    expect(g.suspended).toBe(true);
    // After a window of good behaviour the bucket is empty again.
    await advance(200);
    await advance(1000);
    offences(g, 100);
    expect(g.suspended).toBe(false);
  });

  it('does nothing when disabled (threshold 0) or detached; a detach cancels a pending restore', async () => {
    const off = guard({ penaltyThreshold: 0 });
    off.attach(target);
    offences(off, 10_000);
    expect(off.suspended).toBe(false);

    const g = guard();
    const detach = g.attach(target);
    offences(g, 11);
    await detach();
    await advance(1000);
    expect(events).toEqual(['suspend']);
    offences(g, 11);
    expect(penalties).toHaveLength(1);
  });

  it('tries the restore again after a cooldown when binding fails', async () => {
    const g = guard();
    let failures = 1;
    g.attach({
      suspend: target.suspend,
      resume: async () => {
        events.push('resume');
        if (failures-- > 0) throw new Error('EISDIR');
      },
    });
    offences(g, 11);
    await advance(100);
    expect([g.suspended, events]).toEqual([true, ['suspend', 'resume']]);
    await advance(100);
    expect([g.suspended, events]).toEqual([false, ['suspend', 'resume', 'resume']]);
  });

  it('counts the bytes beyond the traffic budget, one offence per 256, and nothing without a budget', async () => {
    // 10 KiB a second; the threshold of 10 offences is 2.5 KiB beyond it.
    const g = guard({ penaltyBytesPerSecond: 10 * 1024 });
    g.attach(target);
    for (let second = 0; second < 60; second++) {
      g.traffic(10 * 1024, 1000);
      await advance(1000);
    }
    // Within the budget over a longer sample, and a burst the bucket forgives (9 offences).
    g.traffic(20 * 1024, 2000);
    g.traffic(10 * 1024 + 9 * 256, 1000);
    expect(penalties).toEqual([]);
    g.traffic(10 * 1024 + 2 * 256, 1000);
    expect(penalties).toEqual([{ reason: 'traffic', cooldownMs: 100, strikes: 1 }]);

    const unmetered = guard();
    unmetered.attach(target);
    unmetered.traffic(1024 ** 3, 1000);
    expect(unmetered.suspended).toBe(false);
  });

  it('rejects settings that make no sense', () => {
    expect(() => guard({ penaltyThreshold: -1 })).toThrow(InvalidArgumentError);
    expect(() => guard({ penaltyThreshold: 1.5 })).toThrow(InvalidArgumentError);
    expect(() => guard({ penaltyWindowMs: 0 })).toThrow(InvalidArgumentError);
    expect(() => guard({ penaltyCooldownMs: 500, penaltyMaxCooldownMs: 400 })).toThrow(/penaltyMaxCooldownMs/);
    expect(() => guard({ penaltyBytesPerSecond: -1 })).toThrow(/penaltyBytesPerSecond/);
  });
});
