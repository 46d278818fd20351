// How the proxy reads a workspace's answer to an upgrade: judged when it can have changed, not at every chunk.
import type { Socket } from 'node:net';
import { PassThrough, Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { judgeAnswer, relayAnswer } from './upgrade.js';

const scope = { cookiePrefix: 'workbay_owner', prefix: '/ws/x' };

/** Feeds `answer` to relayAnswer `step` bytes per chunk; returns what it did and how often it judged. */
async function relay(
  answer: Buffer,
  step: number,
): Promise<{ judged: number; finished?: Buffer | string; tunnelled: boolean; written: Buffer }> {
  const upstream = new PassThrough();
  const written: Buffer[] = [];
  const socket = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      written.push(Buffer.from(chunk));
      callback();
    },
  }) as unknown as Socket;
  let judged = 0;
  let finished: Buffer | string | undefined;
  let tunnelled = false;
  relayAnswer(
    upstream,
    socket,
    scope,
    (a) => (finished = a),
    () => (tunnelled = true),
    (buffered, s) => {
      judged += 1;
      return judgeAnswer(buffered, s);
    },
  );
  for (let at = 0; at < answer.length && finished === undefined && !tunnelled; at += step) {
    // Each chunk is a copy that is scribbled over once handed in, as a socket reuses its read buffer: an answer
    // that comes out right was copied, not kept as views (16b: views of 64 KiB read buffers held hundreds of MB).
    const chunk = Buffer.from(answer.subarray(at, at + step));
    upstream.write(chunk);
    await new Promise((resolve) => setImmediate(resolve));
    chunk.fill(0x58);
  }
  upstream.unpipe();
  return { judged, ...(finished !== undefined ? { finished } : {}), tunnelled, written: Buffer.concat(written) };
}

describe('relayAnswer', () => {
  it('judges a head sent a byte at a time once its end is in, and its body once all of it is (red team round 16, H2)', async () => {
    // A 60 KB head, then a 4 KB body, a byte per chunk: judging every chunk copied and parsed the whole head each
    // time, and 400 such handshakes kept the manager's core busy.
    const padding = Array.from({ length: 110 }, (_, i) => `X-H${i}: ${'a'.repeat(520)}\r\n`).join('');
    const body = Buffer.alloc(4096, 0x62);
    const answer = Buffer.concat([
      Buffer.from(`HTTP/1.1 200 OK\r\n${padding}Content-Length: ${body.length}\r\n\r\n`, 'latin1'),
      body,
    ]);
    expect(answer.length).toBeGreaterThan(60_000);
    const result = await relay(answer, 1);
    expect(result.judged).toBe(2);
    expect(Buffer.isBuffer(result.finished)).toBe(true);
    expect((result.finished as Buffer).subarray(-body.length).equals(body)).toBe(true);
  });

  it('finds the head’s end across chunks, with LF and CRLF line ends, and tunnels what follows a 101', async () => {
    for (const head of [
      'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n',
      'HTTP/1.1 101 OK\nUpgrade: x\n\n',
    ]) {
      for (const step of [1, 2, 3, 1000]) {
        const result = await relay(Buffer.from(`${head}frame`, 'latin1'), step);
        expect(result.tunnelled).toBe(true);
        expect(result.judged).toBe(1);
        expect(result.written.toString('latin1')).toMatch(/^HTTP\/1\.1 101 /);
      }
    }
  });

  it('refuses a head that never ends past its bound, and an answer too large, without judging each chunk', async () => {
    const endless = await relay(Buffer.from(`HTTP/1.1 101 OK\r\nX: ${'a'.repeat(70_000)}`, 'latin1'), 512);
    expect(endless.finished).toBe('answer head too large');
    expect(endless.judged).toBe(1);
    const refused = await relay(Buffer.from('HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n', 'latin1'), 1);
    expect(String(refused.finished)).toContain('without a body to relay');
  });
});
