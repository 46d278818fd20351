import type { IncomingMessage } from 'node:http';
import { describe, expect, it } from 'vitest';
import { routeRequest } from './routing.js';

const request = (host: string, url = '/'): IncomingMessage =>
  ({ url, headers: { host }, rawHeaders: ['Host', host] }) as IncomingMessage;

describe('routeRequest: host routes', () => {
  it('serves <id>.ws.<domain> and <port>-<id>.ws.<domain>, the host compared in lower case', () => {
    expect(routeRequest(request('a1.ws.example.com'), 'example.com')).toMatchObject({ id: 'a1', port: undefined });
    expect(routeRequest(request('8080-a1.ws.example.com:443', '/x?y'), 'example.com')).toMatchObject({
      id: 'a1',
      port: 8080,
      path: '/x',
    });
    expect(routeRequest(request('A1.WS.Example.COM'), 'example.com')).toMatchObject({ id: 'a1' });
  });

  it('takes one label as the id, never several (red team round 14: evil.a1 under a1 set cookies for it)', () => {
    for (const host of ['evil.a1.ws.example.com', '8080-evil.a1.ws.example.com', 'x.8080-a1.ws.example.com']) {
      expect(routeRequest(request(host), 'example.com'), host).toMatchObject({ status: 404 });
    }
  });
});
