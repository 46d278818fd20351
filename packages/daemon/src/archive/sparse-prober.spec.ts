import { execFileSync } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, renameSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { isWorkbayError } from '../errors.js';
import { MiB, makeSparseFile, proberProcesses } from '../test-support/sparse.js';
import { extentsProblem, isSparseCandidate, placeData, SparseProbeError } from './sparse.js';
import { SparseProber } from './sparse-prober.js';

const dir = mkdtempSync(join(tmpdir(), 'sparse-prober-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A file of `size` bytes with random data at `data` (offset, length) runs, holes elsewhere. */
function sparseFile(name: string, size: number, data: ReadonlyArray<readonly [number, number]>): string {
  const path = join(dir, name);
  makeSparseFile(path, size, data);
  return path;
}

/** Probes `path` through `prober`, its descriptor held open meanwhile (as the archives do). */
async function probe(prober: SparseProber, path: string): Promise<number[] | undefined> {
  const fd = openSync(path, 'r');
  try {
    return await prober.probe(fd, statSync(path).size, path);
  } finally {
    closeSync(fd);
  }
}

const failure = (promise: Promise<unknown>): Promise<unknown> =>
  promise.then(
    () => undefined,
    (error: unknown) => error,
  );

/** The one Perl `prober` is using (it made a probe already). */
function perlOf(): number {
  const pids = proberProcesses();
  expect(pids).toHaveLength(1);
  return pids[0] as number;
}

describe('SparseProber: one Perl for many probes', () => {
  const probers: SparseProber[] = [];
  const newProber = (options = {}): SparseProber => {
    const prober = new SparseProber(options);
    probers.push(prober);
    return prober;
  };
  afterEach(async () => {
    for (const prober of probers.splice(0)) await prober.close();
    expect(proberProcesses()).toEqual([]);
  });

  it('probes 500 empty 5 MiB sparse files (truncate) through one Perl, also when asked all at once', async () => {
    const paths = Array.from({ length: 500 }, (_, i) => sparseFile(`empty-${i}`, 5 * MiB, []));
    expect(isSparseCandidate(statSync(paths[0] as string))).toBe(true);
    const started = SparseProber.started;
    const prober = newProber();
    for (const path of paths.slice(0, 250)) expect(await probe(prober, path)).toEqual([]);
    expect(proberProcesses()).toHaveLength(1);
    // Read ahead, a backup asks for several at once: they wait for the one Perl in turn.
    const answers = await Promise.all(paths.slice(250).map((path) => probe(prober, path)));
    expect(answers.every((extents) => extents?.length === 0)).toBe(true);
    expect(SparseProber.started - started).toBe(1);
    await prober.close();
    expect(proberProcesses()).toEqual([]);
  });

  it('answers, through one Perl, what each file holds: data at the start, middle and end, none, dense', async () => {
    const layouts: Array<[string, number, Array<[number, number]>]> = [
      ['start', 64 * MiB, [[0, 64 * 1024]]],
      ['middle', 64 * MiB, [[20 * MiB, MiB]]],
      ['end', 64 * MiB, [[64 * MiB - 4096, 4096]]],
      [
        'three',
        64 * MiB,
        [
          [0, 8192],
          [30 * MiB, 2 * MiB],
          [64 * MiB - 4096, 4096],
        ],
      ],
      ['none', 64 * MiB, []],
      ['dense', 8 * MiB, [[0, 8 * MiB]]],
    ];
    const started = SparseProber.started;
    const prober = newProber();
    for (const [name, size, data] of layouts) {
      const expected = data.flatMap(([offset, length]) => [offset, length]);
      expect(await probe(prober, sparseFile(name, size, data)), name).toEqual(expected);
    }
    // A hole punched into a dense file.
    const punched = sparseFile('punched', 16 * MiB, [[0, 16 * MiB]]);
    execFileSync('fallocate', ['--punch-hole', '--offset', String(4 * MiB), '--length', String(8 * MiB), punched]);
    expect(await probe(prober, punched)).toEqual([0, 4 * MiB, 12 * MiB, 4 * MiB]);
    expect(SparseProber.started - started).toBe(1);
  });

  it('merges extents beyond the cap while walking, and probes the next file as before', async () => {
    const runs = Array.from({ length: 100 }, (_, i) => [i * MiB + (i >= 50 ? 1024 * MiB : 0), 4096] as const);
    const path = sparseFile('many', 2048 * MiB, runs);
    const prober = newProber({ maxExtents: 8 });
    const extents = (await probe(prober, path)) as number[];
    expect(extents.length / 2).toBeLessThanOrEqual(8);
    expect(extentsProblem(extents, 2048 * MiB)).toBeUndefined();
    // The large hole in the middle stays a hole; every byte of data is inside an extent.
    const placed = placeData(extents, 0, Infinity);
    expect(placed.some(([p, , l]) => p <= 512 * MiB && 512 * MiB < p + l)).toBe(false);
    for (const [offset] of runs) expect(placed.some(([p, , l]) => p <= offset && offset < p + l)).toBe(true);
    expect(await probe(prober, sparseFile('after-many', 64 * MiB, [[MiB, 4096]]))).toEqual([MiB, 4096]);
  });

  it('probes the file the daemon holds open, not the one its path names by then', async () => {
    const path = sparseFile('held', 64 * MiB, [[0, 4096]]);
    const other = sparseFile('other', 64 * MiB, [[32 * MiB, 4096]]);
    const prober = newProber();
    const fd = openSync(path, 'r');
    try {
      renameSync(other, path);
      expect(await prober.probe(fd, 64 * MiB, path)).toEqual([0, 4096]);
    } finally {
      closeSync(fd);
    }
    expect(await probe(prober, path)).toEqual([32 * MiB, 4096]);
  });

  it('fails one probe past its time limit (FAILED_PRECONDITION); the same Perl answers the next', async () => {
    // 25,000 extents take Perl ~150 ms to walk (and merge, at 4 kept) on an idle 2-core machine: past a 40 ms limit.
    // The limit is not 1 ms: Perl's clock counts in 10 ms ticks, and a quick probe that straddled one under load
    // failed too (a CI run).
    const runs = Array.from({ length: 25_000 }, (_, i) => [i * 8192, 4096] as const);
    const slow = sparseFile('slow', 25_000 * 8192 + MiB, runs);
    const quick = sparseFile('quick', 64 * MiB, [[8 * MiB, 4096]]);
    const prober = newProber({ timeoutMs: 40, maxExtents: 4 });
    expect(await probe(prober, quick)).toEqual([8 * MiB, 4096]);
    const started = SparseProber.started;
    const error = await failure(probe(prober, slow));
    expect(error).toBeInstanceOf(SparseProbeError);
    expect(isWorkbayError(error, 'failed-precondition')).toBe(true);
    expect((error as Error).message).toMatch(/'.*slow' could not be located \(took longer than 40 ms\)/);
    expect(await probe(prober, quick)).toEqual([8 * MiB, 4096]);
    expect(SparseProber.started).toBe(started);
  });

  it('kills a Perl that stops answering, fails its probe, and starts another for the next', async () => {
    const path = sparseFile('stuck', 64 * MiB, [[0, 4096]]);
    const prober = newProber({ timeoutMs: 300 });
    expect(await probe(prober, path)).toEqual([0, 4096]);
    const stuck = perlOf();
    // Stopped, as one stuck in a syscall: it answers nothing, not even that its time is up.
    process.kill(stuck, 'SIGSTOP');
    const started = Date.now();
    const error = await failure(probe(prober, path));
    expect(error).toBeInstanceOf(SparseProbeError);
    expect((error as Error).message).toMatch(/no answer within 300 ms/);
    expect(Date.now() - started).toBeLessThan(10_000);
    expect(await probe(prober, path)).toEqual([0, 4096]);
    expect(perlOf()).not.toBe(stuck);
  });

  it('fails the probe in flight when its Perl is killed, and the next probe still works', async () => {
    const path = sparseFile('killed', 64 * MiB, [[0, 4096]]);
    const prober = newProber();
    expect(await probe(prober, path)).toEqual([0, 4096]);
    const perl = perlOf();
    process.kill(perl, 'SIGSTOP');
    const inFlight = failure(probe(prober, path));
    await new Promise((resolve) => setTimeout(resolve, 100));
    process.kill(perl, 'SIGKILL');
    const error = await inFlight;
    expect(isWorkbayError(error, 'failed-precondition')).toBe(true);
    expect((error as Error).message).toMatch(/perl was killed \(SIGKILL\)/);
    expect(await probe(prober, path)).toEqual([0, 4096]);
  });

  it('close() fails the probes not answered yet and leaves no Perl', async () => {
    const path = sparseFile('closing', 64 * MiB, [[0, 4096]]);
    const prober = newProber();
    expect(await probe(prober, path)).toEqual([0, 4096]);
    process.kill(perlOf(), 'SIGSTOP');
    const pending = [failure(probe(prober, path)), failure(probe(prober, path))];
    await new Promise((resolve) => setTimeout(resolve, 100));
    await prober.close();
    expect(proberProcesses()).toEqual([]);
    for (const error of await Promise.all(pending)) {
      expect(error).toBeInstanceOf(SparseProbeError);
      expect((error as Error).message).toMatch(/the archive ended/);
    }
    // Closed for good: a late probe fails too, and starts nothing.
    const started = SparseProber.started;
    expect(await failure(probe(prober, path))).toBeInstanceOf(SparseProbeError);
    expect(SparseProber.started).toBe(started);
  });

  it("starts Perl with none of the daemon's environment but PATH (PERL5OPT would load a module)", async () => {
    const path = sparseFile('environment', 64 * MiB, [[0, 4096]]);
    process.env['PERL5OPT'] = '-MNo::Such::Module';
    try {
      expect(await probe(newProber(), path)).toEqual([0, 4096]);
    } finally {
      delete process.env['PERL5OPT'];
    }
  });

  it('without Perl, answers undefined (a dense read), learning it once', async () => {
    const path = sparseFile('no-perl', 64 * MiB, [[0, 4096]]);
    const started = SparseProber.started;
    const prober = newProber({ perl: join(dir, 'no-such-perl') });
    expect(await probe(prober, path)).toBeUndefined();
    expect(await Promise.all([probe(prober, path), probe(prober, path)])).toEqual([undefined, undefined]);
    expect(SparseProber.started - started).toBe(1);
  });
});
