/**
 * Attacks on the port proxy (issue 8, items 4, 5 and 12): malformed requests of every kind must never take the
 * manager down; ControlPort/proxy must never reach a host port or another workspace; the owner token is never
 * forwarded to the workspace in any spelling; redirects never leave the site; open tunnels close when admission
 * or a port is revoked. The workspace is a small echo server that reports (and logs into its content) exactly
 * what it received.
 */
import { readFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { wsman } from '@workbay/api';
import { freePort } from '@workbay/testing';
import {
  deepDecode,
  maintenanceState,
  outcome,
  rawHttp,
  secretSpellings,
  show,
  splitAddress,
  tryFetch,
} from './attack-kit.js';
import { bootWorkbay, contentDir, startRunning } from './harness.js';
import type { Workbay } from './harness.js';
import { echoServer } from './probes.js';

const domain = 'proxy.test';
let wb: Workbay;
let token: string;
let echoPort: number;
const ws = 'proxy-echo';
const neighbour = 'proxy-neighbour';

beforeAll(async () => {
  wb = await bootWorkbay({
    images: { 'attack/echo': { command: [process.execPath, '-e', echoServer] } },
    manager: { proxy: { address: '127.0.0.1:0', domain } },
  });
  echoPort = await freePort();
  token = (
    await startRunning(wb, {
      id: ws,
      image: 'attack/echo',
      env: { ECHO_PORTS: String(echoPort) },
    })
  ).ownerToken;
  await startRunning(wb, { id: neighbour, owner: 'bob' });
}, 180_000);

afterAll(async () => {
  await wb?.cleanup();
});

/** A plain admitted request through the proxy still works and the manager still serves. */
async function expectHealthy(): Promise<void> {
  expect(wb.alive(), 'workbay up is still running').toBe(true);
  const res = await tryFetch(`http://${wb.proxyAddress}/ws/${ws}/healthy`, {
    headers: { 'x-workbay-owner-token': token },
  });
  expect(res.status, res.body).toBe(200);
  const list = await outcome(wb.manager.getWorkspaces({}));
  expect(list.ok, show(list)).toBe(true);
}

const req = (line: string, headers: string[] = [], body = ''): string =>
  `${line}\r\nHost: ${wb.proxyAddress}\r\n${headers.map((h) => `${h}\r\n`).join('')}Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`;

describe('malformed requests never take the proxy or the manager down', () => {
  const edges: readonly [string, () => string | Buffer][] = [
    ['GET /ws/%/', () => req('GET /ws/%/ HTTP/1.1')],
    ['GET /ws/% (no slash)', () => req('GET /ws/% HTTP/1.1')],
    ['a truncated UTF-8 escape in the id', () => req('GET /ws/%E0%A4%A/ HTTP/1.1')],
    ['a NUL in the id', () => req('GET /ws/%00/ HTTP/1.1')],
    ['an encoded ../ in the id', () => req('GET /ws/..%2F..%2Fadmin%2Fmaintenance/ HTTP/1.1')],
    ['port 99999', () => req(`GET /ws/${ws}/port/99999/ HTTP/1.1`)],
    ['port -1', () => req(`GET /ws/${ws}/port/-1/ HTTP/1.1`)],
    ['port 0', () => req(`GET /ws/${ws}/port/0/ HTTP/1.1`)],
    ['port 0x50', () => req(`GET /ws/${ws}/port/0x50/ HTTP/1.1`)],
    ['port 1e3', () => req(`GET /ws/${ws}/port/1e3/ HTTP/1.1`)],
    ['an escaped port', () => req(`GET /ws/${ws}/port/%38%30/ HTTP/1.1`)],
    ['dot segments after the prefix', () => req(`GET /ws/${ws}/%2e%2e/%2e%2e/admin/maintenance HTTP/1.1`)],
    ['a double slash before ws', () => req(`GET //ws/${ws}/ HTTP/1.1`)],
    ['a 200 KB path', () => req(`GET /ws/${'a'.repeat(200_000)}/ HTTP/1.1`)],
    [
      '2,000 headers',
      () =>
        req(
          `GET /ws/${ws}/ HTTP/1.1`,
          Array.from({ length: 2000 }, (_, i) => `X-H${i}: v`),
        ),
    ],
    ['a broken cookie escape', () => req(`GET /ws/${ws}/ HTTP/1.1`, ['Cookie: workbay_owner=%; a=%E0%A4%A; =; ;;'])],
    ['a broken token escape in the query', () => req(`GET /ws/${ws}/?workbayOwnerToken=%E0%A4%A HTTP/1.1`)],
    [
      'a token header with non-Latin bytes',
      () => Buffer.from(req(`GET /ws/${ws}/ HTTP/1.1`, ['X-Workbay-Owner-Token: \u00ff\u00fe%']), 'latin1'),
    ],
    ['a bad Host header', () => `GET / HTTP/1.1\r\nHost: %\r\nConnection: close\r\n\r\n`],
    ['a Host with a bad port', () => `GET / HTTP/1.1\r\nHost: ${ws}.ws.${domain}:abc\r\nConnection: close\r\n\r\n`],
    ['an unterminated IPv6 Host', () => `GET / HTTP/1.1\r\nHost: [::1\r\nConnection: close\r\n\r\n`],
    ['two Host headers', () => `GET / HTTP/1.1\r\nHost: a\r\nHost: ${ws}.ws.${domain}\r\nConnection: close\r\n\r\n`],
    [
      'a Host route with a broken escape',
      () => `GET /%/ HTTP/1.1\r\nHost: %.ws.${domain}\r\nConnection: close\r\n\r\n`,
    ],
    ['OPTIONS *', () => req('OPTIONS * HTTP/1.1')],
    ['CONNECT to the ops port', () => `CONNECT ${wb.metricsAddress} HTTP/1.1\r\nHost: ${wb.metricsAddress}\r\n\r\n`],
    ['an upgrade on a broken path', () => req('GET /ws/%/ HTTP/1.1', ['Upgrade: websocket', 'Connection: Upgrade'])],
    ['an upgrade with no Upgrade value', () => req(`GET /ws/${ws}/ HTTP/1.1`, ['Upgrade:', 'Connection: Upgrade'])],
    [
      'Content-Length and Transfer-Encoding',
      () => `POST /ws/${ws}/ HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`,
    ],
    [
      'a garbage chunk size',
      () => `POST /ws/${ws}/ HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n\r\n`,
    ],
    ['an HTTP/2 preface', () => 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'],
    ['a NUL in the method', () => Buffer.from(`G\0ET /ws/${ws}/ HTTP/1.1\r\n\r\n`, 'latin1')],
    ['binary garbage', () => Buffer.from(Array.from({ length: 4096 }, (_, i) => (i * 131 + 7) % 256))],
  ];
  for (const [name, build] of edges) {
    it(name, async () => {
      const res = await rawHttp(wb.proxyAddress, build(), 1500);
      expect(res.status >= 500 && res.status !== 502 && res.status !== 503, res.headers).toBe(false);
      await expectHealthy();
    });
  }

  it('an absolute-form request for the ops admin endpoint is not forwarded there', async () => {
    const before = await maintenanceState(wb);
    const body = '{"enabled":true}';
    const res = await rawHttp(
      wb.proxyAddress,
      `PUT http://${wb.metricsAddress}/admin/maintenance HTTP/1.1\r\nHost: ${wb.metricsAddress}\r\nx-workbay-owner-token: ${token}\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`,
    );
    expect(res.status >= 200 && res.status < 300 && !res.raw.includes('"url"'), res.headers).toBe(false);
    expect(await maintenanceState(wb)).toBe(before);
  });
});

describe('ControlPort and the proxy never reach the host or another workspace', () => {
  const hostTargets = (): [string, number][] => [
    ['the ops admin endpoint', splitAddress(wb.metricsAddress)[1]],
    ['the manager gRPC', splitAddress(wb.managerAddress)[1]],
    ['the daemon gRPC', splitAddress(wb.daemonAddress)[1]],
    ['the proxy itself', splitAddress(wb.proxyAddress)[1]],
  ];
  for (const index of [0, 1, 2, 3]) {
    it(`exposing a host port: target ${index}`, async () => {
      const [name, port] = hostTargets()[index]!;
      const before = await maintenanceState(wb);
      const exposed = await outcome(
        wb.manager.controlPort({
          id: ws,
          expose: true,
          spec: { port, visibility: wsman.PortVisibility.PORT_VISIBILITY_PUBLIC },
        }),
      );
      const url = `http://${wb.proxyAddress}/ws/${ws}/port/${port}/admin/maintenance`;
      const put = await tryFetch(url, {
        method: 'PUT',
        headers: { 'x-workbay-owner-token': token, 'content-type': 'application/json' },
        body: '{"enabled":true}',
      });
      const get = await tryFetch(`http://${wb.proxyAddress}/ws/${ws}/port/${port}/metrics`, {
        headers: { 'x-workbay-owner-token': token },
      });
      await wb.manager.controlPort({ id: ws, expose: false, spec: { port } }).catch(() => undefined);
      expect(
        put.status >= 200 && put.status < 300,
        `${name}: ${show(exposed)}; PUT ${put.status} ${put.body.slice(0, 200)}`,
      ).toBe(false);
      expect(get.body, `${name} answered through the proxy`).not.toMatch(/# HELP|workbay_/);
      expect(await maintenanceState(wb)).toBe(before);
    });
  }

  it("exposing another workspace's IDE port does not reach that workspace", async () => {
    const record = JSON.parse(
      await readFile(path.join(wb.runtimeStateDir, 'instances', `${neighbour}.json`), 'utf8'),
    ) as { idePort: number };
    const exposed = await outcome(
      wb.manager.controlPort({
        id: ws,
        expose: true,
        spec: { port: record.idePort, visibility: wsman.PortVisibility.PORT_VISIBILITY_PUBLIC },
      }),
    );
    const res = await tryFetch(`http://${wb.proxyAddress}/ws/${ws}/port/${record.idePort}/api/info`, {
      headers: { 'x-workbay-owner-token': token },
    });
    await wb.manager.controlPort({ id: ws, expose: false, spec: { port: record.idePort } }).catch(() => undefined);
    expect(res.body, show(exposed)).not.toContain(neighbour);
  });

  it('a port the workspace did not expose is not forwarded', async () => {
    const res = await tryFetch(`http://${wb.proxyAddress}/ws/${ws}/port/${echoPort}/`, {
      headers: { 'x-workbay-owner-token': token },
    });
    expect(res.status).not.toBe(200);
  });
});

describe('redirects never leave the site', () => {
  const hostRoute = (p: string): string => `GET ${p} HTTP/1.1\r\nHost: ${ws}.ws.${domain}\r\nConnection: close\r\n\r\n`;
  const pathRoute = (p: string): string => `GET ${p} HTTP/1.1\r\nHost: ${wb.proxyAddress}\r\nConnection: close\r\n\r\n`;
  const cases: readonly [string, () => string][] = [
    ['host route //evil.example', () => hostRoute(`//evil.example/x?workbayOwnerToken=${token}`)],
    ['host route ///evil.example', () => hostRoute(`///evil.example/?workbayOwnerToken=${token}`)],
    ['host route /\\evil.example', () => hostRoute(`/\\evil.example/?workbayOwnerToken=${token}`)],
    ['host route /%2F%2Fevil.example', () => hostRoute(`/%2F%2Fevil.example?workbayOwnerToken=${token}`)],
    ['host route /%5Cevil.example', () => hostRoute(`/%5C%5Cevil.example?workbayOwnerToken=${token}`)],
    ['host route /\\t/evil.example', () => hostRoute(`/%09/evil.example?workbayOwnerToken=${token}`)],
    ['path route /ws/<id>//evil.example', () => pathRoute(`/ws/${ws}//evil.example?workbayOwnerToken=${token}`)],
    ['path route /ws/<id> without slash', () => pathRoute(`/ws/${ws}?workbayOwnerToken=${token}`)],
    ['path route with an encoded slash id', () => pathRoute(`/ws/%2F%2Fevil.example?workbayOwnerToken=${token}`)],
    ['path route with dot segments', () => pathRoute(`/ws/${ws}/..//evil.example/?workbayOwnerToken=${token}`)],
  ];
  for (const [name, build] of cases) {
    it(name, async () => {
      const res = await rawHttp(wb.proxyAddress, build(), 1500);
      const location = /^location:\s*(.*)$/im.exec(res.headers)?.[1]?.trim();
      if (location === undefined) return;
      const resolved = new URL(location, `http://${ws}.ws.${domain}/`);
      expect([`${ws}.ws.${domain}`, wb.proxyAddress], `Location: ${location}`).toContain(resolved.host);
      expect(location, 'the redirect must not start with // or /\\').not.toMatch(/^\s*[/\\]{2}|^[a-z]+:/i);
      for (const spelling of secretSpellings(token)) expect(deepDecode(location)).not.toContain(spelling);
    });
  }
});

describe('the owner token is never forwarded to the workspace, in any spelling', () => {
  let cookieName = '';
  beforeAll(async () => {
    const res = await rawHttp(
      wb.proxyAddress,
      `GET /ws/${ws}/?workbayOwnerToken=${token} HTTP/1.1\r\nHost: ${wb.proxyAddress}\r\nConnection: close\r\n\r\n`,
    );
    cookieName = /^set-cookie:\s*([^=]+)=/im.exec(res.headers)?.[1] ?? 'workbay_owner';
  });

  const enc = (s: string): string => [...s].map((c) => `%${c.charCodeAt(0).toString(16).padStart(2, '0')}`).join('');
  const variants: readonly [string, () => string][] = [
    ['plain query', () => `workbayOwnerToken=${token}`],
    ['after another parameter', () => `a=1&workbayOwnerToken=${token}&b=2`],
    ['twice', () => `workbayOwnerToken=${token}&workbayOwnerToken=${token}`],
    ['escaped name', () => `workbay%4FwnerToken=${token}`],
    ['fully escaped name', () => `${enc('workbayOwnerToken')}=${token}`],
    ['escaped value', () => `workbayOwnerToken=${enc(token)}`],
    ['double-escaped value', () => `workbayOwnerToken=${enc(token).replace(/%/g, '%25')}`],
    ['semicolon separator', () => `x=1;workbayOwnerToken=${token}`],
    ['trailing junk', () => `workbayOwnerToken=${token}%`],
    ['empty name and a plus', () => `=&workbayOwnerToken=+${token}+`],
    ['escaped ampersand before it', () => `x=1%26workbayOwnerToken=${token}`],
  ];
  const forwarded = async (query: string, headers: string[]): Promise<string> => {
    const res = await rawHttp(
      wb.proxyAddress,
      `POST /ws/${ws}/echo?${query} HTTP/1.1\r\nHost: ${wb.proxyAddress}\r\n${headers.map((h) => `${h}\r\n`).join('')}Content-Length: 0\r\nConnection: close\r\n\r\n`,
      1500,
    );
    return res.raw.split('\r\n\r\n').slice(1).join('\r\n\r\n');
  };
  const expectNoToken = (text: string): void => {
    const decoded = deepDecode(deepDecode(text));
    for (const spelling of secretSpellings(token)) {
      expect(text, 'raw').not.toContain(spelling);
      expect(decoded, 'decoded').not.toContain(spelling);
    }
  };
  for (const [name, query] of variants) {
    it(`query: ${name}`, async () => {
      expectNoToken(await forwarded(query(), [`x-workbay-owner-token: ${token}`]));
      expectNoToken(await forwarded(query(), []));
    });
  }
  it('cookie and header carriers', async () => {
    expectNoToken(await forwarded('a=1', [`Cookie: ${cookieName}=${token}; other=1`]));
    expectNoToken(await forwarded('a=1', [`Cookie: ${cookieName}=${encodeURIComponent(token)}`]));
    expectNoToken(await forwarded('a=1', [`X-Workbay-Owner-Token: ${token}`, `x-workbay-owner-token: ${token}`]));
    expectNoToken(await forwarded('a=1', [`Cookie: a=1`, `Cookie: ${cookieName}=${token}`]));
  });
  it("nothing the workspace logged carries the token (content's requests.log)", async () => {
    const log = await readFile(path.join(contentDir(wb, ws), 'requests.log'), 'utf8');
    expect(log.length).toBeGreaterThan(0);
    expectNoToken(log);
  });
});

/** Opens an upgraded tunnel through the proxy; resolves once the workspace answered 101 and echoed a ping. */
async function openTunnel(p: string, headers: string[] = []): Promise<{ closed: Promise<void>; socket: net.Socket }> {
  const [host, port] = splitAddress(wb.proxyAddress);
  const socket = net.connect(port, host);
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  socket.on('error', () => undefined);
  let data = '';
  await new Promise<void>((resolve, reject) => {
    socket.on('connect', () =>
      socket.write(
        `GET ${p} HTTP/1.1\r\nHost: ${wb.proxyAddress}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n${headers.map((h) => `${h}\r\n`).join('')}\r\n`,
      ),
    );
    const onData = (d: Buffer): void => {
      data += d.toString('latin1');
      if (data.includes('\r\n\r\n') && !data.startsWith('HTTP/1.1 101')) reject(new Error(data.split('\r\n')[0]));
      if (data.startsWith('HTTP/1.1 101') && data.includes('\r\n\r\n') && !data.includes('ping')) socket.write('ping');
      if (data.includes('ping')) {
        socket.off('data', onData);
        resolve();
      }
    };
    socket.on('data', onData);
    socket.once('close', () => reject(new Error(`tunnel closed early: ${data.slice(0, 100)}`)));
  });
  return { closed, socket };
}

const closedWithin = async (closed: Promise<void>, ms: number): Promise<boolean> =>
  Promise.race([closed.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), ms))]);

