import { spawn, spawnSync } from 'node:child_process';
import { connect } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import {
  abortWorkspaceConnections,
  limitWorkspaceConnections,
  sharedConnectionLimit,
  WORKSPACE_ORPHAN_SHARE,
} from './workspace-connections.js';
import { createNetns, createWorkspaceVeth, deleteLink, deleteNetns } from './workspace-network.js';

const isRoot = process.getuid?.() === 0;

/** Opens `count` loopback TCP connections inside `netns` and holds them; returns how many connected. */
function connectMany(netns: string, count: number): { connected: number; refused: number } {
  const script = [
    'import socket',
    "srv = socket.socket(); srv.bind(('127.0.0.1', 0)); srv.listen(4096); port = srv.getsockname()[1]",
    'held = []; refused = 0',
    `for i in range(${count}):`,
    '    c = socket.socket()',
    "    try: c.connect(('127.0.0.1', port)); held.append(c)",
    '    except OSError: refused += 1',
    'print(len(held), refused)',
  ].join('\n');
  const r = spawnSync('nsenter', [`--net=/run/netns/${netns}`, '--', 'sh', '-c', 'ip link set lo up && python3 -'], {
    input: script,
    encoding: 'utf8',
  });
  const [connected, refused] = r.stdout.trim().split(' ').map(Number);
  return { connected: connected ?? -1, refused: refused ?? -1 };
}

/** Live entries of the namespace's conntrack table. */
function trackedIn(netns: string): number {
  const r = spawnSync('ip', ['netns', 'exec', netns, 'cat', '/proc/net/nf_conntrack'], { encoding: 'utf8' });
  return r.stdout.split('\n').filter(Boolean).length;
}

/** TCP sockets inside `netns` in a state (`ss` filter: all, fin-wait-1...). */
function socketsIn(netns: string, state: string): number {
  const r = spawnSync('nsenter', [`--net=/run/netns/${netns}`, '--', 'ss', '-Htan', 'state', state], {
    encoding: 'utf8',
  });
  return r.stdout.split('\n').filter((l) => l.trim() !== '').length;
}

/** One TCP connection from here, closed at once: 1 when it connected. */
function connectClose(address: string, port: number): Promise<number> {
  return new Promise((resolve) => {
    const socket = connect(port, address);
    let connected = 0;
    socket.setTimeout(1000, () => socket.destroy());
    socket.once('connect', () => {
      connected = 1;
      socket.end();
    });
    socket.once('close', () => resolve(connected));
    socket.once('error', () => undefined);
  });
}

describe('sharedConnectionLimit', () => {
  it('keeps every workspace’s open connections, each a possible orphan, within their share of the node’s orphan limit (red team round 17, L1)', () => {
    // 64 workspaces at 4,096 each could hold 262,144 orphans, twice a 131,072 limit: the share is 1,536 each.
    expect(sharedConnectionLimit(4096, 131_072, 64)).toBe(1536);
    expect(64 * sharedConnectionLimit(4096, 131_072, 64)).toBeLessThanOrEqual(131_072 * WORKSPACE_ORPHAN_SHARE);
    // A configured limit inside the share stays; an unknown limit leaves it as configured.
    expect(sharedConnectionLimit(1000, 131_072, 64)).toBe(1000);
    expect(sharedConnectionLimit(4096, 4_194_304, 64)).toBe(4096);
    expect(sharedConnectionLimit(4096, undefined, 64)).toBe(4096);
    // Never a floor above the share (a large maxWorkspaces must not pass it), never 0 (no connection at all).
    expect(sharedConnectionLimit(4096, 1024, 16_384)).toBe(1);
  });
});

