/**
 * The embedded supervisor restarts a daemon whose process runs but whose `/live` fails. The daemon here is a
 * stand-in process (gRPC health SERVING, `/live` answering 503 once a file exists): a real daemon says 503 there
 * only once every backup worker is stuck in a call that never returns, which a test cannot bring about on demand
 * (the daemon's own specs prove that `/live` answer: packages/daemon/src/health/http-server.spec.ts).
 */
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { resolveManagerConfig } from './config.js';
import { probeLive } from './daemon-liveness.js';
import { DaemonSupervisor } from './daemon-supervisor.js';
import { createSilentLogger } from './logger.js';

const grpcModule = import.meta.resolve('@grpc/grpc-js');

/** A process that looks like the daemon to its supervisor; `/live` fails while `<dir>/dead` exists. */
const standIn = (dir: string): string => `
const grpc = require(${JSON.stringify(new URL(grpcModule).pathname)});
const http = require('node:http');
const { existsSync } = require('node:fs');
if (existsSync(${JSON.stringify(join(dir, 'fail-start'))})) process.exit(3);
const address = process.argv[process.argv.indexOf('--grpc-address') + 1];
const server = new grpc.Server();
server.addService(
  { Check: { path: '/grpc.health.v1.Health/Check', requestStream: false, responseStream: false,
      requestSerialize: (b) => b, requestDeserialize: (b) => b, responseSerialize: (b) => b, responseDeserialize: (b) => b } },
  { Check: (_call, done) => done(null, Buffer.from([0x08, 0x01])) },
);
server.bindAsync(address, grpc.ServerCredentials.createInsecure(), (error, port) => {
  if (error) throw error;
  const live = http.createServer((req, res) => {
    const dead = existsSync(${JSON.stringify(join(dir, 'dead'))});
    res.writeHead(dead ? 503 : 200, { 'content-type': 'application/json' }).end(dead ? '{"failed":["backup-workers"]}' : '{}');
  });
  live.listen(0, '127.0.0.1', () => {
    const grpcAddress = '127.0.0.1:' + port;
    const httpAddress = '127.0.0.1:' + live.address().port;
    process.stdout.write(JSON.stringify({ event: 'listening', grpc: grpcAddress, http: httpAddress }) + '\\n');
  });
});
`;

/** Whether the supervisor's current daemon answers (without waiting). */
async function serving(daemon: DaemonSupervisor): Promise<boolean> {
  return daemon.waitUntilServing(200).then(
    () => true,
    () => false,
  );
}

describe('the daemon supervisor and /live', () => {
  let dir: string | undefined;
  let supervisor: DaemonSupervisor | undefined;
  afterEach(async () => {
    await supervisor?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  async function start(livenessInterval: string, existing?: string): Promise<DaemonSupervisor> {
    dir = existing ?? (await mkdtemp(join(tmpdir(), 'workbay-liveness-')));
    const script = join(dir, 'stand-in.cjs');
    await writeFile(script, standIn(dir));
    supervisor = new DaemonSupervisor(
      resolveManagerConfig({
        stateDir: join(dir, 'state'),
        workingArea: join(dir, 'workspaces'),
        daemon: {
          address: '127.0.0.1:0',
          command: [process.execPath, script],
          output: 'ignore',
          dieWithManager: false,
          livenessInterval,
          livenessFailures: 3,
        },
      }),
      createSilentLogger(),
    );
    await supervisor.start();
    return supervisor;
  }

  it('restarts a daemon whose /live failed three times in a row, and leaves a live one alone', async () => {
    const daemon = await start('50ms');
    const first = daemon.pid;
    // Live: several probe intervals pass, the same process serves.
    await new Promise((resolve) => setTimeout(resolve, 400));
    expect(daemon.pid).toBe(first);
    await writeFile(join(dir!, 'dead'), '');
    const deadline = Date.now() + 10_000;
    while (daemon.pid === first && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50));
    expect(daemon.pid).not.toBe(first);
    await daemon.waitUntilServing(10_000);
    expect(existsSync(`/proc/${first}`)).toBe(false);
  });

  it('keeps restarting a daemon that keeps failing, with longer pauses, instead of giving up after five', async () => {
    // Dead from its start: every new process fails /live too, as a daemon a workspace could crash at will would.
    dir = await mkdtemp(join(tmpdir(), 'workbay-liveness-'));
    await writeFile(join(dir, 'dead'), '');
    const daemon = await start('50ms', dir);
    const pids = new Set<number | undefined>([daemon.pid]);
    const deadline = Date.now() + 30_000;
    while (pids.size < 8 && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 50));
      pids.add(daemon.pid);
    }
    // Five restarts a second apart, then 2 s, 4 s: the seventh and eighth process came after what was the limit.
    expect(pids.size).toBeGreaterThanOrEqual(8);
  }, 40_000);

  it('a restart that fails to start is tried again, until one serves', async () => {
    const daemon = await start('50ms');
    const first = daemon.pid;
    // From now on new processes exit at once; the running one fails /live and is stopped.
    await writeFile(join(dir!, 'fail-start'), '');
    await writeFile(join(dir!, 'dead'), '');
    const gone = Date.now() + 10_000;
    while (existsSync(`/proc/${first}`) && Date.now() < gone) await new Promise((resolve) => setTimeout(resolve, 50));
    // Two failed starts a second apart, then the cause goes away.
    await new Promise((resolve) => setTimeout(resolve, 2_500));
    await rm(join(dir!, 'fail-start'));
    await rm(join(dir!, 'dead'));
    const deadline = Date.now() + 20_000;
    while ((daemon.pid === first || !(await serving(daemon))) && Date.now() < deadline)
      await new Promise((resolve) => setTimeout(resolve, 100));
    expect(daemon.pid).not.toBe(first);
    await daemon.waitUntilServing(10_000);
  }, 40_000);

  it('does not watch /live with livenessInterval 0s', async () => {
    const daemon = await start('0s');
    const first = daemon.pid;
    await writeFile(join(dir!, 'dead'), '');
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect(daemon.pid).toBe(first);
  });

  it('probeLive: a 2xx is live; anything else, no answer within the timeout, or a refused connection says why', async () => {
    let status = 200;
    let silent = false;
    const server = http.createServer((_req, res) => {
      if (!silent) res.writeHead(status).end('{"failed":["backup-workers"]}');
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const address = `127.0.0.1:${(server.address() as AddressInfo).port}`;
    try {
      expect(await probeLive(address, 1_000)).toBeUndefined();
      status = 503;
      expect(await probeLive(address, 1_000)).toBe('HTTP 503: {"failed":["backup-workers"]}');
      silent = true;
      expect(await probeLive(address, 200)).toMatch(/no answer within 200 ms/);
    } finally {
      server.closeAllConnections();
      server.close();
    }
    expect(await probeLive(address, 1_000)).toMatch(/ECONNREFUSED/);
  });
});
