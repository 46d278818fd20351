/**
 * The proxy's connection bounds against real sockets: refused upgrades, slowloris, the per-address cap, the
 * per-workspace and per-owner caps (anonymous and owner budgets apart), and the handshake, idle and leaving-client
 * bounds of tunnels. The hostile clients here never close their side (allowHalfOpen), as an attacker holding
 * descriptors would not, unless a test says so; every test ends by checking that the proxy still serves.
 */
import { createServer } from 'node:http';
import type { IncomingMessage, Server } from 'node:http';
import { connect } from 'node:net';
import type { Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import type { WorkspaceRecord } from '../domain/types.js';
import { createSilentLogger } from '../logger.js';
import { hostPort, parseRawResponse } from '../test-support/raw-http.js';
import type { RawResponse } from '../test-support/raw-http.js';
import { makeRecord } from '../test-support/records.js';
import type { ProxyLimits } from './connection-limits.js';
import { PortProxy } from './port-proxy.js';

/** Bound for anything that should happen within a fraction of it: generous for a loaded machine. */
const generous = 10_000;

async function waitFor(what: string, predicate: () => boolean, boundMs = generous): Promise<void> {
  const deadline = Date.now() + boundMs;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** A client that never closes its side, reads everything, and notes when the proxy closes. */
interface HostileClient {
  readonly socket: Socket;
  text(): string;
  /** The proxy sent FIN, or the connection is gone. */
  endedByProxy(): boolean;
}

function hostileClient(address: string, localAddress?: string): Promise<HostileClient> {
  return new Promise((resolve, reject) => {
    const { host, port } = hostPort(address);
    const socket = connect({ host, port, localAddress, allowHalfOpen: true });
    let text = '';
    let ended = false;
    socket.on('data', (c: Buffer) => (text += c.toString('latin1')));
    socket.on('end', () => (ended = true));
    socket.on('close', () => (ended = true));
    // A reset from the proxy is one way of being closed by it; the test looks at `endedByProxy`.
    socket.on('error', () => undefined);
    socket.once('connect', () => resolve({ socket, text: () => text, endedByProxy: () => ended }));
    socket.once('error', reject);
  });
}

const upgradeHead = (path: string, extra = ''): string =>
  `GET ${path} HTTP/1.1\r\nhost: p\r\nconnection: upgrade\r\nupgrade: websocket\r\n${extra}\r\n`;

/**
 * The workspace: HTTP answers `ok`, except `/hold`, which it never answers (counted in `holding` while open);
 * upgrades to `/silent` are never answered, to `/mute` get a 101 and then nothing (both read their input and
 * ignore it, its end included: they never close), others get a 101 and an echo.
 */
async function startWorkspace(
  held: Set<Socket>,
  holding: Set<IncomingMessage>,
  ignoring: Set<Socket>,
): Promise<Server> {
  const server = createServer((req, res) => {
    if (req.url !== '/hold') return res.end('ok');
    holding.add(req);
    res.once('close', () => holding.delete(req));
  });
  server.on('connection', (s: Socket) => {
    held.add(s);
    s.once('close', () => held.delete(s));
  });
  server.on('upgrade', (req, socket: Socket) => {
    socket.on('error', () => socket.destroy());
    // Both read and ignore everything, the end of their input included (the server keeps sockets half-open).
    const ignore = req.url === '/silent' || req.url === '/mute';
    if (ignore) {
      ignoring.add(socket);
      socket.once('close', () => ignoring.delete(socket));
      socket.resume();
    }
    if (req.url === '/silent') return;
    socket.write('HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n');
    if (ignore) return;
    socket.pipe(socket);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return server;
}

describe('PortProxy connection bounds', () => {
  const cleanups: Array<() => Promise<void> | void> = [];
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });

  async function setup(limits: Partial<ProxyLimits>): Promise<{
    proxy: PortProxy;
    address: string;
    held: Set<Socket>;
    holding: Set<IncomingMessage>;
    /** The workspace's ends of `/silent` and `/mute` upgrades, open until they break. */
    ignoring: Set<Socket>;
    /** The path prefix of the public port of alice's workspace `shop` (whose IDE admits her only). */
    shopPort: string;
  }> {
    const held = new Set<Socket>();
    const holding = new Set<IncomingMessage>();
    // The IDEs, and (another server, as a port on a shared host must be nobody else's) shop's public port.
    const ignoring = new Set<Socket>();
    const workspace = await startWorkspace(held, holding, ignoring);
    const publicPort = await startWorkspace(held, holding, ignoring);
    cleanups.push(
      () =>
        new Promise<void>((r) => {
          for (const s of held) s.destroy();
          publicPort.close(() => workspace.close(() => r()));
        }),
    );
    const idePort = (workspace.address() as { port: number }).port;
    const shopPortNumber = (publicPort.address() as { port: number }).port;
    const running = (
      id: string,
      admission: 'everyone' | 'owner-only',
      owner = 'alice',
      ports: WorkspaceRecord['spec']['ports'] = [],
    ): WorkspaceRecord => {
      const base = makeRecord({ id, owner });
      return {
        ...base,
        phase: 'running',
        spec: { ...base.spec, admission, ports },
        progress: { ...base.progress, runtimeHost: '127.0.0.1', idePort },
      };
    };
    const records = [
      running('open', 'everyone'),
      running('private', 'owner-only'),
      running('other', 'everyone'),
      running('neighbour', 'everyone', 'bob'),
      running('shop', 'owner-only', 'alice', [
        { port: shopPortNumber, visibility: 'public', protocol: 'http', url: '' },
      ]),
    ];
    const proxy = new PortProxy({
      router: { getWorkspace: (id) => records.find((r) => r.id === id), allWorkspaces: () => records },
      address: '127.0.0.1:0',
      cookieName: 'workbay_owner',
      logger: createSilentLogger(),
      limits,
    });
    const address = await proxy.start();
    cleanups.push(() => proxy.stop());
    return { proxy, address, held, holding, ignoring, shopPort: `/ws/shop/port/${shopPortNumber}` };
  }

  /** A fresh, well-behaved request through the proxy to the workspace (`path`), with its answer. */
  async function answer(
    address: string,
    localAddress?: string,
    path = '/ws/open/',
    extraHeaders = '',
  ): Promise<RawResponse | undefined> {
    const client = await hostileClient(address, localAddress);
    client.socket.write(`GET ${path} HTTP/1.1\r\nhost: p\r\nconnection: close\r\n${extraHeaders}\r\n`);
    await waitFor('an answer', () => client.endedByProxy());
    client.socket.destroy();
    return parseRawResponse(client.text());
  }

  async function served(
    address: string,
    localAddress?: string,
    path?: string,
    extraHeaders?: string,
  ): Promise<number | undefined> {
    return (await answer(address, localAddress, path, extraHeaders))?.status;
  }

  /** Opens an upgrade through the proxy and waits for the workspace's answer to reach the client. */
  async function upgraded(address: string, localAddress: string, path: string, extra = ''): Promise<HostileClient> {
    const client = await hostileClient(address, localAddress);
    client.socket.write(upgradeHead(path, extra));
    await waitFor(`the answer to the upgrade of ${path}`, () => client.text().includes('\r\n\r\n'));
    return client;
  }

  it('closes refused upgrades although their clients never close', async () => {
    const { proxy, address } = await setup({ refusalGraceMs: 200 });
    const clients = await Promise.all(Array.from({ length: 20 }, () => hostileClient(address)));
    for (const c of clients) c.socket.write(upgradeHead('/ws/private/'));
    await waitFor('20 answers', () => clients.every((c) => c.text().includes('\r\n\r\n')));
    for (const c of clients) expect(parseRawResponse(c.text())?.status).toBe(401);
    // The clients hold their side open; the proxy must let go of its side anyway.
    await waitFor('the proxy to close every refused connection', () => proxy.connectionCount === 0);
    expect(clients.every((c) => !c.socket.destroyed)).toBe(true);
    for (const c of clients) c.socket.destroy();
    expect(await served(address)).toBe(200);
  });

  it('disconnects a slowloris client at the headers timeout, with 408', async () => {
    const { proxy, address } = await setup({ headersTimeoutMs: 500, requestTimeoutMs: 1_000, refusalGraceMs: 200 });
    const client = await hostileClient(address);
    client.socket.write('GET /ws/open/ HTTP/1.1\r\nhost: p\r\n');
    // Trickle header lines, each well within any per-read timeout, never finishing the head.
    const trickle = setInterval(() => {
      if (!client.endedByProxy()) client.socket.write('x-slow: 1\r\n');
    }, 50);
    cleanups.push(() => clearInterval(trickle));
    await waitFor('the proxy to close the slowloris connection', () => client.endedByProxy());
    expect(parseRawResponse(client.text())?.status).toBe(408);
    await waitFor('the proxy to let go of the socket', () => proxy.connectionCount === 0);
    clearInterval(trickle);
    client.socket.destroy();
    expect(await served(address)).toBe(200);
  });

  it('closes malformed requests and silent connections although their clients never close', async () => {
    const { proxy, address } = await setup({ headersTimeoutMs: 500, requestTimeoutMs: 1_000, refusalGraceMs: 200 });
    const malformed = await hostileClient(address);
    malformed.socket.write('GET /ws/%zz HTTP/1.1\r\nhost: \x01\r\n\r\n');
    const silent = await hostileClient(address);
    await waitFor('the proxy to close both', () => malformed.endedByProxy() && silent.endedByProxy());
    expect(parseRawResponse(malformed.text())?.status).toBe(400);
    await waitFor('the proxy to let go of both sockets', () => proxy.connectionCount === 0);
    malformed.socket.destroy();
    silent.socket.destroy();
    expect(await served(address)).toBe(200);
  });

  it('refuses connections beyond the per-address cap while other addresses get through', async () => {
    const { proxy, address } = await setup({ maxConnectionsPerAddress: 3 });
    const holders = await Promise.all(Array.from({ length: 3 }, () => hostileClient(address)));
    await waitFor('3 connections counted', () => proxy.connectionCount === 3);
    const over = await hostileClient(address);
    await waitFor('the proxy to close the connection over the cap', () => over.endedByProxy());
    const answer = parseRawResponse(over.text());
    // The 503 is best effort (the socket is destroyed at once); the close is what counts.
    if (answer) expect(answer.status).toBe(503);
    over.socket.destroy();
    // Another client address (all of 127/8 is loopback on Linux) is not affected by the first one's cap.
    expect(await served(address, '127.0.0.2')).toBe(200);
    for (const h of holders) h.socket.destroy();
    await waitFor('the holders to be gone', () => proxy.connectionCount === 0);
    expect(await served(address)).toBe(200);
  });

  it("gives a slowloris connection's slot to a real client when the server is full", async () => {
    const { proxy, address } = await setup({ maxConnections: 8 });
    // Eight clients from eight addresses (the per-address cap does not apply), each trickling a head it never ends.
    const slow = await Promise.all(Array.from({ length: 8 }, (_, i) => hostileClient(address, `127.0.3.${i + 1}`)));
    for (const c of slow) c.socket.write('GET /ws/open/ HTTP/1.1\r\nhost: p\r\n');
    await waitFor('8 connections counted', () => proxy.connectionCount === 8);
    // A real client still gets through, over and over: the first takes the slot of the longest-waiting slow one,
    // the next ones the slot each one before it gave back.
    for (let i = 0; i < 3; i++) expect(await served(address)).toBe(200);
    await waitFor('the longest-waiting to be closed', () => slow[0]!.endedByProxy());
    expect(slow.slice(1).some((c) => c.endedByProxy())).toBe(false);
    // Full again (a new slow one in the free slot), the next one takes the slot of the next longest-waiting.
    await waitFor('the real clients to be gone', () => proxy.connectionCount === 7);
    const late = await Promise.all([9, 10].map((i) => hostileClient(address, `127.0.3.${i}`)));
    await waitFor('the next longest-waiting to be closed', () => slow[1]!.endedByProxy());
    expect(slow.slice(2).some((c) => c.endedByProxy())).toBe(false);
    for (const c of late) c.socket.destroy();
    for (const c of slow) c.socket.destroy();
  });

  it('never takes the slot of a tunnel: with every connection busy, a new one gets 503', async () => {
    // The anonymous total (three quarters of the server's cap by default) off: the server-wide cap itself is tested.
    const { proxy, address } = await setup({ maxConnections: 4, maxAnonymousConnections: 0 });
    const tunnels = await Promise.all(Array.from({ length: 4 }, (_, i) => hostileClient(address, `127.0.4.${i + 1}`)));
    for (const t of tunnels) t.socket.write(upgradeHead('/ws/open/'));
    await waitFor('4 tunnels', () => tunnels.every((t) => t.text().includes('\r\n\r\n')));
    const over = await hostileClient(address);
    over.socket.write('GET /ws/open/ HTTP/1.1\r\nhost: p\r\nconnection: close\r\n\r\n');
    await waitFor('the proxy to close the connection over the cap', () => over.endedByProxy());
    const answer = parseRawResponse(over.text());
    // The 503 is best effort (the socket is destroyed at once); the close is what counts.
    if (answer) expect(answer.status).toBe(503);
    over.socket.destroy();
    expect(tunnels.some((t) => t.endedByProxy())).toBe(false);
    // A tunnel still carries traffic.
    tunnels[0]!.socket.write('ping');
    await waitFor('the echo', () => tunnels[0]!.text().endsWith('ping'));
    for (const t of tunnels) t.socket.destroy();
    await waitFor('the tunnels to be gone', () => proxy.connectionCount === 0);
    expect(await served(address)).toBe(200);
  });

  it("caps one workspace's busy connections without refusing other workspaces", async () => {
    const { proxy, address, holding } = await setup({ maxConnectionsPerWorkspace: 4 });
    // Four requests the workspace never answers, held open by clients that never close, from four addresses (the
    // per-address cap does not apply), as the red team's drip was.
    const holders = await Promise.all(Array.from({ length: 4 }, (_, i) => hostileClient(address, `127.0.5.${i + 1}`)));
    for (const h of holders) h.socket.write('GET /ws/open/hold HTTP/1.1\r\nhost: p\r\n\r\n');
    await waitFor('4 held requests at the workspace', () => holding.size === 4);
    // A fifth to the same workspace: 503, and the proxy closes it (the client never would).
    const over = await answer(address, '127.0.5.9');
    expect(over?.status).toBe(503);
    expect(over?.headers['retry-after']).toBe('10');
    // Another workspace is served, also when its request comes from one of the holders' addresses.
    expect(await served(address, '127.0.5.1', '/ws/other/')).toBe(200);
    expect(holders.some((h) => h.endedByProxy())).toBe(false);
    // One of the held requests goes away: the workspace is served again.
    holders[0]!.socket.destroy();
    await waitFor('the released request to be gone', () => holding.size === 3);
    expect(await served(address)).toBe(200);
    for (const h of holders) h.socket.destroy();
    await waitFor('the holders to be gone', () => proxy.connectionCount === 0);
  });

  it("caps one owner's workspaces together without refusing other owners", async () => {
    const { proxy, address, holding } = await setup({ maxConnectionsPerWorkspace: 4, maxConnectionsPerOwner: 3 });
    // Two held requests to one of alice's workspaces, one to another: her three, each workspace under its own cap.
    const holders = await Promise.all(Array.from({ length: 3 }, (_, i) => hostileClient(address, `127.0.6.${i + 1}`)));
    holders.forEach((h, i) => h.socket.write(`GET /ws/${i < 2 ? 'open' : 'other'}/hold HTTP/1.1\r\nhost: p\r\n\r\n`));
    await waitFor('3 held requests at the workspaces', () => holding.size === 3);
    for (const path of ['/ws/open/', '/ws/other/']) {
      const over = await answer(address, '127.0.6.9', path);
      expect(over?.status).toBe(503);
      expect(over?.rest).toMatch(/the owner of workspace \S+ has too many open connections/);
    }
    // Bob's workspace is served.
    expect(await served(address, '127.0.6.1', '/ws/neighbour/')).toBe(200);
    holders[2]!.socket.destroy();
    await waitFor('the released request to be gone', () => holding.size === 2);
    expect(await served(address, undefined, '/ws/other/')).toBe(200);
    for (const h of holders) h.socket.destroy();
    await waitFor('the holders to be gone', () => proxy.connectionCount === 0);
  });

  it('counts tunnels and upgrades in progress against the per-workspace cap', async () => {
    const { address, held, holding } = await setup({ maxConnectionsPerWorkspace: 4, refusalGraceMs: 200 });
    const tunnels = await Promise.all(Array.from({ length: 2 }, (_, i) => hostileClient(address, `127.0.6.${i + 1}`)));
    for (const t of tunnels) t.socket.write(upgradeHead('/ws/open/'));
    await waitFor('2 tunnels', () => tunnels.every((t) => t.text().includes('\r\n\r\n')));
    // An upgrade the workspace has not answered yet is busy too.
    const pending = await hostileClient(address, '127.0.6.3');
    pending.socket.write(upgradeHead('/ws/open/silent'));
    const holder = await hostileClient(address, '127.0.6.4');
    holder.socket.write('GET /ws/open/hold HTTP/1.1\r\nhost: p\r\n\r\n');
    await waitFor('the held request at the workspace', () => holding.size === 1);
    expect(await served(address)).toBe(503);
    // An upgrade over the cap is refused as a raw 503 and closed although its client never closes.
    const overUpgrade = await hostileClient(address, '127.0.6.5');
    overUpgrade.socket.write(upgradeHead('/ws/open/'));
    await waitFor('the proxy to close the refused upgrade', () => overUpgrade.endedByProxy());
    expect(parseRawResponse(overUpgrade.text())?.status).toBe(503);
    overUpgrade.socket.destroy();
    // Another workspace still gets its tunnel.
    const otherTunnel = await hostileClient(address, '127.0.6.6');
    otherTunnel.socket.write(upgradeHead('/ws/other/'));
    await waitFor('the 101', () => otherTunnel.text().includes('\r\n\r\n'));
    expect(parseRawResponse(otherTunnel.text())?.status).toBe(101);
    expect(tunnels.some((t) => t.endedByProxy())).toBe(false);
    // A tunnel closes: its slot is free again. The proxy releases the slot before it closes the tunnel's workspace
    // end, so once the workspace sees that close the slot is free.
    const open = held.size;
    tunnels[0]!.socket.destroy();
    await waitFor('the tunnel to be gone at the workspace', () => held.size === open - 1);
    expect(await served(address)).toBe(200);
    for (const c of [...tunnels, pending, holder, otherTunnel]) c.socket.destroy();
  });

  it('answers 504 and closes an upgrade the workspace never answers (handshake timeout)', async () => {
    const { proxy, address } = await setup({ handshakeTimeoutMs: 300, refusalGraceMs: 200 });
    const client = await hostileClient(address);
    client.socket.write(upgradeHead('/ws/open/silent'));
    // Bytes from the client do not extend the handshake.
    const trickle = setInterval(() => {
      if (!client.endedByProxy()) client.socket.write('x');
    }, 50);
    cleanups.push(() => clearInterval(trickle));
    await waitFor('the 504', () => client.text().includes('\r\n\r\n'));
    expect(parseRawResponse(client.text())?.status).toBe(504);
    clearInterval(trickle);
    await waitFor('the proxy to close the unanswered upgrade', () => proxy.connectionCount === 0);
    client.socket.destroy();
    expect(await served(address)).toBe(200);
  });

  it('keeps a tunnel with traffic open and closes it once idle', async () => {
    const { proxy, address } = await setup({ idleTimeoutMs: 1_000 });
    const client = await hostileClient(address);
    client.socket.write(upgradeHead('/ws/open/'));
    await waitFor('the 101', () => client.text().includes('\r\n\r\n'));
    expect(parseRawResponse(client.text())?.status).toBe(101);
    // Traffic for well over the idle timeout: the echo answers each byte, so both directions are busy.
    const started = Date.now();
    while (Date.now() - started < 2_500) {
      client.socket.write('p');
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(client.endedByProxy()).toBe(false);
    expect(client.text()).toMatch(/p{5,}$/);
    // Silence: the proxy closes the tunnel, whose client never would.
    await waitFor('the idle tunnel to be closed', () => client.endedByProxy() && proxy.connectionCount === 0);
    client.socket.destroy();
    expect(await served(address)).toBe(200);
  });

  it("keeps anonymous clients at a workspace's and an owner's caps from locking the owner out", async () => {
    // Red team round 7 (F3): 512 anonymous upgrades held on one public port of alice's workspace got her own IDE
    // (with her token) 503; 512 + 512 on two of her workspaces locked her out of a third without public ports.
    const { address, shopPort } = await setup({
      maxConnectionsPerWorkspace: 4,
      maxConnectionsPerOwner: 6,
      maxAuthenticatedConnectionsPerWorkspace: 2,
      maxAuthenticatedConnectionsPerOwner: 4,
      refusalGraceMs: 200,
    });
    const token = `x-workbay-owner-token: ${'x'.repeat(32)}\r\n`;
    // Anonymous tunnels, held open: four on shop's public port (shop's anonymous budget is full), two on alice's
    // workspace open to everyone (her anonymous budget of six is full), each from an address of its own.
    const anonymous: HostileClient[] = [];
    for (let i = 0; i < 6; i++) {
      anonymous.push(await upgraded(address, `127.0.7.${i + 1}`, i < 4 ? `${shopPort}/` : '/ws/open/'));
    }
    for (const c of anonymous) expect(parseRawResponse(c.text())?.status).toBe(101);
    // Anonymous requests beyond the caps get 503.
    const overWorkspace = await answer(address, '127.0.7.9', `${shopPort}/`);
    expect(overWorkspace?.status).toBe(503);
    expect(overWorkspace?.rest).toMatch(/workspace shop has too many open connections through/);
    const overOwner = await answer(address, '127.0.7.9', '/ws/other/');
    expect(overOwner?.status).toBe(503);
    expect(overOwner?.rest).toMatch(/the owner of workspace other has too many open connections through/);
    // The owner, with her token, is served: her IDE on shop, shop's public port, and her workspace without any
    // public traffic.
    expect(await served(address, '127.0.7.10', '/ws/shop/', token)).toBe(200);
    expect(await served(address, '127.0.7.10', `${shopPort}/`, token)).toBe(200);
    expect(await served(address, '127.0.7.10', '/ws/private/', token)).toBe(200);
    // Her IDE's WebSocket gets its tunnel, and it carries traffic.
    const ide = await upgraded(address, '127.0.7.10', '/ws/shop/', token);
    expect(parseRawResponse(ide.text())?.status).toBe(101);
    ide.socket.write('ping');
    await waitFor('the echo', () => ide.text().endsWith('ping'));
    // Bob is not affected either.
    expect(await served(address, '127.0.7.9', '/ws/neighbour/')).toBe(200);
    // Her own budget has a cap of its own: a second tunnel fills shop's (two), a third request gets 503.
    const second = await upgraded(address, '127.0.7.11', '/ws/shop/', token);
    expect(parseRawResponse(second.text())?.status).toBe(101);
    const overOwn = await answer(address, '127.0.7.11', '/ws/shop/', token);
    expect(overOwn?.status).toBe(503);
    expect(overOwn?.rest).toMatch(/workspace shop has too many open connections with the owner token/);
    // The anonymous budget is still full, and none of its tunnels was closed for the owner's.
    expect(await served(address, '127.0.7.9', `${shopPort}/`)).toBe(503);
    expect(anonymous.some((c) => c.endedByProxy())).toBe(false);
    for (const c of [...anonymous, ide, second]) c.socket.destroy();
  });

  it('frees the slots of clients that left, although their workspace never closes its side', async () => {
    // Red team round 7 (F4): the proxy passed the client's FIN on and kept the slot until the workspace closed its
    // side; an app that ignores the end of its input held it until the idle timeout (10 minutes, the default here).
    const { proxy, address, ignoring, holding } = await setup({ maxConnectionsPerWorkspace: 4, refusalGraceMs: 300 });
    // Three tunnels to an app that answers the upgrade and then never writes nor closes, and one upgrade it never
    // answers: the workspace's anonymous budget is full.
    const clients: HostileClient[] = [];
    for (let i = 0; i < 3; i++) clients.push(await upgraded(address, `127.0.8.${i + 1}`, '/ws/open/mute'));
    const pending = await hostileClient(address, '127.0.8.4');
    pending.socket.write(upgradeHead('/ws/open/silent'));
    clients.push(pending);
    await waitFor('4 connections at the workspace', () => ignoring.size === 4);
    expect(await served(address, '127.0.8.9')).toBe(503);
    // The clients leave: two close their sockets, two only end their side (and would go on reading).
    clients.forEach((c, i) => (i % 2 === 0 ? c.socket.destroy() : c.socket.end()));
    // Within a couple of seconds (the grace is 300 ms) the proxy has closed its ends, and the slots are free.
    await waitFor('the client connections to be gone', () => proxy.connectionCount === 0, 8_000);
    expect(clients.every((c) => c.endedByProxy())).toBe(true);
    expect(await served(address, '127.0.8.9')).toBe(200);
    // The workspace's ends were reset: the app, which stopped reading at the end of its input, learns it at its
    // next write (a FIN alone would have left them open, as the app never closes).
    expect(ignoring.size).toBe(4);
    for (const s of ignoring) s.write('late');
    await waitFor('the workspace ends to break', () => ignoring.size === 0, 8_000);
    // Requests the workspace never answers: their slots are free as soon as their clients leave, however they do.
    const holders: HostileClient[] = [];
    for (let i = 0; i < 4; i++) {
      const h = await hostileClient(address, `127.0.8.${i + 11}`);
      h.socket.write('GET /ws/open/hold HTTP/1.1\r\nhost: p\r\n\r\n');
      holders.push(h);
    }
    await waitFor('4 held requests at the workspace', () => holding.size === 4);
    expect(await served(address, '127.0.8.9')).toBe(503);
    holders.forEach((h, i) => (i % 2 === 0 ? h.socket.destroy() : h.socket.end()));
    await waitFor('the held requests to be gone at the workspace', () => holding.size === 0, 8_000);
    expect(await served(address, '127.0.8.9')).toBe(200);
    await waitFor('the client connections to be gone', () => proxy.connectionCount === 0, 8_000);
  });

  it('holds nothing for pipelined requests: one in flight per connection, all let go when the client leaves (red team round 12, P5)', async () => {
    const { proxy, address, holding } = await setup({ maxConnectionsPerWorkspace: 4, refusalGraceMs: 300 });
    // One connection, 20 requests written back to back to a path the workspace never answers.
    const client = await hostileClient(address, '127.0.9.1');
    client.socket.write('GET /ws/open/hold HTTP/1.1\r\nhost: p\r\n\r\n'.repeat(20));
    await waitFor('the first request at the workspace', () => holding.size === 1);
    await new Promise((r) => setTimeout(r, 300));
    // Only the first was forwarded (and counted): the workspace still serves other clients.
    expect(holding.size).toBe(1);
    expect(await served(address, '127.0.9.2')).toBe(200);
    // The client leaves: the request in flight is let go, and none of those behind it is started.
    client.socket.destroy();
    await waitFor('the held request to be gone at the workspace', () => holding.size === 0, 8_000);
    await new Promise((r) => setTimeout(r, 300));
    expect(holding.size).toBe(0);
    expect(await served(address, '127.0.9.2')).toBe(200);
    // More than 32 waiting behind one: the connection is closed, and nothing of it stays at the workspace.
    const flood = await hostileClient(address, '127.0.9.4');
    flood.socket.write('GET /ws/open/hold HTTP/1.1\r\nhost: p\r\n\r\n'.repeat(600));
    await waitFor('the proxy to close the flooding connection', () => flood.endedByProxy());
    await new Promise((r) => setTimeout(r, 300));
    expect(holding.size).toBe(0);
    expect(await served(address, '127.0.9.2')).toBe(200);
    await waitFor('the client connections to be gone', () => proxy.connectionCount === 0, 8_000);
  });

  it('answers pipelined requests in order, one after the other', async () => {
    const { address } = await setup({});
    const client = await hostileClient(address, '127.0.9.3');
    client.socket.write(
      `${'GET /ws/open/ HTTP/1.1\r\nhost: p\r\n\r\n'.repeat(3)}GET /ws/open/ HTTP/1.1\r\nhost: p\r\nconnection: close\r\n\r\n`,
    );
    await waitFor('four answers', () => client.endedByProxy());
    expect(client.text().match(/HTTP\/1\.1 200/g)?.length).toBe(4);
    client.socket.destroy();
  });
});
