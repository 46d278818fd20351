/** TEST ONLY: runs a built bin (`node <file> ...args`) as a child process and collects what it printed. */
import { spawn } from 'node:child_process';

/** How a bin run ended: its exit code (null when a signal ended it) and everything it printed. */
export interface BinRun {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs `node <file> ...args` with this process's environment plus `env`; resolves once it has exited. */
export function runBin(file: string, args: string[], env: Record<string, string> = {}): Promise<BinRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [file, ...args], {
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}
