/**
 * Finds the data extents of sparse files (see sparse.ts) through one Perl co-process per archive run, fed one
 * probe after the other. A Perl per file cost a fork of the daemon each: a workspace of 50,000 empty 5 MiB sparse
 * files was probed at ~8 files/s, held a backup slot for ~1.7 h, and every fork stalled the daemon's event loop
 * (its /live check took up to 3.25 s; red team round 6 #7).
 *
 * The daemon still opens every file itself (O_NOFOLLOW, pinned paths: util/pinned-path.ts) and holds it open
 * until the probe is answered. Perl never resolves a workspace path: it opens `/proc/<daemon pid>/fd/<fd>`, whose
 * magic link is the very file the daemon holds (not a path a workspace could swap), and checks that the device and
 * inode are the ones the daemon has open before it walks the file.
 *
 * Protocol, one line each: the daemon asks `<id> <fd> <size> <dev> <ino>`; Perl answers the extents, one
 * `<start> <end>` a line, then `end <id>`, or (without extents) `error <id> <reason>` for a probe that failed,
 * or `unsupported <id>` for a file system without SEEK_DATA.
 */
import { spawn } from 'node:child_process';
import type { ChildProcessWithoutNullStreams } from 'node:child_process';
import { fstat } from 'node:fs';
import { promisify } from 'node:util';
import { probeScript } from './sparse-probe-script.js';
import { capExtents, maxExtents, SparseProbeError } from './sparse.js';

/**
 * Extents Perl keeps while it walks a file: at twice this many it merges half of them across their smallest holes,
 * so its memory and output stay bounded (~40 bytes a line) however many a hostile file has. Walking them all is
 * bounded by the workspace's quota (an extent is at least a block of data) and the timeout.
 */
const probeKeep = maxExtents;
const maxOutputBytes = 48 * 2 * probeKeep;
const probeTimeoutMs = 10_000;
/**
 * Perl checks its clock between two lseeks and answers a probe past its time limit itself. One stuck in a single
 * syscall (a hung file system) or not scheduled at all does not answer: the daemon kills it this long after the
 * limit, and fails the probe in flight.
 */
const answerGraceMs = 2_000;
/** How long close() waits for a killed Perl to be gone (one stuck in the kernel dies when it leaves it). */
const exitWaitMs = 2_000;

export interface ProberOptions {
  /** For tests: the interpreter (a missing one: dense reads). */
  readonly perl?: string;
  /** A probe's time limit. */
  readonly timeoutMs?: number;
  /** Extents kept (default {@link maxExtents}; Perl keeps up to twice as many while it walks). */
  readonly maxExtents?: number;
}

type Outcome =
  | { readonly kind: 'extents'; readonly extents: number[] }
  | { readonly kind: 'unavailable' }
  | { readonly kind: 'failed'; readonly reason: string };

interface Request {
  readonly fd: number;
  readonly size: number;
  readonly dev: bigint;
  readonly ino: bigint;
  readonly settle: (outcome: Outcome) => void;
}

interface InFlight {
  readonly request: Request;
  readonly id: number;
  readonly timer: NodeJS.Timeout;
  readonly extents: number[];
  /** Output bytes of this answer so far. */
  bytes: number;
}

interface Running {
  readonly child: ChildProcessWithoutNullStreams;
  /** The last line, not complete yet. */
  partial: string;
  stderr: string;
}

const fstatBig = promisify(fstat);

/**
 * Probes files for their data extents, one at a time through one Perl started at the first probe (and again
 * after one was killed). {@link close} it when the archive run ends, however it ends: no Perl outlives it.
 */
export class SparseProber {
  /** Perl processes started by all probers (tests count them). */
  static started = 0;

  private readonly timeoutMs: number;
  private running: Running | undefined;
  private readonly queue: Request[] = [];
  private inFlight: InFlight | undefined;
  /** Every Perl started and not yet exited (killed ones included). */
  private readonly alive = new Set<Promise<void>>();
  private perlMissing = false;
  private closed = false;
  private nextId = 0;

