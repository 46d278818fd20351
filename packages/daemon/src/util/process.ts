import { spawn } from 'node:child_process';
import type { Readable, Writable } from 'node:stream';

export interface RunOptions {
  readonly cwd?: string;
  readonly env?: NodeJS.ProcessEnv;
  readonly input?: string | Uint8Array;
  readonly signal?: AbortSignal;
  /** Cap on captured output per stream; the tail beyond it is dropped. */
  readonly maxOutputBytes?: number;
  /** Run as this user and group (the caller must be root to switch; supplementary groups are dropped). */
  readonly uid?: number;
  readonly gid?: number;
}

export interface RunResult {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
}

/**
 * How long the output of a program that exited may stay open: a process it left behind (git's `git-remote-http`,
 * anything a hostile repository's content could start) must not keep the caller waiting (red team round 12, G2).
 */
const leftoverGraceMs = 1000;

/**
 * Runs a program (no shell) and collects its output. Never rejects for a non-zero exit; check `code`.
 *
 * The program leads a process group of its own: when `signal` aborts, the whole group is killed (SIGKILL) and the
 * promise rejects with an `AbortError`; when the program exits but processes of its group still hold its output
 * open after a second, they are killed too. A process that left the group (`setsid`) is not ours to follow.
 */
export function runProcess(command: string, args: readonly string[], options: RunOptions = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const { signal } = options;
    if (signal?.aborted) {
      reject(abortError(signal));
      return;
    }
    const child = spawn(command, args, {
      cwd: options.cwd,
      env: options.env ?? process.env,
      stdio: ['pipe', 'pipe', 'pipe'],
      detached: true,
      ...(options.uid !== undefined ? { uid: options.uid } : {}),
      ...(options.gid !== undefined ? { gid: options.gid } : {}),
    });
    const killGroup = (): void => {
      if (child.pid === undefined) return;
      try {
        process.kill(-child.pid, 'SIGKILL');
      } catch {
        // Deliberate: ESRCH, the group is gone already.
      }
    };
    const onAbort = (): void => {
      killGroup();
      reject(abortError(signal!));
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    const max = options.maxOutputBytes ?? 4 * 1024 * 1024;
    const collect = (stream: Readable): (() => string) => {
      const chunks: Buffer[] = [];
      let size = 0;
      stream.on('data', (chunk: Buffer) => {
        if (size >= max) return;
        chunks.push(chunk);
        size += chunk.length;
      });
      return () => Buffer.concat(chunks).toString('utf8');
    };
    const stdout = collect(child.stdout);
    const stderr = collect(child.stderr);
    let leftovers: NodeJS.Timeout | undefined;
    child.on('exit', () => {
      leftovers = setTimeout(() => {
        killGroup();
        child.stdout.destroy();
        child.stderr.destroy();
      }, leftoverGraceMs);
    });
    child.on('error', (error) => {
      signal?.removeEventListener('abort', onAbort);
      reject(error);
    });
    child.on('close', (code, exitSignal) => {
      clearTimeout(leftovers);
      signal?.removeEventListener('abort', onAbort);
      resolve({ code, signal: exitSignal, stdout: stdout(), stderr: stderr() });
    });
    writeInput(child.stdin, options.input);
  });
}

/** What an aborted run rejects with: an `AbortError` carrying the signal's reason, as Node's own APIs do. */
function abortError(signal: AbortSignal): Error {
  const error = new Error('The operation was aborted', { cause: signal.reason });
  error.name = 'AbortError';
  return error;
}

function writeInput(stdin: Writable, input: string | Uint8Array | undefined): void {
  stdin.on('error', () => undefined); // the child may exit without reading its input
  if (input !== undefined) stdin.end(input);
  else stdin.end();
}

let whichCache = new Map<string, Promise<boolean>>();

/** True if `program` is found on PATH (cached per process). */
export function hasProgram(program: string): Promise<boolean> {
  let cached = whichCache.get(program);
  if (!cached) {
    cached = runProcess('sh', ['-c', `command -v "$0" >/dev/null 2>&1`, program]).then(
      (r) => r.code === 0,
      () => false,
    );
    whichCache.set(program, cached);
  }
  return cached;
}

/** For tests that change PATH. */
export function resetProgramCache(): void {
  whichCache = new Map();
}
