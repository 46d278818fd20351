/**
 * A hostile workspace and a careless client against the real proxy, real sockets on 127.0.0.1: the workspace may
 * not plant owner cookies (HTTP answers and every spelling of a handshake answer), a non-101 answer to an upgrade
 * is answered as HTTP and closed instead of becoming a raw pipe, and the owner token (also inside Basic
 * credentials) and the client's own address claims never reach the workspace. Normal WebSockets and cookies work.
 */
import { createServer } from 'node:http';
import type { Server } from 'node:http';
import { connect, createServer as createTcpServer } from 'node:net';
import type { Socket, Server as TcpServer } from 'node:net';
import { Subject } from 'rxjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { WorkspaceRecord } from '../domain/types.js';
import { createSilentLogger } from '../logger.js';
import { hostPort, parseRawResponse, sendRaw } from '../test-support/raw-http.js';
import { makeRecord } from '../test-support/records.js';
import { PortProxy } from './port-proxy.js';

const token = `Ab3_xY-9${'q'.repeat(24)}`;
/** Another owner's token (alice's), never to reach a workspace of mallory's. */
const aliceToken = `Zz9-${'a'.repeat(28)}`;
const planted = [
  'workbay_owner_victim=PLANTED; Path=/ws/victim/',
  '=workbay_owner_victim=NAMELESS; Path=/ws/victim/',
  ' Workbay_Owner_evil=PLANTED',
  'mine=ok; Path=/',
];

/** What the raw workspace answers to an upgrade, by request path. */
const answers: Record<string, string> = {
  '/crlf': `HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n${planted.map((c) => `set-cookie: ${c}\r\n`).join('')}\r\n`,
  '/lf': `HTTP/1.1 101 Switching Protocols\nupgrade: websocket\nconnection: Upgrade\n${planted.map((c) => `Set-Cookie: ${c}\n`).join('')}\n`,
  '/mixed': `HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\nSet-Cookie: workbay_owner_victim=PLANTED; Path=/ws/victim/\n\r\n`,
  '/continue':
    'HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n' +
    'Set-Cookie: workbay_owner_victim=PLANTED; Path=/ws/victim/\r\n\r\n',
  '/early-hints': 'HTTP/1.1 103 Early Hints\r\nSet-Cookie: workbay_owner_victim=PLANTED\r\n\r\n',
  '/bare-cr':
    'HTTP/1.1 101 Switching Protocols\r\nx-a: 1\rSet-Cookie: workbay_owner_victim=PLANTED; Path=/ws/victim/\r\n\r\n',
  '/fold': 'HTTP/1.1 101 Switching Protocols\r\nx-a: 1\r\n Set-Cookie: workbay_owner_victim=PLANTED\r\n\r\n',
  '/forbidden':
    'HTTP/1.1 403 Forbidden\r\nContent-Length: 4\r\nSet-Cookie: workbay_owner_victim=PLANTED\r\nSet-Cookie: mine=ok\r\n' +
    'connection: keep-alive\r\n\r\nnopeHTTP/1.1 200 OK\r\nSet-Cookie: workbay_owner_victim=SMUGGLED\r\n\r\n',
  '/chunked': 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n',
  '/close-delimited': 'HTTP/1.1 200 OK\r\n\r\nraw bytes until close',
  '/not-http': 'SSH-2.0-OpenSSH_9.6\r\n\r\n',
};

