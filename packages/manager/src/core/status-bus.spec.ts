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

describe('StatusBus.updatesSince', () => {
  it('replays from history then continues live, whenever the subscriber subscribes', () => {
    const bus = new StatusBus(10, 0);
    bus.publish(makeRecord({ id: 'a', statusVersion: 1 }));
    bus.publish(makeRecord({ id: 'b', statusVersion: 2 }));
    const updates$ = bus.updatesSince(1);
    // Taken now, subscribed later: the replay is computed at subscription, so version 3 is not lost.
    bus.publish(makeRecord({ id: 'c', statusVersion: 3 }));
    const seen: string[] = [];
    updates$.subscribe((u) => seen.push(u.kind === 'update' ? String(u.record.statusVersion) : u.kind));
    bus.publish(makeRecord({ id: 'd', statusVersion: 4 }));
    expect(seen).toEqual(['2', '3', '4']);
  });

  it('says resync-required once when the history cannot cover the resume, then goes live', () => {
    const bus = new StatusBus(2, 0);
    for (let v = 1; v <= 4; v += 1) bus.publish(makeRecord({ id: `w${v}`, statusVersion: v }));
    const seen: string[] = [];
    bus.updatesSince(1).subscribe((u) => seen.push(u.kind === 'update' ? String(u.record.statusVersion) : u.kind));
    bus.publish(makeRecord({ id: 'w5', statusVersion: 5 }));
    expect(seen).toEqual(['resync-required', '5']);
  });

  it('startAt raises the floor without replacing the bus: earlier subscribers keep receiving updates', () => {
    const bus = new StatusBus(10);
    const seen: number[] = [];
    bus.status$.subscribe((r) => seen.push(r.statusVersion));
    bus.startAt(100);
    expect(bus.version).toBe(100);
    expect(() => bus.publish(makeRecord({ statusVersion: 50 }))).toThrow(/must increase/);
    bus.publish(makeRecord({ statusVersion: 101 }));
    expect(seen).toEqual([101]);
    expect(() => bus.startAt(500)).toThrow(/after a publish/);
  });
});
