import { describe, expect, it } from 'vitest';
import { ShedAdmission, classKey } from './shed-admission.js';

const options = {
  cooldownMs: 30_000,
  ownerCooldownMs: 30_000,
  ownerClients: 3,
  networkAddresses: 8,
  pressureHoldMs: 10_000,
};

describe('ShedAdmission', () => {
  it('counts a strike once per cooldown, not once per shed, and says how long is left', () => {
    // Red team round 19, N9: each shed of one tick was a strike, up to 16 x 30 s at once: an owner out for 8 minutes,
    // told `retry-after: 30`.
    const admission = new ShedAdmission(options);
    const now = 1_000_000;
    for (let i = 0; i < 5; i++) admission.shedStalled(`10.0.0.${i + 1}|owner:bob`, `10.0.0.${i + 1}`, 'bob', now);
    admission.shedStalled('10.0.0.1|owner:bob', '10.0.0.1', 'bob', now + 500);
    expect(admission.refuses('10.0.9.9', 'bob', '', now + 1_000)).toEqual({ reason: 'cooling', retryAfterSeconds: 29 });
    expect(admission.refuses('10.0.0.1', 'bob', '', now + 1_000)).toEqual({ reason: 'cooling', retryAfterSeconds: 29 });
    expect(admission.refuses('10.0.9.9', 'bob', '', now + 30_000)).toBeUndefined();
    // Shed again soon after it was let back in: twice as long.
    admission.shedStalled('10.0.0.1|owner:bob', '10.0.0.1', 'bob', now + 31_000);
    expect(admission.refuses('10.0.0.1', 'bob', '', now + 31_000)).toEqual({
      reason: 'cooling',
      retryAfterSeconds: 60,
    });
  });

  it("refuses a class's requests for the hold after it held too much, and no other class's", () => {
    const admission = new ShedAdmission(options);
    admission.overShare(classKey(undefined, ''), 0);
    expect(admission.refuses('10.0.0.1', undefined, '', 1_000)).toEqual({ reason: 'pressure', retryAfterSeconds: 9 });
    expect(admission.refuses('10.0.0.1', 'bob', '', 1_000)).toBeUndefined();
    expect(admission.refuses('10.0.0.1', undefined, '', 10_000)).toBeUndefined();
    admission.overShare(classKey('trudy', ''), 20_000);
    expect(admission.refuses('10.0.0.1', 'trudy', '', 20_000)?.reason).toBe('pressure');
    expect(admission.refuses('10.0.0.1', undefined, '', 20_000)).toBeUndefined();
    expect({ cooling: admission.refusedCooling, pressure: admission.refusedPressure }).toEqual({
      cooling: 0,
      pressure: 2,
    });
  });

  it('doubles the hold of a class that floods again as soon as it is let back in', () => {
    // Round 19c, N13: a flood refilled the cap every 12 s (the 10 s hold and a second), each refill stalling owners'
    // downloads in flight.
    const admission = new ShedAdmission(options);
    admission.overShare(classKey(undefined, ''), 0);
    // Still holding: extended, not doubled.
    admission.overShare(classKey(undefined, ''), 5_000);
    expect(admission.refuses('10.0.0.1', undefined, '', 5_000)?.retryAfterSeconds).toBe(10);
    // Back at once after it ended: 20 s, then 40 s.
    admission.overShare(classKey(undefined, ''), 16_000);
    expect(admission.refuses('10.0.0.1', undefined, '', 16_000)?.retryAfterSeconds).toBe(20);
    admission.overShare(classKey(undefined, ''), 37_000);
    expect(admission.refuses('10.0.0.1', undefined, '', 37_000)?.retryAfterSeconds).toBe(40);
    // Long after: 10 s again.
    admission.overShare(classKey(undefined, ''), 500_000);
    expect(admission.refuses('10.0.0.1', undefined, '', 500_000)?.retryAfterSeconds).toBe(10);
  });
});
