// LocalRuntime as root: where an isolated workspace may connect beyond the node (runtime.network.egress). Red team
// rounds 11 and 12 noted that workspaces reached private addresses outside the node (the local runtime masqueraded
// everything but link-local): behind a real node those are other nodes' daemons and managers, databases, the cloud's
// internal services. A network namespace of this test stands for the node's neighbours, with a private, a public and
// a special-purpose (benchmarking-range) address, each serving TCP. Red team round 13b reached the node's own
// gateway in a documentation range (192.0.2.0/24 on the project's machines); some clouds number internal networks
// from the benchmarking range.
import { execFileSync, spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createSilentLogger } from '@workbay/api';
import {
  contentDir,
  isRoot,
  newRuntime,
  spec,
  useLocalRuntimeFixtures,
  waitForFile,
} from '../../test-support/local-runtime.js';
import { hostResolvers } from './network.js';

useLocalRuntimeFixtures();

/** The neighbours' namespace and its link's host end (not `wbv*`: the workspace firewall leaves it alone). */
const outside = `wbo${process.pid % 100000}`;
const privateAddress = '10.231.7.2';
/** Public: the retired 6to4 relay anycast range, which nothing uses (documentation ranges are blocked too). */
const publicAddress = '192.88.99.2';
const benchmarkingAddress = '198.18.7.2';
const port = 18_000 + (process.pid % 1000);

/** Connects to each target (host:port) and writes what happened to /workspace/egress.json. */
const prober = `
const net = require('node:net');
const fs = require('node:fs');
const targets = process.env.TARGETS.split(',');
Promise.all(targets.map((t) => new Promise((resolve) => {
  const [host, port] = t.split(':');
  const s = net.connect({ host, port: Number(port) });
  const done = (result) => { s.destroy(); resolve([t, result]); };
  s.setTimeout(3000, () => done('timeout'));
  s.on('data', (d) => done('answered ' + d.toString().trim()));
  s.on('error', (e) => done(e.code));
}))).then((results) => fs.writeFileSync('/workspace/egress.json', JSON.stringify(Object.fromEntries(results)) + '\\n'));
setInterval(() => {}, 1000);
`;

const ip = (...args: string[]): void => {
  execFileSync('ip', args, { stdio: 'pipe' });
};

describe.runIf(isRoot)('LocalRuntime: egress beyond the node (root)', () => {
  let server: ChildProcess | undefined;
  beforeAll(async () => {
    ip('netns', 'add', outside);
    ip('link', 'add', outside, 'type', 'veth', 'peer', 'name', `${outside}p`);
    ip('link', 'set', `${outside}p`, 'netns', outside);
    ip('addr', 'add', '10.231.7.1/24', 'dev', outside);
    ip('addr', 'add', '192.88.99.1/24', 'dev', outside);
    ip('addr', 'add', '198.18.7.1/24', 'dev', outside);
    ip('link', 'set', outside, 'up');
    ip('-n', outside, 'addr', 'add', `${privateAddress}/24`, 'dev', `${outside}p`);
    ip('-n', outside, 'addr', 'add', `${publicAddress}/24`, 'dev', `${outside}p`);
    ip('-n', outside, 'addr', 'add', `${benchmarkingAddress}/24`, 'dev', `${outside}p`);
    ip('-n', outside, 'link', 'set', `${outside}p`, 'up');
    ip('-n', outside, 'link', 'set', 'lo', 'up');
    const serve = `require('node:net').createServer((s) => s.end('neighbour\\n')).listen(${port}, '0.0.0.0', () => console.log('up'))`;
    server = spawn('ip', ['netns', 'exec', outside, process.execPath, '-e', serve], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    await new Promise<void>((resolve, reject) => {
      server!.stdout!.once('data', () => resolve());
      server!.once('exit', (code) => reject(new Error(`the neighbour server exited (${code})`)));
    });
  });
  afterAll(() => {
    server?.kill('SIGKILL');
    for (const args of [
      ['link', 'del', outside],
      ['netns', 'del', outside],
    ]) {
      try {
        ip(...args);
      } catch {
        // Deliberate: already gone (the netns takes its end of the pair with it).
      }
    }
  });

  it('reaches a public address beyond the node, not a private or special-purpose one', async () => {
    const runtime = await newRuntime({
      images: { prober: { command: [process.execPath, '-e', prober], readiness: { kind: 'none' } } },
    });
    const dir = await contentDir();
    const s = spec({ contentDir: dir, image: 'prober', resources: { pids: 64 } });
    const targets = [publicAddress, privateAddress, benchmarkingAddress].map((address) => `${address}:${port}`);
    await runtime.start({ ...s, env: { ...s.env, TARGETS: targets.join(',') } });
    const results = JSON.parse(await waitForFile(path.join(dir, 'egress.json'), 30_000)) as Record<string, string>;
    expect(results[`${publicAddress}:${port}`]).toBe('answered neighbour');
    // Dropped, not refused: the workspace learns nothing about what listens there.
    expect(results[`${privateAddress}:${port}`]).toBe('timeout');
    expect(results[`${benchmarkingAddress}:${port}`]).toBe('timeout');
  });
});

describe('hostResolvers', () => {
  it('takes the nameservers of a resolv.conf that are addresses, once each', async () => {
    const file = path.join(await contentDir(), 'resolv.conf');
    await writeFile(
      file,
      '# comment\nnameserver 10.255.255.53\nnameserver fd00::53\nnameserver 10.255.255.53\nnameserver not-an-ip\nsearch example.com\n',
    );
    expect(await hostResolvers(createSilentLogger(), file)).toEqual(['10.255.255.53', 'fd00::53']);
    expect(await hostResolvers(createSilentLogger(), path.join(file, 'missing'))).toEqual([]);
  });
});
