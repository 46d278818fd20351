// The direct ranged GET (readInto's fast path) against a scripted server on loopback: the range asked for, what a store
// (or anything between) may answer, and what lands in the caller's buffer.
import { createServer } from 'node:net';
import type { AddressInfo, Server, Socket } from 'node:net';
import { Readable } from 'node:stream';
import { CancelledError, UnavailableError } from '@workbay/api';
import { afterEach, describe, expect, it } from 'vitest';
import { fillFrom, readObjectRange } from './object-range.js';

const servers: Server[] = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => new Promise((resolve) => s.close(resolve))));
});

/** A server that answers each connection with `answer(socket, head)` once the request head has arrived. */
async function scripted(answer: (socket: Socket, head: string) => void): Promise<URL> {
  const server = createServer((socket) => {
    let head = '';
    socket.on('data', (chunk) => {
      head += chunk.toString('latin1');
      if (head.includes('\r\n\r\n')) answer(socket, head);
    });
    socket.on('error', () => undefined); // the client hangs up early in some cases, on purpose
  });
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return new URL(`http://127.0.0.1:${(server.address() as AddressInfo).port}/bucket/object?X-Amz-Signature=x`);
}

const payload = (size: number): Buffer => Buffer.from(Array.from({ length: size }, (_, i) => (i * 7 + 3) % 251));

/** Writes `bytes` in small pieces first, then large ones, as a real socket may deliver them. */
function dribble(socket: Socket, bytes: Buffer, end = true): void {
  let at = 0;
  const step = (): void => {
    const next = Math.min(bytes.length, at + (at < 100 ? 7 : 1_000_003));
    socket.write(bytes.subarray(at, next));
    at = next;
    if (at < bytes.length) setImmediate(step);
    else if (end) socket.end();
  };
  step();
}

/** Serves `object` as a store would: 206 with the asked range, 416 past its end. */
function rangeServer(object: Buffer): (socket: Socket, head: string) => void {
  return (socket, head) => {
    const [, from, to] = /\r\nRange: bytes=(\d+)-(\d+)\r\n/.exec(head) ?? [];
    const start = Number(from);
    if (start >= object.length) {
      socket.end('HTTP/1.1 416 Requested Range Not Satisfiable\r\nContent-Length: 5\r\n\r\n<Err>');
      return;
    }
    const body = object.subarray(start, Math.min(object.length, Number(to) + 1));
    dribble(
      socket,
      Buffer.concat([Buffer.from(`HTTP/1.1 206 Partial Content\r\nContent-Length: ${body.length}\r\n\r\n`), body]),
    );
  };
}

describe('readObjectRange', () => {
  it('asks for exactly the buffer’s range and reads it into the buffer, from any offset, up to the object’s end', async () => {
    const object = payload(3 * 1024 * 1024 + 11);
    const url = await scripted(rangeServer(object));
    const shared = new Uint8Array(new SharedArrayBuffer(1024 * 1024));
    expect(await readObjectRange(url, shared, 5_000, 'object')).toBe(shared.length);
    expect(Buffer.from(shared).equals(object.subarray(5_000, 5_000 + shared.length))).toBe(true);
    const tail = Buffer.alloc(100);
    expect(await readObjectRange(url, tail, object.length - 40, 'object')).toBe(40);
    expect(tail.subarray(0, 40).equals(object.subarray(-40))).toBe(true);
    expect(await readObjectRange(url, Buffer.alloc(10), object.length, 'object')).toBe(0);
  });

  it('takes a 200 from offset 0 (a store that ignores ranges) up to the buffer, and leaves one elsewhere to the S3 client', async () => {
    const object = payload(200_000);
    const url = await scripted((socket) =>
      dribble(
        socket,
        Buffer.concat([Buffer.from(`HTTP/1.1 200 OK\r\nContent-Length: ${object.length}\r\n\r\n`), object]),
      ),
    );
    const into = Buffer.alloc(150_000);
    expect(await readObjectRange(url, into, 0, 'object')).toBe(150_000);
    expect(into.equals(object.subarray(0, 150_000))).toBe(true);
    expect(await readObjectRange(url, into, 10, 'object')).toBeUndefined();
  });

  it('leaves errors, redirects and chunked bodies to the S3 client', async () => {
    for (const head of [
      'HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\n\r\nno!',
      'HTTP/1.1 307 Temporary Redirect\r\nLocation: http://elsewhere/\r\nContent-Length: 0\r\n\r\n',
      'HTTP/1.1 206 Partial Content\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n',
      'HTTP/1.1 206 Partial Content\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd',
    ]) {
      const url = await scripted((socket) => socket.end(head));
      expect(await readObjectRange(url, Buffer.alloc(10), 0, 'object')).toBeUndefined();
    }
  });

  it('fails UNAVAILABLE when the store closes early, naming how far it got, and CANCELLED on an abort', async () => {
    const url = await scripted((socket) =>
      socket.end('HTTP/1.1 206 Partial Content\r\nContent-Length: 100\r\n\r\nabc'),
    );
    const early = await readObjectRange(url, Buffer.alloc(100), 0, 'object').catch((e: unknown) => e);
    expect(early).toBeInstanceOf(UnavailableError);
    expect((early as Error).message).toContain('after 3 of 100 bytes');

    const silent = await scripted(() => undefined);
    const controller = new AbortController();
    const pending = readObjectRange(silent, Buffer.alloc(10), 0, 'object', controller.signal);
    setTimeout(() => controller.abort(), 50);
    expect(await pending.catch((e: unknown) => e)).toBeInstanceOf(CancelledError);
  });

  it('refuses a response head over its bound', async () => {
    const url = await scripted((socket) =>
      socket.end(`HTTP/1.1 206 Partial Content\r\nX-Pad: ${'a'.repeat(70_000)}\r\n\r\n`),
    );
    const error = await readObjectRange(url, Buffer.alloc(10), 0, 'object').catch((e: unknown) => e);
    expect(error).toBeInstanceOf(UnavailableError);
    expect((error as Error).message).toContain('response head is over');
  });
});

describe('fillFrom', () => {
  it('copies a stream into the buffer until it is full or the stream ends, and closes the stream', async () => {
    const into = Buffer.alloc(10);
    const stream = Readable.from([Buffer.from('abcdef'), Buffer.from('ghijklmn')]);
    expect(await fillFrom(stream, into)).toBe(10);
    expect(into.toString()).toBe('abcdefghij');
    expect(stream.destroyed).toBe(true);
    expect(await fillFrom(Readable.from([Buffer.from('xy')]), Buffer.alloc(10))).toBe(2);
  });
});
