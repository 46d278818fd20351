/**
 * Crash hygiene (issue 8, item 14), end to end with the built CLI: a SIGKILLed `workbay up` takes its daemon
 * child with it (parent-death signal), and when the daemon does outlive it (no parent-death signal configured),
 * the next `workbay up` on the same state dir stops that orphan instead of failing on its port.
 */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const mainJs = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../dist/cli/main.js');

let dir: string;
const started: ChildProcess[] = [];
const daemonPids: number[] = [];

/** Whether `pid` runs (a zombie waiting for its reaper does not). */
const alive = (pid: number): boolean => {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
};

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

async function writeConfig(name: string, daemonPort: number, dieWithManager: boolean): Promise<string> {
  const file = path.join(dir, `${name}.yaml`);
  await writeFile(
    file,
    [
      `stateDir: ${path.join(dir, name, 'manager')}`,
      `workingArea: ${path.join(dir, name, 'workspaces')}`,
      'grpc: { address: 127.0.0.1:0 }',
      'proxy: { address: 127.0.0.1:0 }',
      'metrics: { address: 127.0.0.1:0 }',
      'daemon:',
      // A fixed port, as in the embedded default (:7721): an orphan holding it would block the next start.
      `  address: 127.0.0.1:${daemonPort}`,
      "  httpAddress: 'off'",
      `  storageRoot: ${path.join(dir, name, 'storage')}`,
      `  configPath: ${path.join(dir, 'daemon.yaml')}`,
      '  output: ignore',
      `  dieWithManager: ${dieWithManager}`,
      '  orphanStopTimeout: 10s',
      'runtime: { kind: local, readiness: { intervalMs: 50 } }',
      'log: { level: warn }',
      '',
    ].join('\n'),
  );
  return file;
}

/** Starts `workbay up` and resolves with it and its daemon's pid once it serves. */
async function up(config: string, stateDir: string): Promise<{ child: ChildProcess; daemonPid: number }> {
  const child = spawn(process.execPath, [mainJs, '--json', 'up', '--config', config], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  started.push(child);
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  await new Promise<void>((resolve, reject) => {
    createInterface({ input: child.stdout! }).once('line', () => resolve());
    child.once('exit', (code) => reject(new Error(`workbay up exited with ${code}: ${stderr}`)));
  });
  const { pid } = JSON.parse(await readFile(path.join(stateDir, 'daemon.pid'), 'utf8')) as { pid: number };
  daemonPids.push(pid);
  return { child, daemonPid: pid };
}

async function untilDead(pid: number): Promise<void> {
  // Bounded: the daemon shuts down within its own shutdown timeout.
  const deadline = Date.now() + 40_000;
  while (alive(pid) && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 100));
}

beforeAll(async () => {
  if (!existsSync(mainJs)) throw new Error(`build @workbay/manager first: ${mainJs} is missing`);
  dir = await mkdtemp(path.join(os.tmpdir(), 'workbay-crash-'));
  await writeFile(
    path.join(dir, 'daemon.yaml'),
    'quota: { mode: none }\ndiskGuard: { minFree: 0 }\nlog: { level: warn }\n',
  );
});

afterAll(async () => {
  for (const child of started) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  for (const pid of daemonPids) if (alive(pid)) process.kill(pid, 'SIGKILL');
  await rm(dir, { recursive: true, force: true });
});

describe('crash hygiene of workbay up', () => {
  it('a SIGKILLed workbay up takes its daemon with it, and up starts again on the same port', async () => {
    const port = await freePort();
    const config = await writeConfig('pdeath', port, true);
    const stateDir = path.join(dir, 'pdeath', 'manager');
    const first = await up(config, stateDir);
    expect(alive(first.daemonPid)).toBe(true);
    first.child.kill('SIGKILL');
    await untilDead(first.daemonPid);
    expect(alive(first.daemonPid)).toBe(false);
    const second = await up(config, stateDir);
    expect(second.daemonPid).not.toBe(first.daemonPid);
    second.child.kill('SIGINT');
    await new Promise((resolve) => second.child.once('exit', resolve));
    await untilDead(second.daemonPid);
    expect(alive(second.daemonPid)).toBe(false);
  });

  it('a second workbay up on a state dir whose manager still runs refuses, and leaves that daemon alone', async () => {
    const port = await freePort();
    const config = await writeConfig('twice', port, true);
    const stateDir = path.join(dir, 'twice', 'manager');
    const first = await up(config, stateDir);
    const error = await up(config, stateDir).then(
      () => undefined,
      (e: unknown) => e as Error,
    );
    expect(error?.message).toMatch(/another manager \(pid \d+\) runs with this state dir/);
    expect(alive(first.daemonPid)).toBe(true);
    first.child.kill('SIGINT');
    await new Promise((resolve) => first.child.once('exit', resolve));
    await untilDead(first.daemonPid);
  });

  it('a daemon left running by a killed workbay up is stopped by the next one, which then serves', async () => {
    const port = await freePort();
    const config = await writeConfig('orphan', port, false);
    const stateDir = path.join(dir, 'orphan', 'manager');
    const first = await up(config, stateDir);
    first.child.kill('SIGKILL');
    await new Promise((resolve) => first.child.once('exit', resolve));
    // Without the parent-death signal the daemon survives and holds the port.
    expect(alive(first.daemonPid)).toBe(true);
    const second = await up(config, stateDir);
    expect(alive(first.daemonPid)).toBe(false);
    expect(alive(second.daemonPid)).toBe(true);
    second.child.kill('SIGINT');
    await new Promise((resolve) => second.child.once('exit', resolve));
  });
});
