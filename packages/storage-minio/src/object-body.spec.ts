// The direct GET path against a scripted server on loopback: what a store (or anything between) may answer, and what
// the body stream then gives its reader.
import { createServer } from 'node:net';
import type { AddressInfo, Server, Socket } from 'node:net';
import type { Readable } from 'node:stream';
import { UnavailableError } from '@workbay/api';
import { afterEach, describe, expect, it } from 'vitest';
import { bodyChunkBytes, getObjectBody, maxResponseHeadBytes, parseHead } from './object-body.js';

const servers: Server[] = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => new Promise((resolve) => s.close(resolve))));
});

/** A server that answers every connection with `answer` once the request head has arrived. */
async function scripted(answer: (socket: Socket) => void): Promise<URL> {
  const server = createServer((socket) => {
    let head = '';
    socket.on('data', (chunk) => {
      head += chunk.toString('latin1');
      if (head.includes('\r\n\r\n')) answer(socket);
    });
    socket.on('error', () => undefined); // the client hangs up early in some cases, on purpose
  });
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return new URL(`http://127.0.0.1:${(server.address() as AddressInfo).port}/bucket/object?X-Amz-Signature=x`);
}

async function readAll(body: Readable): Promise<{ bytes: Buffer; chunks: number }> {
  const parts: Buffer[] = [];
  for await (const chunk of body) parts.push(chunk as Buffer);
  return { bytes: Buffer.concat(parts), chunks: parts.length };
}

const payload = (size: number): Buffer => Buffer.from(Array.from({ length: size }, (_, i) => (i * 7 + 3) % 251));

