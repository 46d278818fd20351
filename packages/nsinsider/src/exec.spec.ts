// runCommand when the process is out of file descriptors: it must report the failure, not end the process. Found
// by a red-team run: a workspace holding thousands of connections to the daemon's in-workspace socket made the next
// spawn fail with EMFILE, Node gave the child no stdio, and the 'error' event it emitted had no listener yet.
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const dist = fileURLToPath(new URL('../dist/', import.meta.url));

describe('runCommand', () => {
  it('reports EMFILE as a spawn error and the process lives on', () => {
    const script = `
      import net from 'node:net';
      const { runCommand } = await import(${JSON.stringify(join(dist, 'exec.js'))});
      const held = [];
      try {
        for (;;) held.push(await new Promise((resolve, reject) => {
          const server = net.createServer().once('error', reject);
          server.listen(0, '127.0.0.1', () => resolve(server));
        }));
      } catch {}
      const r = await runCommand('true', []);
      await new Promise((resolve) => setTimeout(resolve, 200));
      console.log(JSON.stringify({ held: held.length, code: r.spawnError?.code }));
      process.exit(0);
    `;
    // A low descriptor limit, so that the child runs out quickly.
    const out = execFileSync(
      'bash',
      ['-c', 'ulimit -n 128 && exec "$0" --input-type=module -e "$1"', process.execPath, script],
      {
        encoding: 'utf8',
      },
    );
    const result = JSON.parse(out.trim().split('\n').pop()!) as { held: number; code?: string };
    expect(result.held).toBeGreaterThan(50);
    expect(result.code).toBe('EMFILE');
  });
});

describe('routeCommands', () => {
  it("sends every command through the route until it is undone, and a later route survives an earlier one's undo", async () => {
    const { routeCommands, runCommand } = await import('./exec.js');
    const seen: string[] = [];
    const undo = routeCommands(async (file, args) => {
      seen.push([file, ...args].join(' '));
      return { stdout: 'routed', stderr: '', exitCode: 0, signal: null, timedOut: false };
    });
    expect((await runCommand('echo', ['here'])).stdout).toBe('routed');
    expect(seen).toEqual(['echo here']);
    undo();
    expect((await runCommand('echo', ['here'])).stdout).toBe('here\n');

    const first = routeCommands(async () => ({
      stdout: 'first',
      stderr: '',
      exitCode: 0,
      signal: null,
      timedOut: false,
    }));
    const second = routeCommands(async () => ({
      stdout: 'second',
      stderr: '',
      exitCode: 0,
      signal: null,
      timedOut: false,
    }));
    first();
    expect((await runCommand('echo', ['here'])).stdout).toBe('second');
    second();
    expect((await runCommand('echo', ['here'])).stdout).toBe('here\n');
  });
});
