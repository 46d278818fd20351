import { describe, expect, it } from 'vitest';
import { makeRecord } from '../test-support/records.js';
import { StatusBus } from './status-bus.js';

describe('StatusBus', () => {
  it('publishes in order, keeps a snapshot and refuses versions that do not increase', () => {
    const bus = new StatusBus(10, 5);
    const seen: number[] = [];
    bus.status$.subscribe((r) => seen.push(r.statusVersion));
    bus.publish(makeRecord({ statusVersion: 6 }));
    bus.publish(makeRecord({ statusVersion: 7, phase: 'creating' }));
    expect(seen).toEqual([6, 7]);
    expect(bus.getWorkspace('ws-1')?.phase).toBe('creating');
    expect(() => bus.publish(makeRecord({ statusVersion: 7 }))).toThrow(/must increase/);
  });

  it('serves a resume from history, or says it cannot', () => {
    const bus = new StatusBus(3, 0);
    for (let v = 1; v <= 5; v += 1) bus.publish(makeRecord({ id: `w${v}`, statusVersion: v }));
    // History holds 3, 4, 5.
    expect(bus.since(5)).toEqual({ covered: true, updates: [] });
    const fromTwo = bus.since(2);
    expect(fromTwo.covered && fromTwo.updates.map((r) => r.statusVersion)).toEqual([3, 4, 5]);
    expect(bus.since(1)).toEqual({ covered: false });
    expect(bus.since(9)).toEqual({ covered: false });
  });

  it('after a restart (a floor and no history) an older version needs a resync', () => {
    const bus = new StatusBus(100, 1000);
    expect(bus.since(1000)).toEqual({ covered: true, updates: [] });
    expect(bus.since(10)).toEqual({ covered: false });
  });
});