describe('getObjectBody', () => {
  it('streams exactly Content-Length bytes, with the head and body split across writes at odd places', async () => {
    const body = payload(9 * 1024 * 1024 + 17);
    const url = await scripted((socket) => {
      const whole = Buffer.concat([
        Buffer.from(
          `HTTP/1.1 200 OK\r\nContent-Length: ${body.length}\r\nX-Amz-Meta-Workbay-Digest: sha256:ab\r\n\r\n`,
        ),
        body,
      ]);
      let at = 0;
      const step = (): void => {
        const next = Math.min(whole.length, at + (at < 100 ? 7 : 1_000_003));
        socket.write(whole.subarray(at, next));
        at = next;
        if (at < whole.length) setImmediate(step);
        else socket.end();
      };
      step();
    });
    const response = await getObjectBody(url, 'object');
    expect(response?.contentLength).toBe(body.length);
    expect(response?.headers['x-amz-meta-workbay-digest']).toBe('sha256:ab');
    const read = await readAll(response!.body);
    expect(read.bytes.equals(body)).toBe(true);
    // Chunks are the socket's buffers, handed out when nearly full: a few, not one per read.
    expect(read.chunks).toBeLessThanOrEqual(Math.ceil(body.length / (bodyChunkBytes - 256 * 1024)) + 1);
  });

  it('an empty object ends at once', async () => {
    const url = await scripted((socket) => socket.end('HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n'));
    const response = await getObjectBody(url, 'object');
    expect((await readAll(response!.body)).bytes.length).toBe(0);
  });

  it('bytes past Content-Length are not handed out', async () => {
    const url = await scripted((socket) =>
      socket.end(Buffer.concat([Buffer.from('HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello'), payload(100_000)])),
    );
    const response = await getObjectBody(url, 'object');
    expect((await readAll(response!.body)).bytes.toString()).toBe('hello');
  });

  it('a connection closed before the last byte fails the stream with UNAVAILABLE naming how far it got', async () => {
    const url = await scripted((socket) => {
      socket.write(Buffer.concat([Buffer.from('HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n'), payload(4321)]));
      setTimeout(() => socket.destroy(), 20);
    });
    const response = await getObjectBody(url, 'object x');
    const error = await readAll(response!.body).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(UnavailableError);
    expect((error as Error).message).toContain('object x: the store closed the connection after 4321 of 1000000 bytes');
  });

  it.each([
    ['an error status', 'HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\n\r\nno!'],
    ['a redirect', 'HTTP/1.1 307 Temporary Redirect\r\nLocation: http://elsewhere/\r\nContent-Length: 0\r\n\r\n'],
    ['a chunked body', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n'],
    ['no length', 'HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nhello'],
    ['two lengths', 'HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 50\r\n\r\nhello'],
  ])('%s is left to the S3 client: undefined', async (_, answer) => {
    const url = await scripted((socket) => socket.end(answer));
    expect(await getObjectBody(url, 'object')).toBeUndefined();
  });

  it(`a head over ${maxResponseHeadBytes} bytes is refused`, async () => {
    const url = await scripted((socket) =>
      socket.end(`HTTP/1.1 200 OK\r\nX-Filler: ${'a'.repeat(maxResponseHeadBytes)}\r\nContent-Length: 1\r\n\r\nx`),
    );
    await expect(getObjectBody(url, 'object')).rejects.toThrow(/response head is over/);
  });

  it('a store that closes without answering, or is not there, rejects', async () => {
    const url = await scripted((socket) => socket.destroy());
    await expect(getObjectBody(url, 'object')).rejects.toBeInstanceOf(UnavailableError);
    const closed = new URL(url);
    await new Promise((resolve) => servers.pop()!.close(resolve));
    await expect(getObjectBody(closed, 'object')).rejects.toMatchObject({ code: 'ECONNREFUSED' });
  });

  it('reads the socket only as fast as its reader takes chunks', async () => {
    const size = 256 * 1024 * 1024;
    let written = 0;
    const url = await scripted((socket) => {
      socket.write(`HTTP/1.1 200 OK\r\nContent-Length: ${size}\r\n\r\n`);
      const block = Buffer.alloc(1024 * 1024);
      const pump = (): void => {
        while (written < size) {
          written += block.length;
          if (!socket.write(block)) return void socket.once('drain', pump);
        }
        socket.end();
      };
      pump();
    });
    const response = await getObjectBody(url, 'object');
    // Nobody reads for a while: the server's writes stop at what two chunks and the sockets' buffers hold.
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(written).toBeLessThan(64 * 1024 * 1024);
    expect(response!.body.readableLength).toBeLessThanOrEqual(3 * bodyChunkBytes);
    expect((await readAll(response!.body)).bytes.length).toBe(size);
  });

  it('destroying the body closes the connection', async () => {
    let closed: Promise<void> | undefined;
    const url = await scripted((socket) => {
      closed = new Promise((resolve) => socket.on('close', () => resolve()));
      socket.write(`HTTP/1.1 200 OK\r\nContent-Length: 100000000\r\n\r\n`);
      socket.write(payload(1000));
    });
    const response = await getObjectBody(url, 'object');
    response!.body.destroy();
    await closed;
  });
});

describe('parseHead', () => {
  it('takes HTTP/1.0 and 1.1, lower-cases names and keeps the first of repeated headers', () => {
    expect(parseHead('HTTP/1.0 200 OK\r\nContent-Length: 3\r\nETag: "a"\r\netag: "b"')).toEqual({
      contentLength: 3,
      headers: { 'content-length': '3', etag: '"a"' },
    });
  });

  it.each([
    'HTTP/2 200\r\nContent-Length: 3',
    'HTTP/1.1 2000 OK\r\nContent-Length: 3',
    'HTTP/1.1 200 OK\r\nContent-Length: -3',
    'HTTP/1.1 200 OK\r\nContent-Length: 3 3',
    'HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999',
    'HTTP/1.1 200 OK\r\nContent-Length: 3\r\n folded',
    'HTTP/1.1 200 OK\r\nContent-Length: 3\r\n: no name',
    'HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: identity',
  ])('refuses %j', (head) => {
    expect(parseHead(head)).toBeUndefined();
  });
});
