import { readFile, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { makeRecord } from '../test-support/records.js';
import { tempDirs } from '../test-support/temp-dirs.js';
import { mountSmallDisk, smallDiskSupported } from '../test-support/small-disk.js';
import type { SmallDisk } from '../test-support/small-disk.js';
import { FileWorkspaceStore } from './file-store.js';

const tempDir = tempDirs('wb-store-');

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

  it('an unreadable versions.json is an error, a missing one is a first start', async () => {
    const dir = await tempDir();
    expect((await new FileWorkspaceStore(dir).load()).versionFloor).toBe(0);
    await writeFile(join(dir, 'versions.json'), '{"ceiling": "soon"}');
    await expect(new FileWorkspaceStore(dir).load()).rejects.toThrow(/status_version lease/);
    await writeFile(join(dir, 'versions.json'), '{torn');
    await expect(new FileWorkspaceStore(dir).load()).rejects.toThrow(/status_version lease/);
  });
});

describe.skipIf(!smallDiskSupported)('FileWorkspaceStore on a failing disk (tmpfs, root only)', () => {
  let disk: SmallDisk | undefined;
  afterEach(async () => {
    await disk?.close();
    disk = undefined;
  });

  it('a save on a full disk rejects, leaves no temp file and keeps the previous version', async () => {
    disk = await mountSmallDisk(256);
    const errors: unknown[] = [];
    const store = new FileWorkspaceStore(disk.dir, { onError: (error) => errors.push(error) });
    await store.load();
    await store.save(makeRecord({ id: 'a', statusVersion: 1 }));
    await disk.fill();
    const big = makeRecord({ id: 'a', statusVersion: 2, annotations: { pad: 'x'.repeat(64 * 1024) } });
    await expect(store.save(big)).rejects.toMatchObject({ code: 'ENOSPC' });
    await expect(store.save(makeRecord({ id: 'b', annotations: { pad: 'y'.repeat(64 * 1024) } }))).rejects.toThrow();
    expect(errors.length).toBe(2);
    expect((await readdir(join(disk.dir, 'workspaces'))).sort()).toEqual(['a.json']);
    const onDisk = JSON.parse(await readFile(join(disk.dir, 'workspaces', 'a.json'), 'utf8')) as {
      record: { statusVersion: number };
    };
    expect(onDisk.record.statusVersion).toBe(1);
    // Space again: the same store writes again.
    await disk.free();
    await store.save(big);
    expect((await new FileWorkspaceStore(disk.dir).load()).records[0]!.statusVersion).toBe(2);
  });

  it('saves and removals on a disk that turned read-only reject', async () => {
    disk = await mountSmallDisk(256);
    const store = new FileWorkspaceStore(disk.dir);
    await store.load();
    await store.save(makeRecord({ id: 'a' }));
    await disk.setReadOnly(true);
    await expect(store.save(makeRecord({ id: 'a', statusVersion: 9 }))).rejects.toMatchObject({ code: 'EROFS' });
    await expect(store.remove('a')).rejects.toMatchObject({ code: 'EROFS' });
    expect(() => store.reserveVersion(10_000_000)).toThrow(/status_version lease: EROFS/);
    await store.flush();
    await disk.setReadOnly(false);
    const loaded = await new FileWorkspaceStore(disk.dir).load();
    expect(loaded.records.map((r) => [r.id, r.statusVersion])).toEqual([['a', 1]]);
  });
});
