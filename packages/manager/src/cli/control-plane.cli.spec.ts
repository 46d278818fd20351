/**
 * `workbay up` with the built CLI: bound beyond loopback without authentication it refuses to start and says
 * which setting is missing (before starting a daemon); with `auth.tokens` it serves, and the CLI authenticates
 * with WORKBAY_TOKEN.
 */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { runBin } from '../test-support/run-bin.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const mainJs = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../dist/cli/main.js');
const token = 'cli-token-0123456789abcdef';

let dir: string;
const children: ChildProcess[] = [];

function run(
  args: string[],
  env: Record<string, string> = {},
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return runBin(mainJs, args, { WORKBAY_OWNER: 'erin', ...env });
}

async function config(name: string, extra: string[]): Promise<string> {
  const file = path.join(dir, `${name}.yaml`);
  await writeFile(
    file,
    [
      `stateDir: ${path.join(dir, name, 'manager')}`,
      `workingArea: ${path.join(dir, name, 'workspaces')}`,
      'proxy: { address: 127.0.0.1:0 }',
      'metrics: { address: 127.0.0.1:0 }',
      'daemon:',
      '  address: 127.0.0.1:0',
      "  httpAddress: 'off'",
      `  storageRoot: ${path.join(dir, name, 'storage')}`,
      `  configPath: ${path.join(dir, 'daemon.yaml')}`,
      '  output: ignore',
      'log: { level: warn }',
      ...extra,
      '',
    ].join('\n'),
  );
  return file;
}

beforeAll(async () => {
  if (!existsSync(mainJs)) throw new Error(`build @workbay/manager first: ${mainJs} is missing`);
  dir = await mkdtemp(path.join(os.tmpdir(), 'workbay-cp-cli-'));
  await writeFile(
    path.join(dir, 'daemon.yaml'),
    'quota: { mode: none }\ndiskGuard: { minFree: 0 }\nlog: { level: warn }\n',
  );
});

afterAll(async () => {
  for (const child of children) if (child.exitCode === null) child.kill('SIGINT');
  await Promise.all(
    children.map((c) => (c.exitCode === null ? new Promise((resolve) => c.once('exit', resolve)) : undefined)),
  );
  await rm(dir, { recursive: true, force: true });
});

describe('workbay up beyond loopback', () => {
  it('refuses to start without mTLS or tokens, naming the missing setting, and starts no daemon', async () => {
    const file = await config('open', ['grpc: { address: 0.0.0.0:0 }']);
    const result = await run(['up', '--config', file]);
    expect(result.code).not.toBe(0);
    expect(result.stderr).toMatch(/grpc\.address 0\.0\.0\.0:0 is not a loopback address: set grpc\.tls .*auth\.tokens/);
    expect(existsSync(path.join(dir, 'open', 'manager', 'daemon.pid'))).toBe(false);
  });

  it('serves with auth.tokens; the CLI needs WORKBAY_TOKEN', async () => {
    const file = await config('tokens', ['grpc: { address: 0.0.0.0:0 }', `auth: { tokens: [${token}] }`]);
    const up = spawn(process.execPath, [mainJs, '--json', 'up', '--config', file], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    children.push(up);
    let stderr = '';
    up.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    const { managerAddress } = await new Promise<{ managerAddress: string }>((resolve, reject) => {
      createInterface({ input: up.stdout! }).once('line', (line) =>
        resolve(JSON.parse(line) as { managerAddress: string }),
      );
      up.once('exit', (code) => reject(new Error(`workbay up exited with ${code}: ${stderr}`)));
    });
    const address = `127.0.0.1:${managerAddress.slice(managerAddress.lastIndexOf(':') + 1)}`;
    const without = await run(['--address', address, 'classes']);
    expect(without.code).not.toBe(0);
    expect(without.stderr).toMatch(/bearer token/);
    const withToken = await run(['--address', address, 'classes'], { WORKBAY_TOKEN: token });
    expect(withToken.code, withToken.stderr).toBe(0);
    expect(withToken.stdout).toContain('g1-standard');
  });
});
