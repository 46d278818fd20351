import { mkdtemp, readdir, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { makeRecord } from '../test-support/records.js';
import { FileWorkspaceStore } from './file-store.js';

async function tempDir(): Promise<string> {
  return mkdtemp(join(tmpdir(), 'wb-store-'));
}

describe('FileWorkspaceStore', () => {
  it('persists records atomically and loads them back', async () => {
    const dir = await tempDir();
    const store = new FileWorkspaceStore(dir);
    await store.load();
    await Promise.all([
      store.save(makeRecord({ id: 'a', statusVersion: 3 })),
      store.save(makeRecord({ id: 'b', statusVersion: 4, createdAt: 2_000_000 })),
    ]);
    const loaded = await new FileWorkspaceStore(dir).load();
    expect(loaded.records.map((r) => r.id)).toEqual(['a', 'b']);
    expect(loaded.versionFloor).toBeGreaterThanOrEqual(4);
    expect((await readdir(join(dir, 'workspaces'))).sort()).toEqual(['a.json', 'b.json']);
  });

  it('coalesces saves of one record: the latest wins and every caller is answered', async () => {
    const dir = await tempDir();
    const store = new FileWorkspaceStore(dir);
    await store.load();
    const saves = [];
    for (let v = 1; v <= 50; v += 1) saves.push(store.save(makeRecord({ id: 'a', statusVersion: v })));
    await Promise.all(saves);
    const loaded = await new FileWorkspaceStore(dir).load();
    expect(loaded.records).toHaveLength(1);
    expect(loaded.records[0]!.statusVersion).toBe(50);
  });

  it('removes records', async () => {
    const dir = await tempDir();
    const store = new FileWorkspaceStore(dir);
    await store.load();
    await store.save(makeRecord({ id: 'a' }));
    await store.remove('a');
    expect((await new FileWorkspaceStore(dir).load()).records).toEqual([]);
  });

  it('leases status versions so that a restart continues above every version handed out', async () => {
    const dir = await tempDir();
    const first = new FileWorkspaceStore(dir);
    const { versionFloor } = await first.load();
    expect(versionFloor).toBe(0);
    // Versions handed out but never saved in a record (e.g. a crash right after publishing).
    first.reserveVersion(250_000);
    const second = await new FileWorkspaceStore(dir).load();
    expect(second.versionFloor).toBeGreaterThanOrEqual(250_000);
  });

  it('moves unreadable files aside and ignores leftover temp files', async () => {
    const dir = await tempDir();
    const store = new FileWorkspaceStore(dir);
    await store.load();
    await store.save(makeRecord({ id: 'good' }));
    await writeFile(join(dir, 'workspaces', 'bad.json'), '{not json');
    await writeFile(join(dir, 'workspaces', 'good.json.tmp-1-1'), 'partial');
    const loaded = await new FileWorkspaceStore(dir).load();
    expect(loaded.records.map((r) => r.id)).toEqual(['good']);
    expect(loaded.corrupt).toEqual(['bad.json']);
    expect((await readdir(join(dir, 'workspaces'))).sort()).toEqual(['bad.json.corrupt', 'good.json']);
  });

  it('rejects ids that are not safe file names', async () => {
    const store = new FileWorkspaceStore(await tempDir());
    await store.load();
    expect(() => store.save(makeRecord({ id: '../escape' }))).toThrow(/invalid workspace id/);
  });
});
