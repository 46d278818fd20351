import { execFileSync } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { isWorkbayError } from '../errors.js';
import { makeSparseFile } from '../test-support/sparse.js';
import { capExtents, extentsProblem, isSparseCandidate, placeData, SparseProbeError } from './sparse.js';
import type { ProberOptions } from './sparse-prober.js';
import { SparseProber } from './sparse-prober.js';

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
const dir = mkdtempSync(join(tmpdir(), 'sparse-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A file of `size` bytes with random data at `data` (offset, length) runs, holes elsewhere. */
function sparseFile(name: string, size: number, data: ReadonlyArray<readonly [number, number]>): string {
  const path = join(dir, name);
  makeSparseFile(path, size, data);
  return path;
}

/** An executable script standing in for Perl (it answers the first request: `$id` is its id). */
function fake(name: string, body: string): string {
  const script = join(dir, name);
  writeFileSync(script, `#!/bin/sh\n${body}\n`, { mode: 0o755 });
  return script;
}

/** One probe through a prober of its own. */
async function extentsOf(path: string, options: ProberOptions = {}): Promise<number[] | undefined> {
  const prober = new SparseProber(options);
  const fd = openSync(path, 'r');
  try {
    return await prober.probe(fd, statSync(path).size, path);
  } finally {
    await prober.close();
    closeSync(fd);
  }
}

describe('probing sparse files', () => {
  it('finds the data of an 8 GiB sparse file through the open descriptor', async () => {
    const path = sparseFile('big', 8 * GiB, [
      [0, 64 * 1024],
      [3 * GiB, 2 * MiB],
      [8 * GiB - 4096, 4096],
    ]);
    expect(isSparseCandidate(statSync(path))).toBe(true);
    expect(await extentsOf(path)).toEqual([0, 64 * 1024, 3 * GiB, 2 * MiB, 8 * GiB - 4096, 4096]);
  });

  it('finds a hole punched into a dense file, and no data in a file that is all hole', async () => {
    const path = sparseFile('punched', 16 * MiB, [[0, 16 * MiB]]);
    execFileSync('fallocate', ['--punch-hole', '--offset', String(4 * MiB), '--length', String(8 * MiB), path]);
    expect(await extentsOf(path)).toEqual([0, 4 * MiB, 12 * MiB, 4 * MiB]);
    expect(await extentsOf(sparseFile('empty', GiB, []))).toEqual([]);
  });

  it('does not take a dense file for a sparse one', () => {
    expect(isSparseCandidate(statSync(sparseFile('dense', 8 * MiB, [[0, 8 * MiB]])))).toBe(false);
  });

  it('merges the smallest holes of a file with more extents than the cap, while walking them', async () => {
    // 100 runs (Perl merges at 4 x 8 extents kept), with a large hole in the middle that must stay a hole.
    const runs: Array<[number, number]> = Array.from({ length: 100 }, (_, i) => [
      i * MiB + (i >= 50 ? GiB : 0) + (i % 3) * 8192,
      4096,
    ]);
    const path = sparseFile('many', 2 * GiB, runs);
    const extents = (await extentsOf(path, { maxExtents: 8 })) as number[];
    expect(extents.length / 2).toBeLessThanOrEqual(8);
    expect(extents.length / 2).toBeGreaterThanOrEqual(2);
    const placed = placeData(extents, 0, Infinity);
    expect(placed.some(([p, , l]) => p <= 512 * MiB && 512 * MiB < p + l)).toBe(false);
    expect(extentsProblem(extents, 2 * GiB)).toBeUndefined();
    // Every byte of data is still inside an extent.
    for (const [offset] of runs)
      expect(placeData(extents, 0, Infinity).some(([p, , l]) => p <= offset && offset < p + l)).toBe(true);
  });

  it('answers undefined (read the file densely) only where no probe can be made: no Perl, no SEEK_DATA', async () => {
    const path = sparseFile('fallback', 64 * MiB, [[0, 4096]]);
    expect(await extentsOf(path, { perl: join(dir, 'no-such-perl') })).toBeUndefined();
    expect(await extentsOf(path, { perl: fake('nodata', 'read id rest; echo "unsupported $id"') })).toBeUndefined();
  });

  it('fails (FAILED_PRECONDITION, nothing read) when a probe fails, hangs, floods its output or lies', async () => {
    // Reading the holes instead is what a workspace that makes the probe fail wants (red team round 6).
    const path = sparseFile('failing', 64 * MiB, [[0, 4096]]);
    const failure = (options: object): Promise<unknown> =>
      extentsOf(path, options).then(
        () => undefined,
        (error: unknown) => error,
      );
    for (const [options, reason] of [
      [{ perl: 'false' }, /perl exited with 1/],
      [{ perl: fake('hangs', 'exec sleep 30'), timeoutMs: 300 }, /no answer within 300 ms/],
      // Well-formed extents, far more of them than Perl ever sends.
      [{ perl: fake('floods', "seq 0 2 2000000 | awk '{ print $1, $1 + 1 }'") }, /too many extents/],
      [{ perl: fake('garbles', 'exec yes "0 4096"') }, /unexpected probe output/],
      [{ perl: fake('lies', 'read id rest; echo "0 99999999999"; echo "end $id"') }, /unexpected probe output/],
      [{ perl: fake('changing', 'read id rest; echo "error $id the file kept changing"') }, /the file kept changing/],
      [{ perl: fake('dies', 'echo "Out of memory!" >&2; exit 1') }, /Out of memory!/],
    ] as const) {
      const error = await failure(options);
      expect(error).toBeInstanceOf(SparseProbeError);
      expect(isWorkbayError(error, 'failed-precondition')).toBe(true);
      expect((error as Error).message).toMatch(reason);
      expect((error as Error).message).toContain(path);
    }
  });
});

describe('extent lists from storage', () => {
  it('refuses lists that are unsorted, overlapping, empty, outside the file or too long', () => {
    expect(extentsProblem([0, 10, 20, 5], 100)).toBeUndefined();
    expect(extentsProblem([20, 5, 0, 10], 100)).toMatch(/before/);
    expect(extentsProblem([0, 10, 5, 10], 100)).toMatch(/before/);
    expect(extentsProblem([0, 0], 100)).toMatch(/empty/);
    expect(extentsProblem([90, 20], 100)).toMatch(/past/);
    expect(extentsProblem([0, 1, 2], 100)).toMatch(/pairs/);
    expect(extentsProblem([0, -1], 100)).toMatch(/empty/);
    expect(extentsProblem(['0', 1], 100)).toMatch(/integers/);
    expect(extentsProblem([0, 1, 2, 1, 4, 1], 100, 2)).toMatch(/more than 2/);
  });

  it('caps and places data ranges', () => {
    expect(capExtents([0, 1, 10, 1, 12, 1, 100, 1], 2)).toEqual([0, 13, 100, 1]);
    expect(placeData([0, 10, 100, 10], 5, 10)).toEqual([
      [5, 5, 5],
      [100, 10, 5],
    ]);
  });
});
