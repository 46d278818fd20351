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

/** Runs a program (no shell) and collects its output. Never rejects for a non-zero exit; check `code`. */
export function runProcess(command: string, args: readonly string[], options: RunOptions = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, {
      cwd: options.cwd,
      env: options.env ?? process.env,
      stdio: ['pipe', 'pipe', 'pipe'],
      signal: options.signal,
      ...(options.uid !== undefined ? { uid: options.uid } : {}),
      ...(options.gid !== undefined ? { gid: options.gid } : {}),
    });
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
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ code, signal, stdout: stdout(), stderr: stderr() }));
    writeInput(child.stdin, options.input);
  });
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
