// LocalRuntime as root: stopping a workspace leaves no socket of its behind on the node (red team round 16b, J3:
// a stopped workspace's orphans, 55,356 of them from one workspace, lived on in its deleted namespace for minutes).
import { spawn, spawnSync } from 'node:child_process';
import type { ChildProcessWithoutNullStreams } from 'node:child_process';
import path from 'node:path';
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

let holder: ChildProcessWithoutNullStreams | undefined;
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
    holder = spawn('python3', ['-'], { stdio: ['pipe', 'pipe', 'inherit'] });
    holder.stdin.end(client(host, state.idePort, 20));
    await new Promise<void>((resolve) => holder!.stdout.once('data', () => resolve()));
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
});
