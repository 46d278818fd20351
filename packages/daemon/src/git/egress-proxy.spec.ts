/**
 * The egress proxy on its own, spoken to over real sockets on 127.0.0.1: only with its token, only to allowed
 * addresses, refusals identical for open and closed ports, and bounded. The kinds an error names come from the
 * one shared AddressPolicy.
 */
import { connect, createServer } from 'node:net';
import type { AddressInfo, Server, Socket } from 'node:net';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { AddressPolicy } from '../initializer/address-policy.js';
import type { CountingListener } from '../test-support/git-server.js';
import { startCountingListener } from '../test-support/git-server.js';
import { EgressProxy } from './egress-proxy.js';

/** Sends `request` to the proxy and returns everything it answers until it closes (or `until` matches). */
function exchange(proxy: EgressProxy, request: string, until?: RegExp): Promise<string> {
  const [host, port] = proxy.address.split(':') as [string, string];
  return new Promise((resolve, reject) => {
    let text = '';
    const socket = connect(Number(port), host, () => socket.write(request));
    socket.on('data', (chunk: Buffer) => {
      text += chunk.toString('latin1');
      if (until?.test(text)) {
        socket.destroy();
        resolve(text);
      }
    });
    socket.on('close', () => resolve(text));
    socket.on('error', reject);
  });
}

const connectRequest = (target: string, authorization?: string): string =>
  `CONNECT ${target} HTTP/1.1\r\nHost: ${target}\r\n${
    authorization ? `Proxy-Authorization: Basic ${authorization}\r\n` : ''
  }\r\n`;

describe('EgressProxy (real sockets on 127.0.0.1)', () => {
  let internal: CountingListener;
  let proxy: EgressProxy;

  beforeAll(async () => {
    internal = await startCountingListener('127.0.0.2');
  });
  afterAll(async () => {
    await internal?.close();
  });
  afterEach(async () => {
    await proxy?.close();
  });

  it('without its token (none, or another proxy run): 407, and the target gets no connection', async () => {
    proxy = await EgressProxy.start({ allowPrivateAddresses: true });
    const other = await EgressProxy.start({ allowPrivateAddresses: true });
    const target = `127.0.0.2:${internal.port}`;
    expect(await exchange(proxy, connectRequest(target))).toMatch(/^HTTP\/1\.1 407 /);
    expect(await exchange(proxy, connectRequest(target, other.authorization))).toMatch(/^HTTP\/1\.1 407 /);
    expect(await exchange(proxy, `GET http://${target}/ HTTP/1.1\r\nHost: ${target}\r\n\r\n`, /\r\n\r\n/)).toMatch(
      /^HTTP\/1\.1 407 /,
    );
    await other.close();
    expect(internal.connections()).toBe(0);
  });

  it('a refused address: 403 before any connection, the same bytes for an open and a closed port', async () => {
    proxy = await EgressProxy.start({ allowedNetworks: ['127.0.0.1/32'] });
    const closed = await startCountingListener('127.0.0.2');
    await closed.close();
    const open = await exchange(proxy, connectRequest(`127.0.0.2:${internal.port}`, proxy.authorization));
    const shut = await exchange(proxy, connectRequest(`127.0.0.2:${closed.port}`, proxy.authorization));
    expect(open).toMatch(/^HTTP\/1\.1 403 /);
    expect(shut).toBe(open);
    const forwarded = await exchange(
      proxy,
      `GET http://127.0.0.2:${internal.port}/ HTTP/1.1\r\nHost: x\r\nProxy-Authorization: Basic ${proxy.authorization}\r\n\r\n`,
      /\r\n\r\n/,
    );
    expect(forwarded).toMatch(/^HTTP\/1\.1 403 /);
    expect(internal.connections()).toBe(0);
    expect(proxy.refusals).toEqual([
      { target: `127.0.0.2:${internal.port}`, kind: 'loopback' },
      { target: `127.0.0.2:${closed.port}`, kind: 'loopback' },
      { target: `127.0.0.2:${internal.port}`, kind: 'loopback' },
    ]);
  });

  it('an allowed address is tunnelled', async () => {
    const echo: Server = createServer((socket) => socket.pipe(socket));
    await new Promise<void>((resolve) => echo.listen(0, '127.0.0.1', () => resolve()));
    try {
      proxy = await EgressProxy.start({ allowedNetworks: ['127.0.0.1/32'] });
      const target = `127.0.0.1:${(echo.address() as AddressInfo).port}`;
      const text = await exchange(proxy, `${connectRequest(target, proxy.authorization)}ping`, /ping$/);
      expect(text).toBe('HTTP/1.1 200 Connection Established\r\n\r\nping');
    } finally {
      echo.close();
    }
  });

  it('bounds: oversized headers are refused, and tunnels beyond maxConnections get 503', async () => {
    const held: Socket[] = [];
    const hold: Server = createServer((socket) => held.push(socket));
    await new Promise<void>((resolve) => hold.listen(0, '127.0.0.1', () => resolve()));
    try {
      proxy = await EgressProxy.start({ allowedNetworks: ['127.0.0.1/32'] }, { maxConnections: 1 });
      const big = `CONNECT a:1 HTTP/1.1\r\nX: ${'a'.repeat(20_000)}\r\n\r\n`;
      expect(await exchange(proxy, big)).toMatch(/^HTTP\/1\.1 4\d\d /);
      const target = `127.0.0.1:${(hold.address() as AddressInfo).port}`;
      const first = await exchange(proxy, connectRequest(target, proxy.authorization), /\r\n\r\n/);
      expect(first).toMatch(/^HTTP\/1\.1 200 /);
      // The first tunnel's client is gone, but its upstream end is held open: wait for the proxy to release it.
      await new Promise((resolve) => setTimeout(resolve, 100));
      const [host, port] = proxy.address.split(':') as [string, string];
      const open = connect(Number(port), host, () => open.write(connectRequest(target, proxy.authorization)));
      await new Promise((resolve) => open.once('data', resolve));
      const second = await exchange(proxy, connectRequest(target, proxy.authorization));
      expect(second).toMatch(/^HTTP\/1\.1 503 /);
      open.destroy();
    } finally {
      for (const socket of held) socket.destroy();
      hold.close();
    }
  });
});

describe('AddressPolicy.refusal (the kind an error names)', () => {
  const policy = new AddressPolicy({ allowedNetworks: ['10.1.0.0/16'] });
  it.each([
    ['127.0.0.1', 'loopback'],
    ['::1', 'loopback'],
    ['::ffff:127.0.0.1', 'loopback'],
    ['169.254.169.254', 'link-local'],
    ['10.0.0.1', 'private'],
    ['192.168.1.1', 'private'],
    ['100.64.0.1', 'CGNAT'],
    ['fd00::1', 'unique-local'],
    ['0.0.0.0', 'unspecified'],
    ['224.0.0.1', 'multicast'],
    ['10.1.2.3', undefined],
    ['8.8.8.8', undefined],
  ])('%s: %s', (address, kind) => {
    expect(policy.refusal(address)).toBe(kind);
  });
});
