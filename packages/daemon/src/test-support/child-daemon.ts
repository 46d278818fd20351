import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { DaemonConfigInput } from '../config.js';

/** The built CLI (the test target depends on the build). */
export const cliPath = fileURLToPath(new URL('../../dist/cli/main.js', import.meta.url));

export interface ChildDaemon {
  readonly process: ChildProcess;
  readonly address: string;
  readonly stderr: () => string;
  /** SIGKILL, as a crash would. */
  kill(): Promise<void>;
  /** SIGTERM and wait for a clean exit. */
  stop(): Promise<number | null>;
}

/** Runs `workbay-daemon --config <file>` in a child process and waits until it listens. */
export async function startChildDaemon(dir: string, config: DaemonConfigInput): Promise<ChildDaemon> {
  const configPath = join(dir, `daemon-${Date.now()}.json`);
  await writeFile(configPath, JSON.stringify(config));
  const child = spawn(process.execPath, [cliPath, '--config', configPath], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const address = await new Promise<string>((resolve, reject) => {
    let stdout = '';
    const timer = setTimeout(() => reject(new Error(`daemon did not start: ${stderr}`)), 30_000);
    child.stdout?.on('data', (chunk: Buffer) => {
      stdout += chunk.toString();
      const line = stdout.split('\n').find((l) => l.includes('"listening"'));
      if (line) {
        clearTimeout(timer);
        resolve((JSON.parse(line) as { grpc: string }).grpc);
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`daemon exited with ${code}: ${stderr}`));
    });
  });
  return {
    process: child,
    address,
    stderr: () => stderr,
    kill: async () => {
      child.kill('SIGKILL');
      await exited;
    },
    stop: async () => {
      child.kill('SIGTERM');
      return exited;
    },
  };
}
