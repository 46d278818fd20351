// LocalRuntime as root: the orphans a workspace can leave on the node (sockets closed with bytes still to send count
// against the node-wide `tcp_max_orphans`): bounded while it runs (red team round 17, L1: 4,096 per workspace, 32
// workspaces reach the limit) and gone when it stops (round 16b, J3: 55,356 from one workspace lived on for minutes).
import { spawn, spawnSync } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { sharedConnectionLimit } from '@workbay/nsinsider';
import type { LocalWorkspaceState } from './state.js';
import { afterEach, describe, expect, it } from 'vitest';
import {
  contentDir,
  isRoot,
  newRuntime,
  nextEvent,
  shellImages,
  spec,
  useLocalRuntimeFixtures,
  waitForFile,
} from '../../test-support/local-runtime.js';

useLocalRuntimeFixtures();

/** The workspace: a server on $PORT that sends each connection more than it reads, then holds it. */
const server = [
  'import os, socket, time',
  "srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); srv.bind(('0.0.0.0', int(os.environ['PORT']))); srv.listen(64)",
  "open('listening.tmp', 'w').write('yes\\n'); os.rename('listening.tmp', 'listening.txt')",
  'held = []',
  'while True:',
  '    a, _ = srv.accept(); a.setblocking(False); held.append(a)',
  "    try: a.send(b'x' * 2000000)",
  '    except BlockingIOError: pass',
].join('\n');

/** On the host: `count` connections that never read (a 1 KB receive buffer): the workspace's sends stall. */
const client = (host: string, port: number, count: number): string =>
  [
    'import socket, time',
    'held = []',
    `for i in range(${count}):`,
    '    c = socket.socket(); c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)',
    `    c.connect(('${host}', ${port})); held.append(c)`,
    "print('connected', flush=True)",
    'time.sleep(60)',
  ].join('\n');

/** The host's TCP sockets to `host` in a state (`ss` filter). */
function socketsTo(host: string, state: string): number {
  const r = spawnSync('ss', ['-Htn', 'state', state, 'dst', host], { encoding: 'utf8' });
  return r.stdout.split('\n').filter((l) => l.trim() !== '').length;
}

let holder: ChildProcess | undefined;
afterEach(() => {
  holder?.kill('SIGKILL');
  holder = undefined;
});

describe.runIf(isRoot)('LocalRuntime: stopping a workspace with connections open (root)', () => {
  it('resets the sockets its processes leave, before its network goes', async () => {
    const runtime = await newRuntime({
      images: shellImages({ holder: `python3 -c "${server.replace(/"/g, '\\"')}"` }),
    });
    const dir = await contentDir();
    const s = spec({ contentDir: dir, image: 'holder' });
    const ready = nextEvent(runtime, 'ready', s.instanceId);
    await runtime.start(s);
    const { state } = await ready;
    const host = state.host;
    await waitForFile(path.join(dir, 'listening.txt'));
    const { idePort } = state as LocalWorkspaceState;
    const python = spawn('python3', ['-'], { stdio: ['pipe', 'pipe', 'inherit'] });
    holder = python;
    python.stdin.end(client(host, idePort, 20));
    await new Promise<void>((resolve) => python.stdout.once('data', () => resolve()));
    // Until the workspace's sends fill what the connections can take.
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect(socketsTo(host, 'established')).toBe(20);

    const exited = nextEvent(runtime, 'exited', s.instanceId);
    await runtime.stop(s.instanceId, { gracePeriodMs: 2_000 });
    await exited;
    // The workspace's ends were orphans with megabytes queued; reset, they reset these. Without the abort: 20, held
    // open forever (the workspace's namespace, and the link to it, are gone; its orphans probe on in it).
    expect(socketsTo(host, 'established')).toBe(0);
  });

  it('holds a workspace to its share of the node’s orphan limit', async () => {
    // The red team's shape: a listener that never accepts (its backlog holds the peers, no descriptor needed), and
    // clients that each send what the listener's buffers cannot take, then close: one orphan per connection.
    const orphans = [
      'import socket',
      "srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024); srv.bind(('127.0.0.1', 0)); srv.listen(8192)",
      'port = srv.getsockname()[1]; refused = 0',
      'for i in range(3000):',
      '    c = socket.socket()',
      "    try: c.connect(('127.0.0.1', port))",
      '    except OSError: refused += 1; c.close(); continue',
      '    c.setblocking(False)',
      "    try: c.send(b'x' * 16384)",
      '    except BlockingIOError: pass',
      '    c.close()',
      // FIN-WAIT-1 sockets of this namespace (its /proc/net/tcp): the orphans still sending.
      "held = sum(1 for line in open('/proc/net/tcp').readlines()[1:] if line.split()[3] == '04')",
      "open('orphans.tmp', 'w').write(f'{held} {refused}\\n')",
      "import os; os.rename('orphans.tmp', 'orphans.txt')",
      'import time; time.sleep(600)',
    ].join('\n');
    const runtime = await newRuntime({
      images: shellImages({ orphans: `python3 -c "${orphans.replace(/"/g, '\\"')}"` }),
    });
    const dir = await contentDir();
    const s = spec({ contentDir: dir, image: 'orphans' });
    await runtime.start(s);
    const [held, refused] = (await waitForFile(path.join(dir, 'orphans.txt'), 30_000)).trim().split(' ').map(Number);
    // 64 workspaces (the default maxWorkspaces) at 4,096 each could hold twice the usual 131,072: each gets its share.
    const share = sharedConnectionLimit(4096, Number(await readFile('/proc/sys/net/ipv4/tcp_max_orphans', 'utf8')), 64);
    expect(share).toBeLessThan(3000);
    // Without the share: 3,000 orphans, none refused.
    expect(held).toBeLessThanOrEqual(share);
    expect(held).toBeGreaterThan(share * 0.9);
    expect(refused).toBeGreaterThanOrEqual(3000 - share);
    await runtime.stop(s.instanceId, { gracePeriodMs: 0 });
  });
});
