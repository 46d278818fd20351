import { describe, expect, it } from 'vitest';
import { scopeAnswerHeader } from './answer-headers.js';

const pathRoute = { cookiePrefix: 'workbay_owner', prefix: '/ws/m1/port/8090' };
const hostRoute = { cookiePrefix: 'workbay_owner', prefix: '' };

describe('scopeAnswerHeader (red team round 9: a workspace acting on the shared origin)', () => {
  it('drops headers that act on the whole origin or domain', () => {
    for (const name of ['Clear-Site-Data', 'clear-site-data', 'Service-Worker-Allowed']) {
      expect(scopeAnswerHeader(name, '"cookies", "storage"', pathRoute), name).toBeUndefined();
      expect(scopeAnswerHeader(name, '/', hostRoute), name).toBeUndefined();
    }
    expect(scopeAnswerHeader('content-type', 'text/html', pathRoute)).toBe('text/html');
  });

  it("keeps a workspace's cookies below its own prefix, without Domain", () => {
    const cases: Array<[string, string | undefined]> = [
      ['sess=fixated; Path=/ws/a2/; Max-Age=99999', 'sess=fixated; Path=/ws/m1/port/8090/ws/a2/; Max-Age=99999'],
      ['a=1; Path=/', 'a=1; Path=/ws/m1/port/8090/'],
      ['a=1; path=/api; HttpOnly', 'a=1; Path=/ws/m1/port/8090/api; HttpOnly'],
      ['a=1', 'a=1'],
      ['a=1; Path=relative', 'a=1'],
      ['a=1; Domain=example.com; Secure', 'a=1; Secure'],
      ['workbay_owner_a2=x; Path=/', undefined],
      ['__Host-workbay_owner_a2=x; Path=/; Secure', undefined],
      ['__secure-Workbay_Owner_a2=x', undefined],
    ];
    for (const [value, expected] of cases)
      expect(scopeAnswerHeader('Set-Cookie', value, pathRoute), value).toBe(expected);
  });

  it('with host routing keeps the path and still drops Domain', () => {
    expect(scopeAnswerHeader('set-cookie', 'a=1; Path=/x; Domain=.ws.example.com', hostRoute)).toBe('a=1; Path=/x');
  });
});
