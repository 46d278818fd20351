import { describe, expect, it, vi } from 'vitest';
import { createSilentLogger } from '../logger.js';
import { WorkspaceSlots, busyRefusal } from './workspace-slots.js';

/** Workspace `id` of `owner` (mallory's by default). */
const ws = (id: string, owner = 'mallory'): { id: string; owner: string } => ({ id, owner });
const release = (taken: ReturnType<WorkspaceSlots['take']>): (() => void) => {
  if (typeof taken !== 'function') throw new Error(`refused: over the ${taken.over} cap`);
  return taken;
};

describe('WorkspaceSlots', () => {
  it('caps each workspace on its own', () => {
    const slots = new WorkspaceSlots({ maxPerWorkspace: 2, maxPerOwner: 0 }, createSilentLogger());
    expect(slots.take(ws('a'))).toBeTypeOf('function');
    expect(slots.take(ws('a'))).toBeTypeOf('function');
    expect(slots.take(ws('a'))).toEqual({ over: 'workspace' });
    expect(slots.count('a')).toBe(2);
    // Another workspace is not affected by the first one's cap.
    expect(slots.take(ws('b'))).toBeTypeOf('function');
    expect(slots.count('b')).toBe(1);
  });

  it('frees a slot on release, once however often it is released', () => {
    const slots = new WorkspaceSlots({ maxPerWorkspace: 2, maxPerOwner: 0 }, createSilentLogger());
    const first = release(slots.take(ws('a')));
    slots.take(ws('a'));
    first();
    // Released on every way a request can end: a second call must not free another connection's slot.
    first();
    expect(slots.count('a')).toBe(1);
    expect(slots.take(ws('a'))).toBeTypeOf('function');
    expect(slots.take(ws('a'))).toEqual({ over: 'workspace' });
  });

  it('forgets a workspace without busy connections', () => {
    const slots = new WorkspaceSlots({ maxPerWorkspace: 1, maxPerOwner: 0 }, createSilentLogger());
    release(slots.take(ws('a')))();
    expect(slots.count('a')).toBe(0);
    expect(slots.take(ws('a'))).toBeTypeOf('function');
  });

  it('never refuses without a cap', () => {
    const slots = new WorkspaceSlots({ maxPerWorkspace: 0, maxPerOwner: 0 }, createSilentLogger());
    for (let i = 0; i < 1000; i++) expect(slots.take(ws('a'))).toBeTypeOf('function');
    expect(slots.count('a')).toBe(1000);
  });

  it('logs refusals at most once a minute, with counts per workspace', () => {
    const logger = createSilentLogger();
    const warn = vi.spyOn(logger, 'warn');
    let now = 100_000;
    const slots = new WorkspaceSlots({ maxPerWorkspace: 1, maxPerOwner: 0 }, logger, () => now);
    slots.take(ws('a'));
    slots.take(ws('b'));
    for (let i = 0; i < 5; i++) slots.take(ws('a'));
    expect(warn).toHaveBeenCalledTimes(1);
    slots.take(ws('b'));
    now += 60_000;
    slots.take(ws('a'));
    expect(warn).toHaveBeenCalledTimes(2);
    expect(warn.mock.calls[1]![0]).toMatchObject({ overPerWorkspace: 6, workspaces: { a: 5, b: 1 } });
  });

  it("caps an owner's workspaces together, and only that owner", () => {
    const slots = new WorkspaceSlots({ maxPerWorkspace: 2, maxPerOwner: 3 }, createSilentLogger());
    const held = [slots.take(ws('a')), slots.take(ws('a')), slots.take(ws('b'))].map(release);
    // Each workspace is under its own cap; together they are at the owner's.
    expect(slots.take(ws('b'))).toEqual({ over: 'owner' });
    expect(slots.take(ws('c'))).toEqual({ over: 'owner' });
    expect(slots.ownerCount('mallory')).toBe(3);
    // The workspace cap is named first when both are reached.
    expect(slots.take(ws('a'))).toEqual({ over: 'workspace' });
    // Another owner is served, its workspaces counted apart.
    release(slots.take(ws('d', 'alice')));
    expect(slots.ownerCount('alice')).toBe(1);
    // A release frees a slot for the owner (nothing was counted for the refusals).
    held[2]!();
    release(slots.take(ws('c')));
    expect(slots.count('b')).toBe(0);
    expect(slots.ownerCount('mallory')).toBe(3);
  });

  it('logs owner refusals beside workspace ones', () => {
    const logger = createSilentLogger();
    const warn = vi.spyOn(logger, 'warn');
    const slots = new WorkspaceSlots({ maxPerWorkspace: 5, maxPerOwner: 1 }, logger, () => 100_000);
    slots.take(ws('a'));
    slots.take(ws('b'));
    expect(warn.mock.calls[0]![0]).toMatchObject({
      overPerOwner: 1,
      owners: { mallory: 1 },
      maxConnectionsPerOwner: 1,
    });
  });

  it('answers 503 with retry-after, closing the HTTP connection', () => {
    expect(busyRefusal('a')).toMatchObject({ status: 503, headers: { 'retry-after': '10', connection: 'close' } });
    // The raw answer to an upgrade says connection: close itself (see rejectUpgrade).
    expect(busyRefusal('a', true).headers).toEqual({ 'retry-after': '10' });
    expect(busyRefusal('a', false, 'owner').message).toMatch(/^the owner of workspace a has too many/);
  });
});
