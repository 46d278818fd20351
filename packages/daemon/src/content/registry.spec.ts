/**
 * A session state written ahead (`stagePersist`): nothing of it is the session's state until `apply`, a discarded one
 * leaves nothing behind, and a state that changed meanwhile is not overwritten by the staged snapshot.
 */
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { DaemonMetrics } from '../health/metrics.js';
import { SessionStore } from '../session/session-store.js';
import type { SessionState } from '../session/session-store.js';
import { WorkspaceRegistry } from './registry.js';
import type { Workspace } from './registry.js';

describe('WorkspaceRegistry.stagePersist', () => {
  let dir: string;
  let store: SessionStore;
  let registry: WorkspaceRegistry;
  const metrics = { workspaces: { reset: () => undefined, inc: () => undefined } } as unknown as Pick<
    DaemonMetrics,
    'workspaces'
  >;

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'workbay-registry-'));
    store = new SessionStore(dir);
    registry = new WorkspaceRegistry(store, metrics);
  });
  afterEach(() => rm(dir, { recursive: true, force: true }));

  async function registered(id: string): Promise<Workspace> {
    const now = new Date().toISOString();
    const state: SessionState = {
      version: 1,
      instanceId: id,
      owner: 'o',
      workspaceId: id,
      contentLocation: join(dir, id),
      phase: 'initializing',
      createdAt: now,
      updatedAt: now,
      remoteStorageDisabled: false,
      initializer: { kind: 'empty' },
      storageQuotaBytes: 0,
      gitLocations: [],
    };
    const ws: Workspace = { state, pending: new Set() };
    registry.add(ws);
    await store.save(state);
    return ws;
  }

  it('is not the session state before apply, is after it, and publishes it', async () => {
    const ws = await registered('w1');
    const seen: string[] = [];
    const subscription = registry.workspaces$.subscribe((all) => seen.push(all.map((w) => w.phase).join()));
    const staged = await registry.stagePersist(ws, { phase: 'ready' });
    // Synced under a temporary name only: the file, the memory and the published phase still say initializing.
    expect((await store.load('w1'))?.phase).toBe('initializing');
    expect(ws.state.phase).toBe('initializing');
    expect((await readdir(dir)).filter((n) => n.endsWith('.tmp'))).toHaveLength(1);
    await staged.apply();
    expect((await store.load('w1'))?.phase).toBe('ready');
    expect(ws.state.phase).toBe('ready');
    expect(seen.at(-1)).toBe('ready');
    expect((await readdir(dir)).filter((n) => n.endsWith('.tmp'))).toEqual([]);
    subscription.unsubscribe();
  });

  it('leaves nothing when discarded', async () => {
    const ws = await registered('w2');
    await (await registry.stagePersist(ws, { phase: 'ready' })).discard();
    expect((await store.load('w2'))?.phase).toBe('initializing');
    expect((await readdir(dir)).sort()).toEqual(['w2.workspace.json']);
  });

  it('keeps a change made meanwhile: the patch goes onto the newer state', async () => {
    const ws = await registered('w3');
    const staged = await registry.stagePersist(ws, { phase: 'ready' });
    await registry.persist(ws, { dormant: true });
    await staged.apply();
    const onDisk = await store.load('w3');
    expect(onDisk).toMatchObject({ phase: 'ready', dormant: true });
    expect(ws.state).toEqual(onDisk);
    expect((await readdir(dir)).filter((n) => n.endsWith('.tmp'))).toEqual([]);
  });
});
