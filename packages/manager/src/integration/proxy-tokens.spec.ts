/**
 * The owner token never reaches the workspace, in any spelling, and the proxy never redirects to another site:
 * attacks against the real manager with a workspace that echoes everything it receives.
 */
import { wsman } from '@workbay/api';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startHarness, startRequest, testImages, waitForPhase } from '../test-support/harness.js';
import type { Harness } from '../test-support/harness.js';
import { parseRawResponse, sendRaw } from '../test-support/raw-http.js';

/** Percent-encodes every character (`%41%42…`), a spelling no browser produces but every server decodes. */
const encodeAll = (text: string): string =>
  [...Buffer.from(text)].map((b) => `%${b.toString(16).toUpperCase().padStart(2, '0')}`).join('');

/** The same as the proxy's cookie name rule. */
const cookieOf = (id: string): string => `workbay_owner_${id.replace(/[^A-Za-z0-9_-]/g, '_')}`;

/** A hostile workspace: its answers (HTTP and handshake) try to plant owner cookies, its own and another's. */
const cookiePlanter = `
const http = require('node:http');
const cookies = ['workbay_owner_victim=planted; Path=/ws/victim/', 'Workbay_Owner_x=planted', 'mine=ok; Path=/'];
const server = http.createServer((req, res) => {
  res.setHeader('set-cookie', cookies);
  res.end('planted');
});
server.on('upgrade', (req, socket) => {
  socket.write('HTTP/1.1 101 Switching Protocols\\r\\nupgrade: websocket\\r\\nconnection: Upgrade\\r\\n' +
    cookies.map((c) => 'set-cookie: ' + c + '\\r\\n').join('') + '\\r\\nafter-head');
  socket.pipe(socket);
});
server.listen(Number(process.env.PORT), '127.0.0.1');
process.on('SIGTERM', () => process.exit(0));
`;

