import { describe, expect, it } from 'vitest';
import { setsOwnerCookie } from './admission.js';
import { parseAnswerHead } from './answer-head.js';
import { judgeAnswer } from './upgrade.js';

const parse = (text: string, max = 1024): ReturnType<typeof parseAnswerHead> =>
  parseAnswerHead(Buffer.from(text, 'latin1'), max);

describe('parseAnswerHead', () => {
  it('accepts CRLF, LF and mixed line ends, and tells where the head ends', () => {
    for (const text of [
      'HTTP/1.1 101 OK\r\na: 1\r\n\r\nrest',
      'HTTP/1.1 101 OK\na: 1\n\nrest',
      'HTTP/1.1 101 OK\na: 1\r\n\nrest',
    ]) {
      const head = parse(text);
      expect(head.kind).toBe('head');
      if (head.kind !== 'head') continue;
      expect(head.status).toBe(101);
      expect(head.headers).toEqual([['a', '1']]);
      expect(text.slice(head.length)).toBe('rest');
    }
  });

  it('waits for the end of the head, and refuses one larger than the bound', () => {
    expect(parse('HTTP/1.1 101 OK\r\na: 1\r\n').kind).toBe('incomplete');
    expect(parse(`HTTP/1.1 101 OK\r\na: ${'x'.repeat(2000)}`).kind).toBe('invalid');
    expect(parse(`HTTP/1.1 101 OK\r\na: ${'x'.repeat(2000)}\r\n\r\n`).kind).toBe('invalid');
  });

  it('refuses what parsers could read differently: bare CR, folding, control characters, odd names or status lines', () => {
    for (const text of [
      'HTTP/1.1 101 OK\r\na: 1\rset-cookie: x=1\r\n\r\n',
      'HTTP/1.1 101 OK\r\na: 1\r\n set-cookie: x=1\r\n\r\n',
      'HTTP/1.1 101 OK\r\na: 1\x00\r\n\r\n',
      'HTTP/1.1 101 OK\r\nset-cookie : x=1\r\n\r\n',
      'HTTP/1.1 101 OK\r\nno colon\r\n\r\n',
      'HTTP/2 101 OK\r\n\r\n',
      'HTTP/1.1 1010 OK\r\n\r\n',
      '\r\nHTTP/1.1 101 OK\r\n\r\n',
    ]) {
      expect(parse(text).kind, JSON.stringify(text)).toBe('invalid');
    }
  });
});

describe('judgeAnswer', () => {
  const judge = (text: string): ReturnType<typeof judgeAnswer> =>
    judgeAnswer(Buffer.from(text, 'latin1'), { cookiePrefix: 'workbay_owner', prefix: '/ws/x' });

  it('tunnels a single 101 without owner cookies', () => {
    const verdict = judge('HTTP/1.1 101 Switching Protocols\nSet-Cookie: workbay_owner_v=1\nSet-Cookie: a=1\n\nframes');
    expect(verdict.kind).toBe('tunnel');
    if (verdict.kind !== 'tunnel') return;
    expect(verdict.head.toString('latin1')).toBe('HTTP/1.1 101 Switching Protocols\r\nSet-Cookie: a=1\r\n\r\n');
    expect(verdict.rest.toString('latin1')).toBe('frames');
  });

  it('refuses informational heads and unframed bodies; waits for a framed body', () => {
    expect(judge('HTTP/1.1 100 Continue\r\n\r\n').kind).toBe('refuse');
    expect(judge('HTTP/1.1 200 OK\r\n\r\nbody').kind).toBe('refuse');
    expect(judge('HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 1\r\n\r\nb').kind).toBe('refuse');
    expect(judge('HTTP/1.1 404 Not Found\r\ncontent-length: 4\r\n\r\nno').kind).toBe('wait');
    expect(judge('HTTP/1.1 204 No Content\r\n\r\n').kind).toBe('relay');
  });
});

describe('setsOwnerCookie', () => {
  it('recognises owner cookies in every spelling, nameless ones included', () => {
    for (const c of [
      'workbay_owner_a=1',
      'WORKBAY_OWNER_a=1; Path=/',
      ' \t\x0bworkbay_owner_a=1',
      'workbay_owner_a =1',
      '=workbay_owner_a=1; Path=/ws/a/',
      ' =anything',
      'workbay_owner_a',
    ]) {
      expect(setsOwnerCookie(c, 'workbay_owner'), JSON.stringify(c)).toBe(true);
    }
  });

  it('lets other cookies through', () => {
    for (const c of ['session=abc; Path=/', 'a=workbay_owner_x', 'workbay_ownerx=1', 'theme']) {
      expect(setsOwnerCookie(c, 'workbay_owner'), c).toBe(false);
    }
  });
});