  constructor(private readonly options: ProberOptions = {}) {
    this.timeoutMs = options.timeoutMs ?? probeTimeoutMs;
  }

  /**
   * The data extents of the first `size` bytes of the open file `fd` (`what`: its path, for the error), or undefined
   * where no probe can be made (no Perl, a file system without SEEK_DATA): the caller then reads the file as it is,
   * holes as zeros, slow for a sparse file but losing nothing. A probe that was made and failed throws
   * {@link SparseProbeError}: a workspace can make it fail (a file that changes under it, millions of extents), and
   * a read of its holes instead costs hours and, in a tar, their size in storage. `fd` must stay open until then.
   */
  async probe(fd: number, size: number, what: string): Promise<number[] | undefined> {
    let outcome: Outcome;
    try {
      // Perl checks that it opened this very file; bigint: a 64-bit inode number is not a safe integer.
      const stats = await fstatBig(fd, { bigint: true });
      outcome = await new Promise<Outcome>((settle) => {
        this.queue.push({ fd, size, dev: stats.dev, ino: stats.ino, settle });
        this.pump();
      });
    } catch (error) {
      outcome = { kind: 'failed', reason: `the file could not be checked: ${(error as Error).message}` };
    }
    if (outcome.kind === 'unavailable') return undefined;
    if (outcome.kind === 'failed') throw new SparseProbeError(what, outcome.reason);
    return capExtents(outcome.extents, this.options.maxExtents ?? maxExtents);
  }

  /** Fails the probes not answered yet and kills Perl; resolves once every Perl it started is gone. */
  async close(): Promise<void> {
    this.closed = true;
    this.pump();
    if (this.running) this.stop(this.running, 'the archive ended');
    const waited = new Promise<void>((resolve) => setTimeout(resolve, exitWaitMs).unref());
    await Promise.race([Promise.all(this.alive), waited]);
  }

  /** Sends the next queued probe when none is in flight. */
  private pump(): void {
    while (!this.inFlight) {
      const request = this.queue.shift();
      if (!request) return;
      if (this.closed) request.settle({ kind: 'failed', reason: 'the archive ended' });
      // Known after the first attempt: not a fork per file to learn it again.
      else if (this.perlMissing) request.settle({ kind: 'unavailable' });
      else this.send(request);
    }
  }

  private send(request: Request): void {
    const running = this.running ?? this.start();
    if ('kind' in running) {
      request.settle(running);
      return;
    }
    const id = this.nextId++;
    const timer = setTimeout(
      () => this.stop(running, `no answer within ${this.timeoutMs} ms`),
      this.timeoutMs + answerGraceMs,
    );
    this.inFlight = { request, id, timer, extents: [], bytes: 0 };
    running.child.stdin.write(`${id} ${request.fd} ${request.size} ${request.dev} ${request.ino}\n`);
  }

  private start(): Running | Outcome {
    let child: ChildProcessWithoutNullStreams;
    try {
      child = spawn(
        this.options.perl ?? 'perl',
        ['-e', probeScript, String(process.pid), String(this.options.maxExtents ?? probeKeep), String(this.timeoutMs)],
        // Only the daemon's PATH, to find Perl; nothing else of its environment (PERL5OPT, PERL5LIB, locales).
        { stdio: ['pipe', 'pipe', 'pipe'], env: { PATH: process.env['PATH'] ?? '/usr/bin:/bin', LC_ALL: 'C' } },
      );
    } catch (error) {
      return spawnFailure(error);
    }
    SparseProber.started++;
    const running: Running = { child, partial: '', stderr: '' };
    const exited = new Promise<void>((resolve) => {
      child.on('error', (error) => {
        this.gone(running, spawnFailure(error));
        // A process that never started does not exit.
        if (child.pid === undefined) resolve();
      });
      child.on('exit', () => resolve());
    });
    this.alive.add(exited);
    void exited.then(() => this.alive.delete(exited));
    // Without descriptors for its pipes (EMFILE), the 'error' above follows; there is nothing to talk to.
    if (!child.stdin || !child.stdout || !child.stderr) return { kind: 'failed', reason: 'perl could not start' };
    child.stdin.on('error', () => undefined); // a Perl that died: its 'close' fails the probe
    child.stdout.setEncoding('latin1');
    child.stdout.on('data', (text: string) => this.output(running, text));
    child.stderr.on('data', (chunk: Buffer) => {
      if (running.stderr.length < 512) running.stderr += chunk.toString('latin1');
    });
    // 'close' comes after stderr ended: its first line says why Perl died.
    child.on('close', (code, signal) =>
      this.gone(running, { kind: 'failed', reason: exitReason(running, code, signal) }),
    );
    this.running = running;
    return running;
  }

