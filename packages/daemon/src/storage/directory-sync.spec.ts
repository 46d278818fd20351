import { describe, expect, it } from 'vitest';
import { DirectorySyncs } from './directory-sync.js';

/** A controllable fsync: each call is recorded and resolves when the test says so. */
function fakeFsync(): { fsync: (dir: string) => Promise<void>; calls: Array<{ dir: string; finish: () => void }> } {
  const calls: Array<{ dir: string; finish: () => void }> = [];
  const fsync = (dir: string): Promise<void> =>
    new Promise<void>((resolve) => {
      calls.push({ dir, finish: resolve });
    });
  return { fsync, calls };
}

describe('DirectorySyncs (group commit of directory fsyncs)', () => {
  it('callers arriving while an fsync runs share one later fsync, which starts after theirs were requested', async () => {
    const { fsync, calls } = fakeFsync();
    const syncs = new DirectorySyncs(fsync);
    const done: number[] = [];
    const first = syncs.sync('/d').then(() => done.push(0));
    const later = [1, 2, 3, 4].map((i) => syncs.sync('/d').then(() => done.push(i)));
    expect(calls).toHaveLength(1);
    calls[0]?.finish();
    await first;
    await Promise.resolve();
    // The four later callers renamed after the first fsync started: they are not covered by it.
    expect(done).toEqual([0]);
    expect(calls).toHaveLength(2);
    calls[1]?.finish();
    await Promise.all(later);
    expect(done.sort()).toEqual([0, 1, 2, 3, 4]);
    expect(calls).toHaveLength(2);
    // Idle again: the next caller starts its own fsync at once.
    const again = syncs.sync('/d');
    expect(calls).toHaveLength(3);
    calls[2]?.finish();
    await again;
  });

  it('keeps directories apart, and a failed fsync fails its callers without blocking the next', async () => {
    const calls: Array<{ dir: string; settle: (error?: Error) => void }> = [];
    const syncs = new DirectorySyncs(
      (dir) => new Promise<void>((resolve, reject) => calls.push({ dir, settle: (e) => (e ? reject(e) : resolve()) })),
    );
    const a = syncs.sync('/a');
    const b = syncs.sync('/b');
    expect(calls.map((c) => c.dir)).toEqual(['/a', '/b']);
    const a2 = syncs.sync('/a');
    calls[0]?.settle(new Error('EIO'));
    await expect(a).rejects.toThrow('EIO');
    await Promise.resolve();
    await Promise.resolve();
    expect(calls.map((c) => c.dir)).toEqual(['/a', '/b', '/a']);
    calls[2]?.settle();
    calls[1]?.settle();
    await Promise.all([a2, b]);
  });
});