describe.runIf(isRoot)('limitWorkspaceConnections (root, real netns and nftables)', () => {
  const made: string[] = [];
  afterEach(async () => {
    for (const netns of made.splice(0)) await deleteNetns(netns);
  });

  it('refuses TCP connections past the limit, loopback included, and takes a new limit in place', async () => {
    const netns = `wbconn-${process.pid}`;
    await createNetns(netns);
    made.push(netns);
    expect(connectMany(netns, 300)).toEqual({ connected: 300, refused: 0 });
    await limitWorkspaceConnections(netns, 100);
    expect(connectMany(netns, 300)).toEqual({ connected: 100, refused: 200 });
    // Installed again with another limit: replaced, not added to.
    await limitWorkspaceConnections(netns, 150);
    expect(connectMany(netns, 300)).toEqual({ connected: 150, refused: 150 });
  });

  it('tracks nothing but TCP in the namespace: UDP to every loopback port leaves its conntrack table empty (red team round 15, G2)', async () => {
    const netns = `wbconnu-${process.pid}`;
    await createNetns(netns);
    made.push(netns);
    await limitWorkspaceConnections(netns, 100);
    const flood = [
      'import socket',
      's = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)',
      'for port in range(1, 5001): s.sendto(b"x", ("127.0.0.1", port))',
      's6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)',
      'for port in range(1, 1001): s6.sendto(b"x", ("::1", port))',
    ].join('\n');
    const sent = spawnSync(
      'nsenter',
      [
        `--net=/run/netns/${netns}`,
        '--',
        'sh',
        '-c',
        'ip link set lo up && python3 - && cat /proc/sys/net/netfilter/nf_conntrack_count',
      ],
      { input: flood, encoding: 'utf8' },
    );
    expect(sent.status).toBe(0);
    // 6,000 flows without the exemption; a few at most (none of them ours) with it.
    expect(Number(sent.stdout.trim())).toBeLessThan(10);
    // TCP is still counted and limited.
    expect(connectMany(netns, 150)).toEqual({ connected: 100, refused: 50 });
  });

  it('closed TCP connections leave its table within seconds (red team round 15c, N1: a connect/close loop filled it)', async () => {
    const netns = `wbconnc-${process.pid}`;
    await createNetns(netns);
    made.push(netns);
    await limitWorkspaceConnections(netns, 100);
    const churn = [
      'import socket, time',
      "srv = socket.socket(); srv.bind(('127.0.0.1', 0)); srv.listen(128); port = srv.getsockname()[1]",
      'for i in range(2000):',
      "    c = socket.socket(); c.connect(('127.0.0.1', port)); a, _ = srv.accept(); c.close(); a.close()",
      // Live entries (the count also holds expired ones until the kernel's collector reaps them).
      "print(len(open('/proc/net/nf_conntrack').readlines()))",
      'time.sleep(4)',
      "print(len(open('/proc/net/nf_conntrack').readlines()))",
    ].join('\n');
    const r = spawnSync('nsenter', [`--net=/run/netns/${netns}`, '--', 'sh', '-c', 'ip link set lo up && python3 -'], {
      input: churn,
      encoding: 'utf8',
    });
    const [after, later] = r.stdout.trim().split('\n').map(Number);
    // Two thousand closed connections are there at first (the kernel's default would keep them 120 s)...
    expect(after).toBeGreaterThan(1000);
    // ...and gone seconds later.
    expect(later).toBeLessThan(10);
  });

  it('closed connections into the namespace leave its table within seconds too (red team round 16, H1: the proxy’s)', async () => {
    const netns = `wbconni-${process.pid}`;
    const hostLink = `wbtci${process.pid % 10000}`;
    await createNetns(netns);
    made.push(netns);
    await createWorkspaceVeth({ hostIfName: hostLink, alias: 'workbay test inbound', netns, cidr: '10.199.10.0/30' });
    try {
      await limitWorkspaceConnections(netns, 100);
      // A server in the namespace that closes each connection; the host connects 500 times, as the port proxy does.
      const accept = `require('node:net').createServer((s) => s.end()).listen(7002, '0.0.0.0');setTimeout(() => process.exit(0), 20000);`;
      const server = spawn('ip', ['netns', 'exec', netns, process.execPath, '-e', accept], { stdio: 'ignore' });
      try {
        let opened = 0;
        // Until the server listens.
        for (let attempt = 0; attempt < 100 && opened === 0; attempt++) {
          opened = await connectClose('10.199.10.2', 7002);
          if (!opened) await new Promise((resolve) => setTimeout(resolve, 50));
        }
        for (let i = 1; i < 500; i++) opened += await connectClose('10.199.10.2', 7002);
        const after = trackedIn(netns);
        await new Promise((resolve) => setTimeout(resolve, 4000));
        const later = trackedIn(netns);
        expect(opened).toBe(500);
        // All there at first (the kernel's default would keep them 120 s)...
        expect(after).toBeGreaterThan(400);
        // ...and gone seconds later.
        expect(later).toBeLessThan(10);
      } finally {
        server.kill('SIGKILL');
      }
    } finally {
      await deleteLink(hostLink).catch(() => undefined);
    }
  });

  it('aborts the sockets left in the namespace, orphans included (red team round 16b, J3)', async () => {
    const netns = `wbconna-${process.pid}`;
    await createNetns(netns);
    made.push(netns);
    // 20 loopback pairs: each server end sends more than the client, which never reads, can take, then closes: an
    // orphan in FIN-WAIT-1 behind a zero window, as a stopped workspace's are.
    const script = [
      'import socket, sys, time',
      "srv = socket.socket(); srv.bind(('127.0.0.1', 0)); srv.listen(64); port = srv.getsockname()[1]",
      'clients = []',
      'for i in range(20):',
      '    c = socket.socket(); c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)',
      "    c.connect(('127.0.0.1', port)); a, _ = srv.accept(); a.setblocking(False); clients.append(c)",
      '    try: a.send(b"x" * 1000000)',
      '    except BlockingIOError: pass',
      '    a.close()',
      "print('ready', flush=True)",
      'time.sleep(30)',
    ].join('\n');
    const holder = spawn('nsenter', [`--net=/run/netns/${netns}`, '--', 'sh', '-c', 'ip link set lo up && python3 -'], {
      stdio: ['pipe', 'pipe', 'ignore'],
    });
    try {
      holder.stdin.end(script);
      await new Promise<void>((resolve) => holder.stdout.once('data', () => resolve()));
      expect(socketsIn(netns, 'fin-wait-1')).toBe(20);
      expect(await abortWorkspaceConnections(netns)).toBe(true);
      // Without the abort: 20, for as long as the clients advertise a zero window.
      expect(socketsIn(netns, 'fin-wait-1')).toBe(0);
      expect(socketsIn(netns, 'all')).toBe(0);
    } finally {
      holder.kill('SIGKILL');
    }
    expect(await abortWorkspaceConnections(`wbnone-${process.pid}`)).toBe(false);
  });

  it('names the field of a bad request and runs nothing', async () => {
    await expect(abortWorkspaceConnections('../x')).rejects.toThrow(/netns/);
    await expect(limitWorkspaceConnections('../x', 10)).rejects.toThrow(/netns/);
    await expect(limitWorkspaceConnections('ok', 0)).rejects.toThrow(/max/);
  });
});
