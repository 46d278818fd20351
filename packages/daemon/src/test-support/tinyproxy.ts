/**
 * A real forward proxy for the upstream-proxy specs: Debian's tinyproxy (scripts/system-deps.mjs installs it),
 * on 127.0.0.1, with Basic credentials, its log read back to see which tunnels it was asked for.
 */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { connect, createServer } from 'node:net';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface Tinyproxy {
  readonly port: number;
  /** The `CONNECT host:port` targets it was asked for, in order. */
  connects(): Promise<string[]>;
  stop(): Promise<void>;
}

/** A port free a moment ago (tinyproxy cannot listen on port 0 and say which it got). */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

/** Whether something accepts connections on 127.0.0.1:`port` before `timeoutMs` (and the child still runs). */
async function waitForPort(port: number, child: ChildProcess, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline && child.exitCode === null) {
    const up = await new Promise<boolean>((resolve) => {
      const socket = connect({ host: '127.0.0.1', port });
      socket.once('connect', () => {
        socket.destroy();
        resolve(true);
      });
      socket.once('error', () => resolve(false));
    });
    if (up && child.exitCode === null) return true;
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
  return false;
}

/** Starts tinyproxy requiring `user`/`password`; retried on another port if the one picked was taken meanwhile. */
export async function startTinyproxy(user: string, password: string): Promise<Tinyproxy> {
  const dir = await mkdtemp(join(tmpdir(), 'workbay-tinyproxy-'));
  const log = join(dir, 'tinyproxy.log');
  for (let attempt = 0; attempt < 5; attempt++) {
    const port = await freePort();
    const config = join(dir, 'tinyproxy.conf');
    await writeFile(
      config,
      [
        `Port ${port}`,
        'Listen 127.0.0.1',
        'Timeout 30',
        'MaxClients 64',
        'LogLevel Connect',
        `LogFile "${log}"`,
        `BasicAuth ${user} ${password}`,
      ].join('\n') + '\n',
    );
    await rm(log, { force: true });
    const child = spawn('tinyproxy', ['-d', '-c', config], { stdio: 'ignore' });
    child.on('error', () => undefined);
    if (await waitForPort(port, child, 10_000)) {
      return {
        port,
        connects: async () =>
          [...(await readFile(log, 'utf8')).matchAll(/Request \(file descriptor \d+\): CONNECT (\S+) HTTP/g)].map(
            (m) => m[1] as string,
          ),
        stop: async () => {
          if (child.exitCode === null) {
            const exited = new Promise((resolve) => child.once('exit', resolve));
            child.kill('SIGKILL');
            await exited;
          }
          await rm(dir, { recursive: true, force: true });
        },
      };
    }
    child.kill('SIGKILL');
  }
  await rm(dir, { recursive: true, force: true });
  throw new Error('tinyproxy did not start (is it installed? scripts/system-deps.mjs)');
}