  /** Perl's output, checked line by line as strictly as it is written; anything else kills it. */
  private output(running: Running, text: string): void {
    if (this.running !== running) return; // a Perl killed before: what it still said is not read
    const inFlight = this.inFlight;
    if (!inFlight) return this.stop(running, 'unexpected probe output'); // unasked: not the script we gave it
    inFlight.bytes += text.length;
    if (inFlight.bytes > maxOutputBytes) return this.stop(running, 'too many extents');
    const lines = (running.partial + text).split('\n');
    running.partial = lines.pop() as string;
    for (const [i, line] of lines.entries()) {
      const outcome = this.answerLine(inFlight, line);
      if (outcome === undefined) continue;
      // Nothing may follow an answer: no probe is asked yet.
      if (outcome === 'bad' || i < lines.length - 1 || running.partial !== '') {
        return this.stop(running, 'unexpected probe output');
      }
      this.finish(outcome);
      return this.pump();
    }
  }

  /** An extent (undefined: more to come), the end of the answer, or 'bad'. */
  private answerLine(inFlight: InFlight, line: string): Outcome | 'bad' | undefined {
    const extent = /^(\d{1,16}) (\d{1,16})$/.exec(line);
    const { extents, id } = inFlight;
    if (extent) {
      const start = Number(extent[1]);
      const stop = Number(extent[2]);
      const previousEnd = extents.length ? (extents.at(-2) as number) + (extents.at(-1) as number) : 0;
      if (start < previousEnd || stop <= start || stop > inFlight.request.size) return 'bad';
      extents.push(start, stop - start);
      return undefined;
    }
    if (line === `end ${id}`) return { kind: 'extents', extents };
    if (extents.length > 0) return 'bad';
    if (line === `unsupported ${id}`) return { kind: 'unavailable' };
    const error = /^error (\d{1,15}) ([ -~]{1,200})$/.exec(line);
    if (error && Number(error[1]) === id) return { kind: 'failed', reason: (error[2] as string).slice(0, 120) };
    return 'bad';
  }

  private finish(outcome: Outcome): void {
    const inFlight = this.inFlight;
    if (!inFlight) return;
    clearTimeout(inFlight.timer);
    this.inFlight = undefined;
    inFlight.request.settle(outcome);
  }

  /** Kills `running`, failing the probe in flight with `reason`; the next probe starts another Perl. */
  private stop(running: Running, reason: string): void {
    if (this.running !== running) return;
    this.running = undefined;
    running.child.kill('SIGKILL');
    this.finish({ kind: 'failed', reason });
    this.pump();
  }

  /** Perl died or could not start: the probe in flight fails with `outcome` (unavailable: no Perl at all). */
  private gone(running: Running, outcome: Outcome): void {
    if (this.running !== running) return;
    this.running = undefined;
    if (outcome.kind === 'unavailable') this.perlMissing = true;
    this.finish(outcome);
    this.pump();
  }
}

/** No Perl at all means no probe (a dense read); any other failure to start it fails the probe. */
function spawnFailure(error: unknown): Outcome {
  return (error as NodeJS.ErrnoException).code === 'ENOENT'
    ? { kind: 'unavailable' }
    : { kind: 'failed', reason: `perl could not start: ${(error as Error).message}` };
}

function exitReason(running: Running, code: number | null, signal: NodeJS.Signals | null): string {
  const first = (running.stderr.split('\n')[0] ?? '').slice(0, 120);
  return first || (signal ? `perl was killed (${signal})` : `perl exited with ${code}`);
}
