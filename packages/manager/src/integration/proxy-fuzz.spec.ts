/**
 * Property-based attack on the port proxy of the real manager: random and adversarial raw HTTP over plain TCP.
 * Whatever arrives, the manager stays up and keeps answering, every answer is an error (4xx/5xx), an on-site
 * redirect or a proper forward to the workspace, and the workspace (an echo server) never receives the token.
 */
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startHarness, startRequest, waitForPhase } from '../test-support/harness.js';
import type { Harness } from '../test-support/harness.js';
import { parseRawResponse, sendRaw } from '../test-support/raw-http.js';
import { wsman } from '@workbay/api';
import { createServer } from 'node:net';

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

describe('proxy fuzz: any bytes, no crash, no leak, no off-site redirect', () => {
  let h: Harness;
  let id: string;
  let token: string;
  let echoPort: number;
  const uncaught: unknown[] = [];
  const record = (error: unknown): void => void uncaught.push(error);

  beforeAll(async () => {
    process.on('uncaughtException', record);
    process.on('unhandledRejection', record);
    h = await startHarness({ config: { proxy: { address: '127.0.0.1:0', domain: 'ws.test' } } });
    echoPort = await freePort();
    const request = startRequest({
      image: 'test/echo',
      spec: {
        envvars: [{ name: 'ECHO_PORT', value: String(echoPort) }],
        ports: [{ port: echoPort, visibility: wsman.PortVisibility.PORT_VISIBILITY_PUBLIC, url: '', protocol: 0 }],
      },
    });
    id = request.id;
    token = (await h.client.startWorkspace(request)).ownerToken;
    await waitForPhase(h.client, id, 'running');
  });
  afterAll(async () => {
    process.off('uncaughtException', record);
    process.off('unhandledRejection', record);
    await h?.close();
  });

  /** A raw request assembled from pieces that break parsers, with the real id and token mixed in. */
  function requests(): fc.Arbitrary<{ bytes: Buffer; head: boolean }> {
    const piece = fc.oneof(
      fc.constantFrom('%', '%0', '%00', '%zz', '%C0%AF', '%E0%80%AF', '%ED%A0%80', '%FF', '%25', '%2e%2e', '%2F'),
      fc.constantFrom('..', '.', '', '/', '//', '\\', 'port', `port/${echoPort}`, 'port/0', 'port/99999', 'port/x'),
      fc.constantFrom(id, `${id}%00`, id.toUpperCase(), 'nobody', 'evil.example', '@evil.example', token),
      fc.string({ maxLength: 6 }),
      fc.string({ unit: 'binary', maxLength: 4 }),
    );
    const path = fc
      .tuple(
        fc.constantFrom('/ws/', '/ws/%', '/', '//', '/ws', 'http://127.0.0.1:1/', '*', ''),
        fc.array(piece, { maxLength: 6 }),
      )
      .map(([start, parts]) => `${start}${parts.join('/')}`);
    const queryPart = fc.oneof(
      fc.constantFrom(`workbayOwnerToken=${token}`, `WorkbayOwnerToken=${token}`, `%77orkbayOwnerToken=${token}`),
      fc.constantFrom(
        `workbayOwnerToken%3D${token}`,
        `workbayOwnerToken=%`,
        'a=%',
        'b=%00',
        '=',
        ';',
        '&&',
        `x=${token}`,
      ),
      fc.string({ maxLength: 6 }),
    );
    const query = fc.option(
      fc
        .tuple(fc.array(queryPart, { minLength: 1, maxLength: 4 }), fc.constantFrom('&', ';'))
        .map(([parts, separator]) => `?${parts.join(separator)}`),
    );
    const header = fc.oneof(
      fc.constantFrom(`host: ${id}.ws.ws.test`, `host: ${echoPort}-${id}.ws.ws.test`, `host: 99999-${id}.ws.ws.test`),
      fc.constantFrom(
        'host: [::1',
        'host: a b',
        'host: evil.example',
        `host: ${'h'.repeat(300)}`,
        'host: x:99999',
        'host:',
      ),
      fc.constantFrom(`x-workbay-owner-token: ${token}`, 'x-workbay-owner-token: wrong', 'x-workbay-owner-token:'),
      fc.constantFrom(
        `cookie: workbay_owner_${id.replace(/[^A-Za-z0-9_-]/g, '_')}=${token}`,
        'cookie: ;;;=',
        'cookie: a="x',
      ),
      fc.constantFrom('cookie: workbay_owner_x=%', `cookie: WORKBAY_OWNER_${id}=${token}; a=%zz`),
      fc.constantFrom(
        'connection: upgrade',
        'upgrade: websocket',
        'sec-websocket-key: dGhlIHNhbXBsZQ==',
        'connection: close',
      ),
      fc.constantFrom(
        'content-length: -1',
        'content-length: 99999999999999',
        'content-length: 5',
        'transfer-encoding: chunked',
      ),
      fc.constantFrom(
        'transfer-encoding: gzip, chunked',
        'expect: 100-continue',
        `referer: /?workbayOwnerToken=${token}`,
      ),
      fc.constantFrom(
        `x-big: ${'a'.repeat(20_000)}`,
        'bad header: x',
        '\u0000: y',
        ': empty-name',
        'x-forwarded-for: %',
      ),
      fc.string({ maxLength: 20 }).map((s) => `x-random: ${s}`),
    );
    const body = fc.constantFrom('', 'hello', '0\r\n\r\n', 'zz\r\nnot a chunk\r\n', '5\r\nhello\r\n0\r\n\r\n');
    const structured = fc
      .record({
        method: fc.constantFrom('GET', 'POST', 'HEAD', 'PUT', 'DELETE', 'OPTIONS', 'CONNECT', 'PRI', 'get', 'G\u0000T'),
        path,
        query,
        version: fc.constantFrom('HTTP/1.1', 'HTTP/1.0', 'HTTP/2.0', 'HTTP/1.1 x', '', 'HTTP/9.9'),
        headers: fc.array(header, { maxLength: 6 }),
        withHost: fc.boolean(),
        body,
        pipelined: fc.boolean(),
      })
      .map((r) => {
        const line = `${r.method} ${r.path}${r.query ?? ''} ${r.version}`.trimEnd();
        const headers = [...(r.withHost ? ['host: proxy.test'] : []), ...r.headers].map((x) => `${x}\r\n`).join('');
        const second = r.pipelined ? `GET /ws/${id}/second HTTP/1.1\r\nhost: p\r\n\r\n` : '';
        return {
          bytes: Buffer.from(`${line}\r\n${headers}\r\n${r.body}${second}`, 'latin1'),
          head: r.method === 'HEAD',
        };
      });
    const garbage = fc.uint8Array({ maxLength: 300 }).map((b) => ({ bytes: Buffer.from(b), head: false }));
    return fc.oneof({ arbitrary: structured, weight: 9 }, { arbitrary: garbage, weight: 1 });
  }

  /** The proxy still answers a well-formed request, and the workspace is reachable through it. */
  async function stillServing(): Promise<void> {
    const probe = await sendRaw(
      h.running.proxyAddress,
      `GET /ws/${id}/alive HTTP/1.1\r\nhost: p\r\nx-workbay-owner-token: ${token}\r\n\r\n`,
    );
    const response = parseRawResponse(probe.raw);
    expect(response?.status).toBe(200);
    expect(response?.rest).toContain('"url":"/alive"');
  }

  it('stays up, answers errors, same-site redirects or forwards, and never hands the token on', async () => {
    await fc.assert(
      fc.asyncProperty(requests(), async ({ bytes, head }) => {
        const answer = await sendRaw(h.running.proxyAddress, bytes, { head, capMs: 2_000 });
        let response = parseRawResponse(answer.raw);
        // Informational answers (100 Continue) precede the real one.
        while (response && response.status >= 100 && response.status < 200 && response.status !== 101) {
          response = parseRawResponse(response.rest);
        }
        if (response) {
          expect(response.status).toBeGreaterThanOrEqual(100);
          expect(response.status).toBeLessThan(600);
          if (response.status >= 300 && response.status < 400) {
            const location = response.headers.location ?? '';
            expect(location).toMatch(/^\/(?![/\\])[\x21-\x7e]*$/);
            expect(new URL(location, 'http://proxy.test/ws/a/').host).toBe('proxy.test');
          } else if (response.status === 101) {
            expect(response.headers['x-echo-url']).toBeDefined();
            expect(response.headers['x-echo-url']).not.toContain(token);
          } else if (response.status < 300 && !head) {
            // A forward: the echo server answered, and it never saw the token anywhere.
            expect(response.rest).toMatch(/"server":"(ide|echo)"/);
            expect(response.rest).not.toContain(token);
          }
        }
        await stillServing();
      }),
      { numRuns: 200 },
    );
    expect(uncaught).toEqual([]);
  });

  it('answers a burst of malformed requests and still serves', async () => {
    const bad = [
      'GET /ws/%/ HTTP/1.1\r\nhost: p\r\n\r\n',
      'GET /ws/%E0%80%AF/ HTTP/1.0\r\n\r\n',
      '\u0000\u0001\r\n\r\n',
    ];
    const answers = await Promise.all(
      Array.from({ length: 60 }, (_, i) => sendRaw(h.running.proxyAddress, bad[i % 3]!)),
    );
    for (const a of answers) {
      const response = parseRawResponse(a.raw);
      expect(response, a.raw.slice(0, 80)).toBeDefined();
      expect(response!.status).toBeGreaterThanOrEqual(400);
    }
    await stillServing();
    expect(uncaught).toEqual([]);
  });
});
