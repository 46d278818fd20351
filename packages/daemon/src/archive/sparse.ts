/**
 * Data extents of sparse files. A workspace can write an 8 GiB file that allocates 20 KiB: read as it is, its
 * holes cost ~2 s/GiB of zeros and, in a tar, their full size (red team: a 2 GiB quota made an 8 GiB snapshot,
 * and sparse files held the backup slots for minutes). lseek(SEEK_DATA/SEEK_HOLE) finds the data without
 * reading the holes, but Node has no binding for it; Perl's `sysseek` passes `whence` through, and perl-base is
 * on every Debian system. Perl gets the descriptor the daemon opened (as its stdin), never a path: a workspace
 * can swap paths at any moment (see util/pinned-path.ts).
 *
 * Extents are kept flat, `[offset0, length0, offset1, length1, ...]`, sorted, non-overlapping, non-empty.
 */
import { spawn } from 'node:child_process';
import { FailedPreconditionError } from '../errors.js';

/**
 * A sparse file whose data could not be found (the probe timed out, the file kept changing under it, Perl failed).
 * Read as it is, its holes would be read, and stored by a tar, byte for byte: a 16 TiB file allocating a few MiB
 * held a backup slot for hours and wrote 3 GB into storage per snapshot (red team round 6, which made the probe
 * fail on purpose). The archive fails instead, not retried; the content is kept, as for any failed backup.
 */
export class SparseProbeError extends FailedPreconditionError {
  constructor(what: string, reason: string) {
    super(
      `the data of sparse file '${what.slice(0, 200)}' could not be located (${reason}); the content is not archived`,
    );
  }
}

/**
 * The most extents a file is stored with; more are merged across their smallest holes (read as zeros). A manifest
 * entry then lists at most ~400 KB of them, a tar map as much.
 */
export const maxExtents = 16_384;
/**
 * Extents Perl keeps while it walks a file: at twice this many it merges half of them across their smallest holes,
 * so its memory and output stay bounded (~40 bytes a line) however many a hostile file has. Walking them all is
 * bounded by the workspace's quota (an extent is at least a block of data) and the timeout.
 */
const probeKeep = maxExtents;
const maxOutputBytes = 48 * 2 * probeKeep;
const probeTimeoutMs = 10_000;
/**
 * The largest sparse file restored (ext4's largest file, 16 TiB): a size read from storage or an archive that is
 * bigger is no file we archived, and could not be created.
 */
export const maxSparseSize = 16 * 1024 ** 4;
/**
 * Holes smaller than this are read as they are: a spawn costs a few milliseconds, about what reading a few MiB
 * of holes costs.
 */
export const sparseSlack = 4 * 1024 * 1024;

/** Whether a file may be worth probing: fewer bytes allocated than its size, by more than {@link sparseSlack}. */
export function isSparseCandidate(stats: {
  readonly size: number | bigint;
  readonly blocks: number | bigint;
}): boolean {
  return Number(stats.blocks) * 512 + sparseSlack < Number(stats.size);
}

// SEEK_DATA is 3 and SEEK_HOLE 4 on Linux. "0 but true" (sysseek's 0) is numified by `+= 0`. ENXIO: no data
// after the position. A file system without hole support answers with one extent over the whole file.
const probeScript = `
use strict;
my ($size, $keep) = @ARGV;
my ($p, $changes, @e) = (0, 0);
sub merge {
  my @gaps = map { $e[2 * $_] - $e[2 * $_ - 1] } 1 .. @e / 2 - 1;
  my @order = sort { $gaps[$a] <=> $gaps[$b] || $a <=> $b } 0 .. $#gaps;
  my %close = map { $_ => 1 } @order[0 .. int(@order / 2)];
  my @m = @e[0, 1];
  for (my $i = 1; $i < @e / 2; $i++) {
    if ($close{$i - 1}) { $m[-1] = $e[2 * $i + 1]; } else { push @m, $e[2 * $i], $e[2 * $i + 1]; }
  }
  @e = @m;
}
while ($p < $size) {
  my $d = sysseek(STDIN, $p, 3);
  if (!defined $d) { last if $!{ENXIO}; die "SEEK_DATA: $!\\n"; }
  $d += 0;
  last if $d >= $size;
  my $h = sysseek(STDIN, $d, 4);
  die "SEEK_HOLE: $!\\n" unless defined $h;
  $h += 0;
  # The data just found is gone again (a hole punched meanwhile): look again from the same place, a bounded number of times.
  if ($h <= $d) { die "the file kept changing\\n" if ++$changes > 1000; next; }
  $h = $size if $h > $size;
  push @e, $d, $h;
  merge() if @e >= 4 * $keep;
  $p = $h;
}
for (my $i = 0; $i < @e; $i += 2) { print "$e[$i] $e[$i + 1]\\n"; }
print "end\\n";
`;

