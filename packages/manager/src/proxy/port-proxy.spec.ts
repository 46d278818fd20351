import { PassThrough } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import { createLogger } from '../logger.js';
import { parseRawResponse, sendRaw } from '../test-support/raw-http.js';
import { PortProxy } from './port-proxy.js';

describe('PortProxy: a throw inside a handler', () => {
  let proxy: PortProxy | undefined;
  afterEach(async () => {
    await proxy?.stop();
  });

  it('answers 500, is logged, and the proxy keeps serving (HTTP and upgrade)', async () => {
    const lines: string[] = [];
    const destination = new PassThrough();
    destination.on('data', (c: Buffer) => lines.push(c.toString()));
    let calls = 0;
    proxy = new PortProxy({
      // A router that fails (a stand-in for any bug behind the proxy).
      router: {
        getWorkspace: () => {
          calls += 1;
          throw new Error('router exploded');
        },
        allWorkspaces: () => [],
      },
      address: '127.0.0.1:0',
      cookieName: 'workbay_owner',
      logger: createLogger({ level: 'error', destination }),
    });
    const address = await proxy.start();
    const plain = parseRawResponse((await sendRaw(address, 'GET /ws/a/ HTTP/1.1\r\nhost: p\r\n\r\n')).raw);
    expect(plain?.status).toBe(500);
    const upgrade = parseRawResponse(
      (await sendRaw(address, 'GET /ws/a/ HTTP/1.1\r\nhost: p\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n'))
        .raw,
    );
    expect(upgrade?.status).toBe(500);
    const again = parseRawResponse((await sendRaw(address, 'GET /elsewhere HTTP/1.1\r\nhost: p\r\n\r\n')).raw);
    expect(again?.status).toBe(404);
    expect(calls).toBe(2);
    expect(lines.join('')).toMatch(/proxy handler threw/);
    expect(lines.join('')).toMatch(/proxy upgrade handler threw/);
  });
});
