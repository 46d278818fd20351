// Host id allocation, alone and with node-wide claims shared by several daemons (real files, no root needed).
import { mkdir, mkdtemp, readFile, readdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { isWorkbayError } from '@workbay/api';
import { errorOf } from '../test-support/outcomes.js';
import { NodeHostIdClaims } from './host-id-claims.js';
import { HostIdAllocator } from './host-ids.js';

const exhausted = async (ids: HostIdAllocator): Promise<boolean> =>
  isWorkbayError(await errorOf(ids.allocate()), 'resource-exhausted');

describe('host id allocation', () => {
  it('hands out distinct ids round-robin, keeps adopted ones, and says when the range is used up', async () => {
    const ids = new HostIdAllocator({ base: 100, count: 3 });
    await ids.adopt([101]);
    const first = await ids.allocate();
    expect(first).toBe(102);
    expect(await ids.allocate()).toBe(100);
    await ids.release(first);
    // A freed id is reused as late as possible: the next one is the freed id only when nothing else is left.
    expect(await ids.allocate()).toBe(102);
    expect(await exhausted(ids)).toBe(true);
    await ids.release(101);
    expect(await ids.allocate()).toBe(101);
  });

  it('hands every workspace the one id in shared mode, however many there are', async () => {
    const ids = new HostIdAllocator({ base: 33333, count: 1, shared: true });
    await ids.adopt([33333]);
    expect([await ids.allocate(), await ids.allocate(), await ids.allocate()]).toEqual([33333, 33333, 33333]);
  });
});

describe('host ids claimed node-wide by several daemons', () => {
  let base: string;
  let claimsDir: string;
  /** A daemon's working area (it must exist for its claims to be live). */
  let areas: string[];
  const range = { base: 500, count: 3 };

  beforeEach(async () => {
    base = await mkdtemp(join(tmpdir(), 'workbay-host-ids-'));
    claimsDir = join(base, 'claims');
    areas = await Promise.all(
      ['a', 'b', 'c'].map(async (n) => {
        const dir = join(base, n);
        await mkdir(dir);
        return dir;
      }),
    );
  });
  afterEach(async () => {
    await rm(base, { recursive: true, force: true });
  });

  const daemon = (area: string): HostIdAllocator => new HostIdAllocator(range, new NodeHostIdClaims(claimsDir, area));

  it('never gives two daemons the same id, and frees an id for the other daemon when released', async () => {
    const [a, b] = [daemon(areas[0]!), daemon(areas[1]!)];
    expect(await a.allocate()).toBe(500);
    // b's own cursor starts at 500 too: it skips a's claim.
    expect(await b.allocate()).toBe(501);
    expect(await a.allocate()).toBe(502);
    expect(await exhausted(b)).toBe(true);
    await a.release(500);
    expect(await b.allocate()).toBe(500);
    // Each claim names its daemon's working area; the directory and files are root's alone.
    expect((await readFile(join(claimsDir, '500'), 'utf8')).trim()).toBe(areas[1]);
    expect((await stat(claimsDir)).mode & 0o777).toBe(0o700);
    expect((await stat(join(claimsDir, '500'))).mode & 0o777).toBe(0o600);
  });

  it('hands out distinct ids to many daemons racing for them, round after round', async () => {
    // Twenty rounds: a claim read while it was being written once looked stale and was taken over (a CI run).
    for (let round = 0; round < 20; round++) {
      const dir = join(claimsDir, `round-${round}`);
      const daemons = areas.map(
        (area) => new HostIdAllocator({ base: 600, count: 30 }, new NodeHostIdClaims(dir, area)),
      );
      const got = await Promise.all(Array.from({ length: 30 }, (_, i) => daemons[i % 3]!.allocate()));
      expect(new Set(got).size).toBe(30);
      expect((await readdir(dir)).length).toBe(30);
    }
  });

  it("takes over a claim whose working area is gone (its content with it), never a live one's", async () => {
    const gone = join(base, 'removed-area');
    const old = new HostIdAllocator(range, new NodeHostIdClaims(claimsDir, gone));
    await mkdir(gone);
    expect(await old.allocate()).toBe(500);
    await rm(gone, { recursive: true });
    const a = daemon(areas[0]!);
    expect(await a.allocate()).toBe(500);
    expect((await readFile(join(claimsDir, '500'), 'utf8')).trim()).toBe(areas[0]);
    // Nothing left over from the takeover.
    expect((await readdir(claimsDir)).sort()).toEqual(['500']);
  });

  it('on a restart claims its workspaces again, gives back what it claimed for none, and names ids another daemon holds', async () => {
    const a = daemon(areas[0]!);
    expect([await a.allocate(), await a.allocate()]).toEqual([500, 501]);
    // b ran before claims existed and has a workspace at 502; a restarts knowing only 500 (501 was never recorded).
    const b = daemon(areas[1]!);
    expect(await b.adopt([502])).toEqual([]);
    const restarted = daemon(areas[0]!);
    expect(await restarted.adopt([500, 502])).toEqual([502]);
    expect((await readdir(claimsDir)).sort()).toEqual(['500', '502']);
    expect((await readFile(join(claimsDir, '502'), 'utf8')).trim()).toBe(areas[1]);
    // 501 is free again, for either.
    expect(await b.allocate()).toBe(500 + 1);
  });
});
