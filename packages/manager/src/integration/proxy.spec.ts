import { request } from 'node:http';
import { connect, createServer } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { wsman } from '@workbay/api';
import { startHarness, startRequest, waitForPhase } from '../test-support/harness.js';
import type { Harness } from '../test-support/harness.js';

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => resolve(typeof address === 'object' && address ? address.port : 0));
    });
  });
}

interface Echo {
  server: string;
  method: string;
  url: string;
  headers: Record<string, string>;
  body: string;
}

describe('port proxy with admission', () => {
  let h: Harness;
  let id: string;
  let token: string;
  let echoPort: number;
  let base: string;

  beforeAll(async () => {
    h = await startHarness({ config: { proxy: { address: '127.0.0.1:0', domain: 'ws.test' } } });
    echoPort = await freePort();
    const request = startRequest({
      image: 'test/echo',
      spec: {
        envvars: [{ name: 'ECHO_PORT', value: String(echoPort) }],
        ports: [{ port: echoPort, visibility: wsman.PortVisibility.PORT_VISIBILITY_PRIVATE, url: '', protocol: 0 }],
      },
    });
    id = request.id;
    token = (await h.client.startWorkspace(request)).ownerToken;
    await waitForPhase(h.client, id, 'running');
    base = `http://${h.running.proxyAddress}`;
  });
  afterAll(async () => {
    await h?.close();
  });

  const get = (path: string, headers: Record<string, string> = {}, init: RequestInit = {}) =>
    fetch(`${base}${path}`, { headers, redirect: 'manual', ...init });

  it('routes the workspace URL to the IDE, for the owner token only', async () => {
    const noToken = await get(`/ws/${id}/hello?x=1`);
    expect(noToken.status).toBe(401);
    expect(await noToken.text()).toMatch(/admits its owner only/);
    const wrong = await get(`/ws/${id}/hello`, { 'x-workbay-owner-token': 'nope' });
    expect(wrong.status).toBe(403);
    expect(await wrong.text()).toMatch(/does not match/);

    const ok = await get(`/ws/${id}/hello?x=1`, { 'x-workbay-owner-token': token, cookie: 'other=1' });
    expect(ok.status).toBe(200);
    const echo = (await ok.json()) as Echo;
    expect(echo.server).toBe('ide');
    expect(echo.url).toBe('/hello?x=1');
    // The token never reaches the workspace; other cookies do.
    expect(echo.headers['x-workbay-owner-token']).toBeUndefined();
    expect(echo.headers.cookie).toBe('other=1');
    expect(echo.headers['x-forwarded-prefix']).toBe(`/ws/${id}`);
  });

  it('a token in the query sets a cookie and redirects to the URL without it', async () => {
    const first = await get(`/ws/${id}/page?a=b&workbayOwnerToken=${token}`);
    expect(first.status).toBe(303);
    expect(first.headers.get('location')).toBe(`/ws/${id}/page?a=b`);
    const cookie = first.headers.get('set-cookie')!;
    expect(cookie).toMatch(/HttpOnly/);
    expect(cookie).toContain(`Path=/ws/${id}/`);
    const withCookie = await get(`/ws/${id}/page?a=b`, { cookie: cookie.split(';')[0]! });
    expect(withCookie.status).toBe(200);
    const echo = (await withCookie.json()) as Echo;
    expect(echo.url).toBe('/page?a=b');
    expect(echo.headers.cookie).toBeUndefined();
  });

  it('forwards methods and bodies', async () => {
    const res = await get(
      `/ws/${id}/api`,
      { 'x-workbay-owner-token': token, 'content-type': 'text/plain' },
      { method: 'POST', body: 'payload' },
    );
    const echo = (await res.json()) as Echo;
    expect(echo).toMatchObject({ method: 'POST', body: 'payload', url: '/api' });
  });

  it('exposed ports: private needs the owner, public is open, unexposed is 404', async () => {
    const path = `/ws/${id}/port/${echoPort}/x`;
    expect((await get(path)).status).toBe(401);
    const owner = await get(path, { 'x-workbay-owner-token': token });
    expect(((await owner.json()) as Echo).server).toBe('echo');
    await h.client.controlPort({
      id,
      expose: true,
      spec: { port: echoPort, visibility: wsman.PortVisibility.PORT_VISIBILITY_PUBLIC, url: '', protocol: 0 },
    });
    const open = await get(path);
    expect(open.status).toBe(200);
    expect(((await open.json()) as Echo).url).toBe('/x');
    // The IDE stays owner-only.
    expect((await get(`/ws/${id}/`)).status).toBe(401);
    const notExposed = await get(`/ws/${id}/port/1/`, { 'x-workbay-owner-token': token });
    expect(notExposed.status).toBe(404);
    expect(await notExposed.text()).toMatch(/not exposed/);
    await h.client.controlPort({ id, expose: false, spec: { port: echoPort, visibility: 0, url: '', protocol: 0 } });
    expect((await get(path, { 'x-workbay-owner-token': token })).status).toBe(404);
    await h.client.controlPort({
      id,
      expose: true,
      spec: { port: echoPort, visibility: wsman.PortVisibility.PORT_VISIBILITY_PRIVATE, url: '', protocol: 0 },
    });
  });

  it('ADMIT_EVERYONE opens the workspace and its ports', async () => {
    await h.client.controlAdmission({ id, level: wsman.AdmissionLevel.ADMIT_EVERYONE });
    expect((await get(`/ws/${id}/`)).status).toBe(200);
    expect((await get(`/ws/${id}/port/${echoPort}/`)).status).toBe(200);
    await h.client.controlAdmission({ id, level: wsman.AdmissionLevel.ADMIT_OWNER_ONLY });
    expect((await get(`/ws/${id}/`)).status).toBe(401);
  });

  it('routes by Host header: <id>.ws.<domain> and <port>-<id>.ws.<domain>', async () => {
    // fetch does not let a caller set Host; node:http does.
    const viaHost = (path: string, host: string): Promise<Echo> =>
      new Promise((resolve, reject) => {
        const [hostname, port] = h.running.proxyAddress.split(':');
        const req = request(
          { hostname, port: Number(port), path, headers: { host, 'x-workbay-owner-token': token } },
          (res) => {
            let body = '';
            res.on('data', (c: Buffer) => (body += c.toString()));
            res.on('end', () => resolve(JSON.parse(body) as Echo));
          },
        );
        req.on('error', reject);
        req.end();
      });
    expect((await viaHost('/via-host', `${id}.ws.ws.test`)).server).toBe('ide');
    expect(await viaHost('/p', `${echoPort}-${id}.ws.ws.test:7780`)).toMatchObject({ server: 'echo', url: '/p' });
  });

  it('refuses ids that host routing cannot serve as one lower-case label, and starts nothing (red team round 14)', async () => {
    // `evil.<id>` would be a subdomain of the running workspace (its pages could set cookies for it); `Up-<id>` is
    // served at `up-<id>`, another id, perhaps another owner's.
    // `8080-<id>` is read as port 8080 of `<id>` (round 14b, R1); `xn--` shows as Unicode, a lookalike of another id.
    for (const bad of [`evil.${id}`, `Up-${id}`, 'x'.repeat(58), `8080-${id}`, `1-x`, 'xn--80ak6aa92e']) {
      const refused = await h.client.startWorkspace(startRequest({ id: bad })).then(
        () => undefined,
        (error: Error & { code?: string }) => error,
      );
      expect(refused?.code, bad).toBe('invalid-argument');
      expect(refused?.message).toContain('is not one DNS label');
      await expect(h.client.describeWorkspace({ id: bad })).rejects.toMatchObject({ code: 'not-found' });
    }
  });

  it('unknown workspaces and non-workspace URLs are 404; a missing slash redirects', async () => {
    expect((await get('/ws/nobody/')).status).toBe(404);
    expect((await get('/elsewhere')).status).toBe(404);
    const redirect = await get(`/ws/${id}`);
    expect(redirect.status).toBe(308);
    expect(redirect.headers.get('location')).toBe(`/ws/${id}/`);
  });

  it('proxies WebSocket upgrades after admission', async () => {
    const upgrade = (headers: string): Promise<string> =>
      new Promise((resolve, reject) => {
        const [host, port] = h.running.proxyAddress.split(':');
        const socket = connect(Number(port), host!, () => {
          socket.write(
            `GET /ws/${id}/port/${echoPort}/socket HTTP/1.1\r\nhost: ${h.running.proxyAddress}\r\nconnection: Upgrade\r\nupgrade: websocket\r\n${headers}\r\n`,
          );
        });
        let data = '';
        socket.on('data', (chunk) => {
          data += chunk.toString();
          if (data.includes('\r\n\r\n') && !data.startsWith('HTTP/1.1 101')) {
            socket.destroy();
            resolve(data);
          } else if (data.includes('\r\n\r\n') && !data.includes('ping')) {
            socket.write('ping');
          } else if (data.includes('ping')) {
            socket.destroy();
            resolve(data);
          }
        });
        socket.on('error', reject);
      });
    expect(await upgrade('')).toMatch(/^HTTP\/1.1 401/);
    const ok = await upgrade(`x-workbay-owner-token: ${token}\r\n`);
    expect(ok).toMatch(/^HTTP\/1.1 101/);
    expect(ok).toContain('x-echo-url: /socket');
    expect(ok.endsWith('ping')).toBe(true);
  });

  it('a workspace that is not running answers 503, then 404 once it is gone', async () => {
    await h.client.stopWorkspace({ id, policy: wsman.StopWorkspacePolicy.ABORT });
    await waitForPhase(h.client, id, 'stopped');
    const res = await get(`/ws/${id}/`, { 'x-workbay-owner-token': token });
    expect(res.status).toBe(503);
    expect(await res.text()).toMatch(/not running \(phase stopped\)/);
  });
});
