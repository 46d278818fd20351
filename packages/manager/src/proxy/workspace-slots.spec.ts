import { describe, expect, it, vi } from 'vitest';
import { createSilentLogger } from '../logger.js';
import { WorkspaceSlots, busyRefusal } from './workspace-slots.js';

/** Workspace `id` of `owner` (mallory's by default). */
const ws = (id: string, owner = 'mallory'): { id: string; owner: string } => ({ id, owner });
/** Caps for anonymous traffic; the authenticated budget uncapped (its own tests set both). */
const anonymousOnly = (
  maxPerWorkspace: number,
  maxPerOwner: number,
): ConstructorParameters<typeof WorkspaceSlots>[0] => ({
  anonymous: { maxPerWorkspace, maxPerOwner },
  authenticated: { maxPerWorkspace: 0, maxPerOwner: 0 },
});
const release = (taken: ReturnType<WorkspaceSlots['take']>): (() => void) => {
  if (typeof taken !== 'function') throw new Error(`refused: over the ${taken.over} cap`);
  return taken;
};

describe('WorkspaceSlots', () => {
  it('caps each workspace on its own', () => {
    const slots = new WorkspaceSlots(anonymousOnly(2, 0), createSilentLogger());
    expect(slots.take(ws('a'), 'anonymous')).toBeTypeOf('function');
    expect(slots.take(ws('a'), 'anonymous')).toBeTypeOf('function');
    expect(slots.take(ws('a'), 'anonymous')).toEqual({ over: 'workspace' });
    expect(slots.count('a')).toBe(2);
    // Another workspace is not affected by the first one's cap.
    expect(slots.take(ws('b'), 'anonymous')).toBeTypeOf('function');
    expect(slots.count('b')).toBe(1);
  });

  it('frees a slot on release, once however often it is released', () => {
    const slots = new WorkspaceSlots(anonymousOnly(2, 0), createSilentLogger());
    const first = release(slots.take(ws('a'), 'anonymous'));
    slots.take(ws('a'), 'anonymous');
    first();
    // Released on every way a request can end: a second call must not free another connection's slot.
    first();
    expect(slots.count('a')).toBe(1);
    expect(slots.take(ws('a'), 'anonymous')).toBeTypeOf('function');
    expect(slots.take(ws('a'), 'anonymous')).toEqual({ over: 'workspace' });
  });

  it('forgets a workspace without busy connections', () => {
    const slots = new WorkspaceSlots(anonymousOnly(1, 0), createSilentLogger());
    release(slots.take(ws('a'), 'anonymous'))();
    expect(slots.count('a')).toBe(0);
    expect(slots.take(ws('a'), 'anonymous')).toBeTypeOf('function');
  });

  it('never refuses without a cap', () => {
    const slots = new WorkspaceSlots(anonymousOnly(0, 0), createSilentLogger());
    for (let i = 0; i < 1000; i++) expect(slots.take(ws('a'), 'anonymous')).toBeTypeOf('function');
    expect(slots.count('a')).toBe(1000);
  });

  it('logs refusals at most once a minute, with counts per workspace', () => {
    const logger = createSilentLogger();
    const warn = vi.spyOn(logger, 'warn');
    let now = 100_000;
    const slots = new WorkspaceSlots(anonymousOnly(1, 0), logger, () => now);
    slots.take(ws('a'), 'anonymous');
    slots.take(ws('b'), 'anonymous');
    for (let i = 0; i < 5; i++) slots.take(ws('a'), 'anonymous');
    expect(warn).toHaveBeenCalledTimes(1);
    slots.take(ws('b'), 'anonymous');
    now += 60_000;
    slots.take(ws('a'), 'anonymous');
    expect(warn).toHaveBeenCalledTimes(2);
    expect(warn.mock.calls[1]![0]).toMatchObject({ anonymous: { overPerWorkspace: 6, workspaces: { a: 5, b: 1 } } });
  });

  it("caps an owner's workspaces together, and only that owner", () => {
    const slots = new WorkspaceSlots(anonymousOnly(2, 3), createSilentLogger());
    const held = [
      slots.take(ws('a'), 'anonymous'),
      slots.take(ws('a'), 'anonymous'),
      slots.take(ws('b'), 'anonymous'),
    ].map(release);
    // Each workspace is under its own cap; together they are at the owner's.
    expect(slots.take(ws('b'), 'anonymous')).toEqual({ over: 'owner' });
    expect(slots.take(ws('c'), 'anonymous')).toEqual({ over: 'owner' });
    expect(slots.ownerCount('mallory')).toBe(3);
    // The workspace cap is named first when both are reached.
    expect(slots.take(ws('a'), 'anonymous')).toEqual({ over: 'workspace' });
    // Another owner is served, its workspaces counted apart.
    release(slots.take(ws('d', 'alice'), 'anonymous'));
    expect(slots.ownerCount('alice')).toBe(1);
    // A release frees a slot for the owner (nothing was counted for the refusals).
    held[2]!();
    release(slots.take(ws('c'), 'anonymous'));
    expect(slots.count('b')).toBe(0);
    expect(slots.ownerCount('mallory')).toBe(3);
  });

  it('logs owner refusals beside workspace ones', () => {
    const logger = createSilentLogger();
    const warn = vi.spyOn(logger, 'warn');
    const slots = new WorkspaceSlots(anonymousOnly(5, 1), logger, () => 100_000);
    slots.take(ws('a'), 'anonymous');
    slots.take(ws('b'), 'anonymous');
    expect(warn.mock.calls[0]![0]).toMatchObject({
      anonymous: { overPerOwner: 1, owners: { mallory: 1 }, maxPerOwner: 1 },
      authenticated: { overPerOwner: 0, overPerWorkspace: 0 },
    });
  });

  it('answers 503 with retry-after, closing the HTTP connection', () => {
    expect(busyRefusal('a')).toMatchObject({ status: 503, headers: { 'retry-after': '10', connection: 'close' } });
    // The raw answer to an upgrade says connection: close itself (see rejectUpgrade).
    expect(busyRefusal('a', true).headers).toEqual({ 'retry-after': '10' });
    expect(busyRefusal('a', false, 'owner').message).toMatch(/^the owner of workspace a has too many/);
  });

  it('counts connections with the owner token apart: anonymous ones at their caps do not refuse them', () => {
    const slots = new WorkspaceSlots(
      { anonymous: { maxPerWorkspace: 2, maxPerOwner: 3 }, authenticated: { maxPerWorkspace: 1, maxPerOwner: 2 } },
      createSilentLogger(),
    );
    // Anonymous clients fill workspace a and, with b, the owner's anonymous budget.
    [slots.take(ws('a'), 'anonymous'), slots.take(ws('a'), 'anonymous'), slots.take(ws('b'), 'anonymous')].map(release);
    expect(slots.take(ws('a'), 'anonymous')).toEqual({ over: 'workspace' });
    expect(slots.take(ws('c'), 'anonymous')).toEqual({ over: 'owner' });
    // The owner is still served on a and on c, from her own budget.
    const own = release(slots.take(ws('a'), 'authenticated'));
    release(slots.take(ws('c'), 'authenticated'));
    expect(slots.count('a', 'authenticated')).toBe(1);
    expect(slots.count('a', 'anonymous')).toBe(2);
    expect(slots.count('a')).toBe(3);
    expect(slots.ownerCount('mallory', 'authenticated')).toBe(2);
    expect(slots.ownerCount('mallory')).toBe(5);
    // Her budget has caps of its own, per workspace and per owner.
    expect(slots.take(ws('a'), 'authenticated')).toEqual({ over: 'workspace' });
    expect(slots.take(ws('d'), 'authenticated')).toEqual({ over: 'owner' });
    // Releasing an authenticated slot frees that budget only.
    own();
    own();
    expect(slots.ownerCount('mallory', 'authenticated')).toBe(1);
    expect(slots.take(ws('a'), 'anonymous')).toEqual({ over: 'workspace' });
    expect(slots.take(ws('d'), 'authenticated')).toBeTypeOf('function');
  });

  it('caps anonymous connections of all owners together, and never those with the owner token', () => {
    const slots = new WorkspaceSlots(
      {
        anonymous: { maxPerWorkspace: 2, maxPerOwner: 2, maxTotal: 3 },
        authenticated: { maxPerWorkspace: 0, maxPerOwner: 0 },
      },
      createSilentLogger(),
    );
    // Three owners' public ports, each under its own caps: the third connection fills the total.
    const held = [slots.take(ws('a', 'mallory'), 'anonymous'), slots.take(ws('b', 'eve'), 'anonymous')].map(release);
    release(slots.take(ws('c', 'trudy'), 'anonymous'));
    expect(slots.take(ws('d', 'alice'), 'anonymous')).toEqual({ over: 'server' });
    // Alice with her token is served whatever anonymous clients hold.
    release(slots.take(ws('d', 'alice'), 'authenticated'));
    held[0]!();
    release(slots.take(ws('d', 'alice'), 'anonymous'));
    expect(busyRefusal('d', false, 'server').message).toMatch(/^the proxy has too many open connections/);
  });

  it('says in its 503 which budget is full', () => {
    expect(busyRefusal('a', false, 'workspace', 'authenticated').message).toMatch(
      /^workspace a has too many open connections with the owner token/,
    );
    expect(busyRefusal('a', true, 'owner', 'anonymous').message).toMatch(
      /^the owner of workspace a has too many open connections through/,
    );
  });
});
