import { describe, expect, it, vi } from 'vitest';
import { createSilentLogger } from '../logger.js';
import { WorkspaceSlots, busyRefusal } from './workspace-slots.js';

describe('WorkspaceSlots', () => {
  it('caps each workspace on its own', () => {
    const slots = new WorkspaceSlots(2, createSilentLogger());
    expect(slots.take('a')).toBeTypeOf('function');
    expect(slots.take('a')).toBeTypeOf('function');
    expect(slots.take('a')).toBeUndefined();
    expect(slots.count('a')).toBe(2);
    // Another workspace is not affected by the first one's cap.
    expect(slots.take('b')).toBeTypeOf('function');
    expect(slots.count('b')).toBe(1);
  });

  it('frees a slot on release, once however often it is released', () => {
    const slots = new WorkspaceSlots(2, createSilentLogger());
    const first = slots.take('a')!;
    slots.take('a');
    first();
    // Released on every way a request can end: a second call must not free another connection's slot.
    first();
    expect(slots.count('a')).toBe(1);
    expect(slots.take('a')).toBeTypeOf('function');
    expect(slots.take('a')).toBeUndefined();
  });

  it('forgets a workspace without busy connections', () => {
    const slots = new WorkspaceSlots(1, createSilentLogger());
    slots.take('a')!();
    expect(slots.count('a')).toBe(0);
    expect(slots.take('a')).toBeTypeOf('function');
  });

  it('never refuses without a cap', () => {
    const slots = new WorkspaceSlots(0, createSilentLogger());
    for (let i = 0; i < 1000; i++) expect(slots.take('a')).toBeTypeOf('function');
    expect(slots.count('a')).toBe(1000);
  });

  it('logs refusals at most once a minute, with counts per workspace', () => {
    const logger = createSilentLogger();
    const warn = vi.spyOn(logger, 'warn');
    let now = 100_000;
    const slots = new WorkspaceSlots(1, logger, () => now);
    slots.take('a');
    slots.take('b');
    for (let i = 0; i < 5; i++) slots.take('a');
    expect(warn).toHaveBeenCalledTimes(1);
    slots.take('b');
    now += 60_000;
    slots.take('a');
    expect(warn).toHaveBeenCalledTimes(2);
    expect(warn.mock.calls[1]![0]).toMatchObject({ overPerWorkspace: 6, workspaces: { a: 5, b: 1 } });
  });

  it('answers 503 with retry-after, closing the HTTP connection', () => {
    expect(busyRefusal('a')).toMatchObject({ status: 503, headers: { 'retry-after': '10', connection: 'close' } });
    // The raw answer to an upgrade says connection: close itself (see rejectUpgrade).
    expect(busyRefusal('a', true).headers).toEqual({ 'retry-after': '10' });
  });
});