describe('proxy: the owner token stays with the proxy, redirects stay on the site', () => {
  let h: Harness;
  let id: string;
  let token: string;

  beforeAll(async () => {
    h = await startHarness({
      config: {
        proxy: { address: '127.0.0.1:0', domain: 'ws.test' },
        runtime: {
          kind: 'local',
          isolation: 'none',
          cgroups: 'off',
          readiness: { intervalMs: 50 },
          exitPollIntervalMs: 100,
          images: { ...testImages, 'test/cookie-planter': { command: [process.execPath, '-e', cookiePlanter] } },
        },
      },
    });
    const request = startRequest({ image: 'test/echo' });
    id = request.id;
    token = (await h.client.startWorkspace(request)).ownerToken;
    await waitForPhase(h.client, id, 'running');
  });
  afterAll(async () => {
    await h?.close();
  });

  /** Sends a raw request; returns the status, headers and the echoed request (when the workspace answered). */
  async function send(method: string, target: string, headers: Record<string, string> = {}, host = 'proxy.test') {
    const lines = Object.entries({ host, ...headers }).map(([k, v]) => `${k}: ${v}\r\n`);
    const body = method === 'POST' ? 'x' : '';
    const extra = body ? `content-length: ${body.length}\r\n` : '';
    const answer = await sendRaw(
      h.running.proxyAddress,
      `${method} ${target} HTTP/1.1\r\n${lines.join('')}${extra}\r\n${body}`,
    );
    const response = parseRawResponse(answer.raw);
    expect(response, `no answer to ${target}`).toBeDefined();
    return response!;
  }

  /** Asserts the workspace answered and that nothing of the token reached it; returns the URL it saw. */
  function echoedWithoutToken(response: { status: number; rest: string }): string {
    expect(response.status).toBe(200);
    const echo = JSON.parse(response.rest) as { server: string; url: string };
    expect(echo.server).toBe('ide');
    // The echo holds the URL, every header and the body the workspace received.
    expect(response.rest).not.toContain(token);
    expect(decodeURIComponent(response.rest.replace(/%(?![0-9A-Fa-f]{2})/g, '%25'))).not.toContain(token);
    expect(response.rest.toLowerCase()).not.toContain('workbayownertoken');
    return echo.url;
  }

  const auth = (): Record<string, string> => ({ 'x-workbay-owner-token': token });

  it('strips the query parameter in every spelling', async () => {
    const spellings = [
      `workbayOwnerToken=${token}`,
      `WORKBAYOWNERTOKEN=${token}`,
      `workbayownertoken=${token}`,
      `workbay%4FwnerToken=${token}`,
      `%77orkbayOwnerToken=${token}`,
      `%2577orkbayOwnerToken=${token}`,
      `${encodeAll('workbayOwnerToken')}=${encodeAll(token)}`,
      `workbayOwnerToken%3D${token}`,
      `workbayOwnerToken%253D${token}`,
      `workbayOwnerToken+=${token}`,
      `workbayOwnerToken=${token}&workbayOwnerToken=${token}`,
      `workbayOwnerToken=wrong&workbayOwnerToken=${token}`,
      `workbayOwnerToken[]=${token}`,
      `other=${token}`,
      `other=${encodeAll(token)}`,
    ];
    for (const spelling of spellings) {
      for (const sep of ['&', ';']) {
        // POST: the proxy forwards (a GET with the right token is answered with a redirect, tested below).
        const response = await send('POST', `/ws/${id}/echo?a=1${sep}${spelling}${sep}b=2`, auth());
        expect(echoedWithoutToken(response), spelling).toBe(`/echo?a=1${sep}b=2`);
      }
      const onlyToken = await send('POST', `/ws/${id}/echo?${spelling}`, auth());
      expect(echoedWithoutToken(onlyToken)).toBe('/echo');
    }
  });

  it('strips the token header, every owner cookie and any header carrying the token', async () => {
    const response = await send('GET', `/ws/${id}/h`, {
      'X-Workbay-Owner-Token': token,
      cookie: `a=1; ${cookieOf(id)}=${token}; WORKBAY_OWNER_${id}=${token}; workbay_owner_other=${token}; b="${encodeAll(token)}"; c=2`,
      referer: `http://proxy.test/ws/${id}/?workbayOwnerToken=${encodeAll(token)}`,
      authorization: `Bearer ${token}`,
      'x-forwarded-for': token,
    });
    expect(echoedWithoutToken(response)).toBe('/h');
    const echo = JSON.parse(response.rest) as { headers: Record<string, string> };
    expect(echo.headers.cookie).toBe('a=1; c=2');
  });

  it('a token in the path is refused, not forwarded', async () => {
    const response = await send('GET', `/ws/${id}/x/${encodeAll(token)}`, auth());
    expect(response.status).toBe(400);
  });

  it('strips the token from WebSocket handshakes', async () => {
    const answer = await sendRaw(
      h.running.proxyAddress,
      `GET /ws/${id}/sock?${encodeAll('workbayOwnerToken')}=${token};x=1 HTTP/1.1\r\nhost: p\r\nconnection: Upgrade\r\nupgrade: websocket\r\ncookie: ${cookieOf(id)}=${token}\r\n\r\n`,
    );
    const response = parseRawResponse(answer.raw)!;
    expect(response.status).toBe(101);
    expect(response.headers['x-echo-url']).toBe('/sock?x=1');
  });

  it('the query token sets a scoped HttpOnly cookie and redirects to the same site without it', async () => {
    const first = await send('GET', `/ws/${id}/page?a=b&workbayOwnerToken=${token}`);
    expect(first.status).toBe(303);
    expect(first.headers.location).toBe(`/ws/${id}/page?a=b`);
    const cookie = first.headers['set-cookie']!;
    expect(cookie).toMatch(/; HttpOnly/);
    expect(cookie).toMatch(/; SameSite=Lax/);
    expect(cookie).toContain(`; Path=/ws/${id}/`);
    expect(cookie).not.toMatch(/Secure/);
    const behindTls = await send('GET', `/ws/${id}/?workbayOwnerToken=${token}`, { 'x-forwarded-proto': 'https' });
    expect(behindTls.headers['set-cookie']).toMatch(/; Secure/);
    // Without the slash after the id: the redirect adds it and still keeps the token out of the Location.
    const noSlash = await send('GET', `/ws/${id}?a=b&workbayOwnerToken=${token}`);
    expect(noSlash.status).toBe(308);
    expect(noSlash.headers.location).toBe(`/ws/${id}/?a=b`);
    expect(noSlash.headers['set-cookie']).toContain(`; Path=/ws/${id}/`);
    const viaHost = await send('GET', `/?workbayOwnerToken=${token}`, {}, `${id}.ws.ws.test`);
    expect(viaHost.headers['set-cookie']).toContain('; Path=/;');
  });

  it('never redirects to another site, whatever the path', async () => {
    const q = `workbayOwnerToken=${token}`;
    const attacks: Array<[string, string?]> = [
      [`/ws/${id}/../..//evil.example/?${q}`],
      [`/ws/${id}/..%2F..%2F%2Fevil.example/?${q}`],
      [`/ws/${id}/.//evil.example?${q}`],
      [`/ws/${id}//evil.example?${q}`],
      [`/ws/${id}/\\evil.example?${q}`],
      [`//evil.example/?${q}`, `${id}.ws.ws.test`],
      [`/\\evil.example/?${q}`, `${id}.ws.ws.test`],
      [`/.//evil.example/?${q}`, `${id}.ws.ws.test`],
      [`///evil.example/?${q}`, `${id}.ws.ws.test`],
      [`/%2F%2Fevil.example/?${q}`, `${id}.ws.ws.test`],
      [`/ws/${id}?x=//evil.example`],
      [`/ws/${id}?${q}`],
      [`/ws/${id}?a=1;${q}`],
      [`/ws/%2F%2Fevil.example?${q}`],
    ];
    for (const [target, host] of attacks) {
      const response = await send('GET', target, {}, host);
      const location = response.headers.location;
      if (response.status >= 300 && response.status < 400) {
        expect(location, target).toMatch(/^\/(?![/\\])[\x21-\x7e]*$/);
        expect(new URL(location!, 'http://proxy.test/ws/a/b').host, target).toBe('proxy.test');
        expect(location).not.toContain(token);
      } else {
        expect(location, target).toBeUndefined();
      }
    }
  });

  it('a workspace cannot plant owner cookies (HTTP answers and WebSocket handshakes)', async () => {
    const planter = startRequest({ image: 'test/cookie-planter' });
    const planterToken = (await h.client.startWorkspace(planter)).ownerToken;
    await waitForPhase(h.client, planter.id, 'running');
    const auth = `x-workbay-owner-token: ${planterToken}\r\n`;
    const plain = await sendRaw(h.running.proxyAddress, `GET /ws/${planter.id}/ HTTP/1.1\r\nhost: p\r\n${auth}\r\n`);
    const response = parseRawResponse(plain.raw)!;
    expect(response.status).toBe(200);
    expect(response.headers['set-cookie']).toBe(`mine=ok; Path=/ws/${planter.id}/`);
    const upgrade = await sendRaw(
      h.running.proxyAddress,
      `GET /ws/${planter.id}/s HTTP/1.1\r\nhost: p\r\nconnection: Upgrade\r\nupgrade: websocket\r\n${auth}\r\n`,
    );
    const handshake = parseRawResponse(upgrade.raw)!;
    expect(handshake.status).toBe(101);
    expect(handshake.headers['set-cookie']).toBe(`mine=ok; Path=/ws/${planter.id}/`);
    await h.client.stopWorkspace({ id: planter.id, policy: wsman.StopWorkspacePolicy.IMMEDIATELY });
  });
});