export interface ProbeOptions {
  /** For tests: the interpreter (a missing one: a dense read). */
  readonly perl?: string;
  readonly timeoutMs?: number;
  /** Extents kept (default {@link maxExtents}; Perl keeps up to twice as many while it walks). */
  readonly maxExtents?: number;
}

/**
 * The data extents of the first `size` bytes of the open file `fd` (`what`: its path, for the error), or undefined
 * where no probe can be made (no Perl, a file system without SEEK_DATA): the caller then reads the file as it is,
 * holes as zeros, slow for a sparse file but losing nothing. A probe that was made and failed throws
 * {@link SparseProbeError}: a workspace can make it fail (a file that changes under it, millions of extents), and a
 * read of its holes instead costs hours and, in a tar, their size in storage.
 */
export async function findDataExtents(
  fd: number,
  size: number,
  what: string,
  options: ProbeOptions = {},
): Promise<number[] | undefined> {
  const probe = await runProbe(fd, size, options);
  if (probe.kind === 'unavailable') return undefined;
  if (probe.kind === 'failed') throw new SparseProbeError(what, probe.reason);
  const extents = parseProbe(probe.output, size);
  if (!extents) throw new SparseProbeError(what, 'unexpected probe output');
  return capExtents(extents, options.maxExtents ?? maxExtents);
}

type Probe =
  | { readonly kind: 'output'; readonly output: string }
  | { readonly kind: 'unavailable' }
  | { readonly kind: 'failed'; readonly reason: string };

/** How Perl says the file system has no SEEK_DATA (EINVAL, EOPNOTSUPP): a dense read is all there is. */
const noSeekData = /^SEEK_(DATA|HOLE): (Invalid argument|Operation not supported)/;

function runProbe(fd: number, size: number, options: ProbeOptions): Promise<Probe> {
  const timeoutMs = options.timeoutMs ?? probeTimeoutMs;
  return new Promise((resolve) => {
    let child;
    try {
      child = spawn(
        options.perl ?? 'perl',
        ['-e', probeScript, String(size), String(options.maxExtents ?? probeKeep)],
        {
          stdio: [fd, 'pipe', 'pipe'],
          timeout: timeoutMs,
          killSignal: 'SIGKILL',
        },
      );
    } catch (error) {
      resolve(spawnFailure(error));
      return;
    }
    const chunks: Buffer[] = [];
    let bytes = 0;
    let stderr = '';
    child.stdout?.on('data', (chunk: Buffer) => {
      bytes += chunk.length;
      if (bytes > maxOutputBytes) child.kill('SIGKILL');
      else chunks.push(chunk);
    });
    child.stderr?.on('data', (chunk: Buffer) => {
      if (stderr.length < 512) stderr += chunk.toString('latin1');
    });
    child.on('error', (error) => resolve(spawnFailure(error)));
    child.on('close', (code, signal) => {
      if (code === 0 && bytes <= maxOutputBytes)
        resolve({ kind: 'output', output: Buffer.concat(chunks).toString('latin1') });
      else if (noSeekData.test(stderr)) resolve({ kind: 'unavailable' });
      else if (bytes > maxOutputBytes) resolve({ kind: 'failed', reason: 'too many extents' });
      else if (signal) resolve({ kind: 'failed', reason: `no answer within ${timeoutMs} ms` });
      else
        resolve({ kind: 'failed', reason: (stderr.split('\n')[0] ?? '').slice(0, 120) || `perl exited with ${code}` });
    });
  });
}

/** No Perl at all means no probe (a dense read); any other failure to start it fails the probe. */
function spawnFailure(error: unknown): Probe {
  return (error as NodeJS.ErrnoException).code === 'ENOENT'
    ? { kind: 'unavailable' }
    : { kind: 'failed', reason: `perl could not start: ${(error as Error).message}` };
}

