import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { stripQuery } from './admission.js';
import { ReservedEndpoints, isSharedHost } from './exposure.js';
import {
  deepDecode,
  lenientDecode,
  parseCookies,
  parseHost,
  parseQuery,
  parseTarget,
  safeDecode,
  sameSiteLocation,
} from './parse.js';

/** Strings built from the pieces that break naive parsers. */
const nasty = fc
  .array(
    fc.oneof(
      fc.constantFrom('%', '%0', '%00', '%zz', '%C0%AF', '%E0%80%AF', '%ED%A0%80', '%FF', '%25', '%2525', '..', '//'),
      fc.constantFrom('\\', '/\\', ';', '&', '=', '+', '?', '#', '"', ' ', '\t', '\u0000', '\uD800', '\u00ff'),
      fc.string({ maxLength: 8 }),
      fc.string({ unit: 'binary', maxLength: 8 }),
    ),
    { maxLength: 12 },
  )
  .map((parts) => parts.join(''));

describe('proxy parsers are total', () => {
  it('never throw, whatever the input', () => {
    fc.assert(
      fc.property(nasty, (s) => {
        lenientDecode(s, true);
        deepDecode(s);
        safeDecode(s);
        parseTarget(s);
        parseTarget(`/${s}`);
        parseHost(s);
        parseCookies(s);
        parseQuery(s);
        stripQuery(s, 'token');
        new ReservedEndpoints().add(s);
        isSharedHost(s);
      }),
      { numRuns: 2000 },
    );
  });

  it('a redirect target is always on this site, whatever the path', () => {
    fc.assert(
      fc.property(nasty, (s) => {
        const location = sameSiteLocation(s);
        expect(location).toMatch(/^\/(?![/\\])[\x21-\x7e]*$/);
        // What a browser makes of it: the same host, always.
        expect(new URL(location, 'http://proxy.test/ws/a/').host).toBe('proxy.test');
      }),
      { numRuns: 2000 },
    );
    for (const attack of ['//evil.example', '/\\evil.example', '\\\\evil.example', '/\t/evil.example', '///x']) {
      expect(new URL(sameSiteLocation(attack), 'http://proxy.test/').host).toBe('proxy.test');
    }
  });

  it('decodes what is encoded and keeps what is not', () => {
    expect(lenientDecode('%')).toBe('%');
    expect(lenientDecode('a%2Fb%zz')).toBe('a/b%zz');
    expect(lenientDecode('a+b', true)).toBe('a b');
    expect(deepDecode('%2577orkbay')).toBe('workbay');
    expect(safeDecode('%')).toBeUndefined();
  });

  it('only origin-form targets are accepted', () => {
    expect(parseTarget('/a?b#c')).toEqual({ path: '/a', query: 'b' });
    expect(parseTarget('http://127.0.0.1:9501/admin/maintenance')).toBeUndefined();
    expect(parseTarget('127.0.0.1:9501')).toBeUndefined();
    expect(parseTarget('*')).toBeUndefined();
  });

  it('Host headers: name without the port, malformed is undefined', () => {
    expect(parseHost('A.ws.Example:7780')).toBe('a.ws.example');
    expect(parseHost('[::1]:80')).toBe('[::1]');
    expect(parseHost(undefined)).toBe('');
    for (const bad of ['a b', 'user@host', 'host:99999', 'host:', '[::1', 'a/b', ['a', 'b']]) {
      expect(parseHost(bad)).toBeUndefined();
    }
  });

  it('query parts keep their separators and decode names deeply', () => {
    const parts = parseQuery('a=1;%2577orkbayOwnerToken=x&b%3D2');
    expect(parts.map((p) => [p.separator, p.name, p.value])).toEqual([
      ['', 'a', '1'],
      [';', 'workbayOwnerToken', 'x'],
      ['&', 'b', '2'],
    ]);
  });

  it('ReservedEndpoints takes host:port and [v6]:port', () => {
    const r = new ReservedEndpoints().add('127.0.0.1:9501').add('[::1]:7780').add('').add('nonsense').add('x:0');
    expect(r.list()).toEqual([7780, 9501]);
  });

  it('shared hosts: loopback, unspecified, names and this machine; not a foreign address', () => {
    for (const h of ['127.0.0.1', '127.1.2.3', '::1', '[::1]', '0.0.0.0', 'localhost', 'example.com', undefined]) {
      expect(isSharedHost(h)).toBe(true);
    }
    expect(isSharedHost('10.254.253.2')).toBe(false);
  });
});