describe('open tunnels close when access is revoked', () => {
  it('ControlAdmission back to owner-only closes a stranger’s tunnel', async () => {
    await wb.manager.controlAdmission({ id: ws, level: wsman.AdmissionLevel.ADMIT_EVERYONE });
    const tunnel = await openTunnel(`/ws/${ws}/tunnel`);
    await wb.manager.controlAdmission({ id: ws, level: wsman.AdmissionLevel.ADMIT_OWNER_ONLY });
    const closed = await closedWithin(tunnel.closed, 15_000);
    tunnel.socket.destroy();
    expect(closed).toBe(true);
  });

  it('ControlPort public → private closes a stranger’s port tunnel', async () => {
    const spec = { port: echoPort, visibility: wsman.PortVisibility.PORT_VISIBILITY_PUBLIC };
    await wb.manager.controlPort({ id: ws, expose: true, spec });
    const tunnel = await openTunnel(`/ws/${ws}/port/${echoPort}/tunnel`);
    await wb.manager.controlPort({
      id: ws,
      expose: true,
      spec: { ...spec, visibility: wsman.PortVisibility.PORT_VISIBILITY_PRIVATE },
    });
    const closed = await closedWithin(tunnel.closed, 15_000);
    tunnel.socket.destroy();
    expect(closed).toBe(true);
  });

  it("removing a port closes even the owner's tunnel to it", async () => {
    const spec = { port: echoPort, visibility: wsman.PortVisibility.PORT_VISIBILITY_PRIVATE };
    await wb.manager.controlPort({ id: ws, expose: true, spec });
    const tunnel = await openTunnel(`/ws/${ws}/port/${echoPort}/tunnel`, [`x-workbay-owner-token: ${token}`]);
    await wb.manager.controlPort({ id: ws, expose: false, spec });
    const closed = await closedWithin(tunnel.closed, 15_000);
    tunnel.socket.destroy();
    expect(closed).toBe(true);
  });

  it('the proxy and manager are still healthy at the end', expectHealthy);
});