/** Perl's lines as extents (start and end of each), checked: anything unexpected means a dense read. */
function parseProbe(output: string, size: number): number[] | undefined {
  const lines = output.split('\n');
  if (lines.at(-1) === '') lines.pop();
  if (lines.pop() !== 'end') return undefined;
  const extents: number[] = [];
  let end = 0;
  for (const line of lines) {
    const match = /^(\d{1,16}) (\d{1,16})$/.exec(line);
    if (!match) return undefined;
    const start = Number(match[1]);
    const stop = Number(match[2]);
    if (start < end || stop <= start || stop > size) return undefined;
    extents.push(start, stop - start);
    end = stop;
  }
  return extents;
}

/** `extents` merged across their smallest holes until at most `max` remain (holes merged in read as zeros). */
export function capExtents(extents: number[], max: number): number[] {
  const count = extents.length / 2;
  if (count <= max) return extents;
  const gaps: number[] = [];
  for (let i = 1; i < count; i++) gaps.push((extents[2 * i] as number) - end(extents, i - 1));
  gaps.sort((a, b) => a - b);
  // Merging every gap up to this one leaves at most `max` extents (equal gaps may merge a few more).
  const threshold = gaps[count - max - 1] as number;
  const merged: number[] = [extents[0] as number, extents[1] as number];
  for (let i = 1; i < count; i++) {
    const start = extents[2 * i] as number;
    const last = merged.length - 2;
    if (start - ((merged[last] as number) + (merged[last + 1] as number)) <= threshold) {
      merged[last + 1] = end(extents, i) - (merged[last] as number);
    } else merged.push(start, extents[2 * i + 1] as number);
  }
  return merged;
}

function end(extents: readonly number[], i: number): number {
  return (extents[2 * i] as number) + (extents[2 * i + 1] as number);
}

/** Bytes of data the extents hold. */
export function extentBytes(extents: readonly number[]): number {
  let total = 0;
  for (let i = 1; i < extents.length; i += 2) total += extents[i] as number;
  return total;
}

/** The first `dataBytes` bytes of data of `extents` (a file that shrank while it was read). */
export function truncateExtents(extents: readonly number[], dataBytes: number): number[] {
  const cut: number[] = [];
  for (let i = 0; i < extents.length && dataBytes > 0; i += 2) {
    const length = Math.min(extents[i + 1] as number, dataBytes);
    cut.push(extents[i] as number, length);
    dataBytes -= length;
  }
  return cut;
}

/**
 * Why `extents` (from storage or an archive: hostile) is no extent list of a file of `size` bytes, or undefined
 * when it is one: integers, sorted, non-overlapping, non-empty, inside the file, at most `max` of them.
 */
export function extentsProblem(extents: unknown, size: number, max = maxExtents): string | undefined {
  if (!Array.isArray(extents) || extents.length % 2 !== 0) return 'is not a list of offset/length pairs';
  if (extents.length / 2 > max) return `has ${extents.length / 2} extents, more than ${max}`;
  let previousEnd = 0;
  for (let i = 0; i < extents.length; i += 2) {
    const offset: unknown = extents[i];
    const length: unknown = extents[i + 1];
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length)) return `extent ${i / 2} is not integers`;
    if ((offset as number) < previousEnd) return `extent ${i / 2} starts before the previous one ends`;
    if ((length as number) <= 0) return `extent ${i / 2} is empty`;
    previousEnd = (offset as number) + (length as number);
    if (previousEnd > size) return `extent ${i / 2} ends at ${previousEnd}, past the file's ${size} bytes`;
  }
  return undefined;
}

/**
 * Maps the range [`from`, `from + length`) of a file's data (its extents back to back) to places in the file:
 * `[position, dataOffset, length]` triples.
 */
export function placeData(extents: readonly number[], from: number, length: number): Array<[number, number, number]> {
  const places: Array<[number, number, number]> = [];
  let data = 0;
  for (let i = 0; i < extents.length && length > 0; i += 2) {
    const offset = extents[i] as number;
    const size = extents[i + 1] as number;
    if (from < data + size) {
      const skip = from - data;
      const take = Math.min(size - skip, length);
      places.push([offset + skip, from, take]);
      from += take;
      length -= take;
    }
    data += size;
  }
  return places;
}