/** A raw TCP workspace: answers upgrades as `answers` says (`/hangup`: closes), then echoes what it receives. */
async function startRawWorkspace(held: Set<Socket>): Promise<TcpServer> {
  const server = createTcpServer((socket) => {
    held.add(socket);
    socket.once('close', () => held.delete(socket));
    socket.on('error', () => socket.destroy());
    let text = '';
    let answered = false;
    socket.on('data', (chunk: Buffer) => {
      if (answered) {
        socket.write(chunk);
        return;
      }
      text += chunk.toString('latin1');
      if (!text.includes('\r\n\r\n')) return;
      answered = true;
      const path = /^GET \/?([^ ]*) /.exec(text)?.[1] ?? '';
      if (path === 'hangup') return void socket.destroy();
      socket.write(answers[`/${path}`] ?? 'HTTP/1.1 500 Nope\r\ncontent-length: 0\r\n\r\n');
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return server;
}

/** An HTTP workspace: plants cookies on HTTP answers, echoes the request head as JSON, and speaks a real upgrade. */
async function startHttpWorkspace(held: Set<Socket>): Promise<Server> {
  const server = createServer((req, res) => {
    res.setHeader('set-cookie', planted);
    // Headers acting on the whole origin (red team round 9): never relayed.
    res.setHeader('clear-site-data', '"cookies", "storage"');
    res.setHeader('service-worker-allowed', '/');
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify({ url: req.url, headers: req.headers }));
  });
  server.on('connection', (s: Socket) => {
    held.add(s);
    s.once('close', () => held.delete(s));
  });
  server.on('upgrade', (req, socket: Socket) => {
    socket.on('error', () => socket.destroy());
    socket.write(
      'HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n' +
        `x-echo-url: ${req.url}\r\nset-cookie: session=abc; Path=/; HttpOnly\r\nclear-site-data: "cookies"\r\n` +
        `x-echo-names: ${Object.keys(req.headers).sort().join(',')}\r\n\r\n`,
    );
    socket.pipe(socket);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return server;
}

interface Exchange {
  readonly text: string;
  /** The proxy closed the connection (within the cap). */
  readonly closedByProxy: boolean;
}

/** Writes `bytes`, optionally `then` after the first answer head, and reads until the proxy closes (or `capMs`). */
function exchange(address: string, bytes: string, then?: string, capMs = 5_000): Promise<Exchange> {
  return new Promise((resolve) => {
    const { host, port } = hostPort(address);
    const socket = connect({ host, port, allowHalfOpen: true }, () => socket.write(bytes));
    let text = '';
    let sent = false;
    const timer = setTimeout(() => {
      socket.destroy();
      resolve({ text, closedByProxy: false });
    }, capMs);
    socket.on('data', (c: Buffer) => {
      text += c.toString('latin1');
      if (then !== undefined && !sent && text.includes('\r\n\r\n')) {
        sent = true;
        socket.write(then);
      }
      if (then !== undefined && sent && text.endsWith(then)) {
        clearTimeout(timer);
        socket.destroy();
        resolve({ text, closedByProxy: false });
      }
    });
    socket.on('error', () => undefined);
    socket.on('end', () => {
      clearTimeout(timer);
      socket.destroy();
      resolve({ text, closedByProxy: true });
    });
    socket.on('close', () => {
      clearTimeout(timer);
      resolve({ text, closedByProxy: true });
    });
  });
}

const upgrade = (id: string, path: string, extra = ''): string =>
  `GET /ws/${id}${path} HTTP/1.1\r\nhost: p\r\nconnection: Upgrade\r\nupgrade: websocket\r\n` +
  `sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n${extra}\r\n`;

describe('PortProxy against a hostile workspace and careless clients', () => {
  const held = new Set<Socket>();
  const servers: Array<{ close(cb: () => void): void }> = [];
  let proxy: PortProxy;
  let address: string;
  let records: WorkspaceRecord[];
  const status$ = new Subject<WorkspaceRecord>();

  beforeAll(async () => {
    const raw = await startRawWorkspace(held);
    const http = await startHttpWorkspace(held);
    servers.push(raw, http);
    const running = (id: string, port: number, admission: 'everyone' | 'owner-only'): WorkspaceRecord => {
      const base = makeRecord({ id, ownerToken: token });
      return {
        ...base,
        phase: 'running',
        spec: { ...base.spec, admission },
        progress: { ...base.progress, runtimeHost: '127.0.0.1', idePort: port },
      };
    };
    records = [
      running('evil', (raw.address() as { port: number }).port, 'everyone'),
      running('app', (http.address() as { port: number }).port, 'owner-only'),
      running('public', (http.address() as { port: number }).port, 'everyone'),
      makeRecord({ id: 'alice', owner: 'alice', ownerToken: aliceToken }),
    ];
    proxy = new PortProxy({
      router: { getWorkspace: (id) => records.find((r) => r.id === id), allWorkspaces: () => records },
      address: '127.0.0.1:0',
      cookieName: 'workbay_owner',
      logger: createSilentLogger(),
      limits: { refusalGraceMs: 500, handshakeTimeoutMs: 3_000 },
    });
    address = await proxy.start();
    proxy.follow(status$);
  });
  afterAll(async () => {
    await proxy?.stop();
    for (const s of held) s.destroy();
    await Promise.all(servers.map((s) => new Promise<void>((r) => s.close(() => r()))));
  });

  describe('WebSocket handshake answers', () => {
    for (const path of ['/crlf', '/lf', '/mixed']) {
      it(`a 101 (${path.slice(1)} line ends) reaches the client re-serialised, without owner cookies, and tunnels`, async () => {
        const result = await exchange(address, upgrade('evil', path), 'ping');
        const response = parseRawResponse(result.text)!;
        expect(response.status).toBe(101);
        expect(result.text.toLowerCase()).not.toContain('workbay_owner');
        // Every line of the relayed head ends in CRLF: what the client parses is what the proxy filtered.
        const head = result.text.slice(0, result.text.indexOf('\r\n\r\n'));
        expect(head).not.toMatch(/[^\r]\n|\r[^\n]/);
        // The workspace's own cookie, kept below its own prefix (it sees its paths without it).
        if (path !== '/mixed') expect(response.headers['set-cookie']).toBe('mine=ok; Path=/ws/evil/');
        expect(response.rest).toBe('ping');
      });
    }

    for (const path of [
      '/continue',
      '/early-hints',
      '/bare-cr',
      '/fold',
      '/chunked',
      '/close-delimited',
      '/not-http',
    ]) {
      it(`${path.slice(1)}: refused with 502 and closed, nothing of the workspace's answer passed on`, async () => {
        const result = await exchange(address, upgrade('evil', path));
        expect(result.closedByProxy).toBe(true);
        expect(parseRawResponse(result.text)?.status).toBe(502);
        expect(result.text.toLowerCase()).not.toContain('workbay_owner');
        expect(result.text).not.toMatch(/HTTP\/1\.1 10[13]|raw bytes|SSH-2\.0/);
      });
    }

    it('a workspace that closes without answering gets the client a 502', async () => {
      const result = await exchange(address, upgrade('evil', '/hangup'));
      expect(result.closedByProxy).toBe(true);
      expect(parseRawResponse(result.text)?.status).toBe(502);
    });

    it('a non-101 answer is relayed filtered with its body, then the connection is closed (no raw pipe)', async () => {
      const result = await exchange(address, upgrade('evil', '/forbidden'));
      expect(result.closedByProxy).toBe(true);
      const response = parseRawResponse(result.text)!;
      expect(response.status).toBe(403);
      expect(response.headers['set-cookie']).toBe('mine=ok');
      expect(response.headers.connection).toBe('close');
      expect(response.headers['content-length']).toBe('4');
      // The body, and nothing after it: the second head the workspace appended is not passed on.
      expect(response.rest).toBe('nope');
      expect(result.text).not.toContain('SMUGGLED');
    });

    it('a normal WebSocket upgrade still works, with the owner token stripped and normal cookies kept', async () => {
      const result = await exchange(
        address,
        upgrade('app', '/socket?workbayOwnerToken=' + token + '&a=1', `cookie: workbay_owner_app=${token}\r\n`),
        'hello',
      );
      const response = parseRawResponse(result.text)!;
      expect(response.status).toBe(101);
      expect(response.headers['x-echo-url']).toBe('/socket?a=1');
      expect(response.headers['set-cookie']).toBe('session=abc; Path=/ws/app/; HttpOnly');
      expect(response.headers['clear-site-data']).toBeUndefined();
      expect(response.rest).toBe('hello');
    });
  });

  describe('HTTP answers', () => {
    it('owner cookies in every spelling (also nameless) are dropped; normal cookies pass', async () => {
      const answer = await sendRaw(
        address,
        `GET /ws/app/ HTTP/1.1\r\nhost: p\r\nx-workbay-owner-token: ${token}\r\n\r\n`,
      );
      const response = parseRawResponse(answer.raw)!;
      expect(response.status).toBe(200);
      expect(response.headers['set-cookie']).toBe('mine=ok; Path=/ws/app/');
      expect(response.headers['clear-site-data']).toBeUndefined();
      expect(response.headers['service-worker-allowed']).toBeUndefined();
    });
  });

  describe('request headers', () => {
    const b64 = (text: string): string => Buffer.from(text).toString('base64');
    const echoed = async (headers: string): Promise<Record<string, string | undefined>> => {
      const answer = await sendRaw(
        address,
        `GET /ws/app/x HTTP/1.1\r\nhost: p\r\nx-workbay-owner-token: ${token}\r\n${headers}\r\n`,
      );
      const response = parseRawResponse(answer.raw)!;
      expect(response.status).toBe(200);
      expect(response.rest).not.toContain(token);
      return (JSON.parse(response.rest) as { headers: Record<string, string | undefined> }).headers;
    };

    it('two Host headers are a 400, in either case (red team round 15: the first one chose the workspace)', async () => {
      for (const hosts of ['host: p\r\nhost: q\r\n', 'Host: p\r\nHOST: p\r\n']) {
        const answer = await sendRaw(address, `GET /ws/public/x HTTP/1.1\r\n${hosts}\r\n`);
        expect(parseRawResponse(answer.raw)?.status, hosts).toBe(400);
        expect(answer.raw).toContain('more than one Host header');
      }
    });

    for (const [name, credentials] of [
      ['user:token', b64(`user:${token}`)],
      ['token:', b64(`${token}:`)],
      ['base64url, unpadded', b64(`u:${token}`).replace(/=+$/, '').replace(/\+/g, '-').replace(/\//g, '_')],
    ] as const) {
      it(`Authorization: Basic carrying the owner token (${name}) is not forwarded`, async () => {
        const headers = await echoed(`authorization: Basic ${credentials}\r\n`);
        expect(headers.authorization).toBeUndefined();
      });
    }

    it("another owner's token reaches no workspace, in any header, cookie, query value or Basic credentials (red team round 8)", async () => {
      const b64url = (text: string): string => Buffer.from(text).toString('base64url');
      const answer = await sendRaw(
        address,
        `GET /ws/public/t1?x=${aliceToken}&y=${encodeURIComponent(encodeURIComponent(aliceToken))}&keep=1 HTTP/1.1\r\n` +
          'host: p\r\n' +
          `cookie: sess=${aliceToken}; other=fine\r\n` +
          `referer: http://p/ws/alice/?workbayOwnerToken=${aliceToken}\r\n` +
          `authorization: Basic ${b64url(`alice:${aliceToken}`)}\r\n` +
          `x-custom: prefix-${aliceToken}\r\n` +
          'x-plain: kept\r\n\r\n',
      );
      const response = parseRawResponse(answer.raw)!;
      expect(response.status).toBe(200);
      expect(response.rest).not.toContain(aliceToken);
      const { url, headers } = JSON.parse(response.rest) as {
        url: string;
        headers: Record<string, string | undefined>;
      };
      expect(url).toBe('/t1?keep=1');
      expect(headers.cookie).toBe('other=fine');
      expect(headers.referer).toBeUndefined();
      expect(headers.authorization).toBeUndefined();
      expect(headers['x-custom']).toBeUndefined();
      expect(headers['x-plain']).toBe('kept');
    });

    it('the token of a workspace created a moment ago is stripped from the first request that carries it', async () => {
      // The proxy's view of the tokens is built by the first request and kept a while (a pass over every record);
      // carol's workspace appears right after it, as the manager creates one: record, then its first status.
      await echoed('x-plain: warm\r\n');
      const carolToken = `Cc7_${'c'.repeat(28)}`;
      const carol = makeRecord({ id: 'carol', owner: 'carol', ownerToken: carolToken });
      records.push(carol);
      status$.next(carol);
      const headers = await echoed(`x-custom: ${carolToken}\r\n`);
      expect(headers['x-custom']).toBeUndefined();
    });

    it('a Referer naming the token parameter is dropped whatever its value (a token the proxy does not know yet)', async () => {
      const headers = await echoed(`referer: http://p/ws/new/?a=1&WorkbayOwnerToken=unknown-yet#x\r\n`);
      expect(headers.referer).toBeUndefined();
      const kept = await echoed(`referer: http://p/ws/app/page?a=1\r\n`);
      expect(kept.referer).toBe('http://p/ws/app/page?a=1');
    });

    it('other Basic credentials still reach the workspace', async () => {
      const headers = await echoed(`authorization: Basic ${b64('user:password')}\r\n`);
      expect(headers.authorization).toBe(`Basic ${b64('user:password')}`);
    });

    it('the client cannot claim an address: Forwarded and X-Real-IP are dropped, x-forwarded-* rewritten', async () => {
      const headers = await echoed(
        'forwarded: for=10.0.0.1;proto=https\r\nx-real-ip: 10.0.0.1\r\nx-forwarded-proto: https\r\n',
      );
      expect(headers.forwarded).toBeUndefined();
      expect(headers['x-real-ip']).toBeUndefined();
      expect(headers['x-forwarded-proto']).toBe('http');
      expect(headers['x-forwarded-for']).toMatch(/127\.0\.0\.1$/);
    });

    it('the same holds on the WebSocket path', async () => {
      const result = await exchange(
        address,
        upgrade(
          'app',
          '/s',
          `x-workbay-owner-token: ${token}\r\nauthorization: Basic ${b64(`u:${token}`)}\r\n` +
            'forwarded: for=10.0.0.1\r\nx-real-ip: 10.0.0.1\r\n',
        ),
        'x',
      );
      const response = parseRawResponse(result.text)!;
      expect(response.status).toBe(101);
      const names = response.headers['x-echo-names']!.split(',');
      expect(names).toContain('upgrade');
      for (const name of ['authorization', 'forwarded', 'x-real-ip', 'x-workbay-owner-token']) {
        expect(names).not.toContain(name);
      }
    });
  });
});
