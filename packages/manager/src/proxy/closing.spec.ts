import { connect, createServer } from 'node:net';
import type { Socket } from 'node:net';
import { describe, expect, it } from 'vitest';
import { resetOrDestroy } from './closing.js';

describe('resetOrDestroy', () => {
  it('closes a socket whose FIN is on its way, instead of leaking its handle (red team round 18b, N5)', async () => {
    // libuv refuses to reset while its shutdown request is pending (EINVAL), and Node then drops the handle unclosed:
    // the descriptor leaks and the process spins at exit. This is the turn right after end() has been acted on.
    const errors: string[] = [];
    let closed!: Promise<void>;
    const server = createServer((socket: Socket) => {
      socket.on('error', (error: NodeJS.ErrnoException) => errors.push(`${error.code} ${error.syscall}`));
      closed = new Promise((resolve) => socket.once('close', () => resolve()));
      socket.write(Buffer.alloc(1000, 1));
      socket.end();
      process.nextTick(() => process.nextTick(() => resetOrDestroy(socket)));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const client = connect((server.address() as { port: number }).port, '127.0.0.1');
    client.pause();
    client.on('error', () => undefined);
    await new Promise((resolve) => setTimeout(resolve, 200));
    await Promise.race([closed, new Promise((_, reject) => setTimeout(() => reject(new Error('not closed')), 2_000))]);
    expect(errors).toEqual([]);
    client.destroy();
    await new Promise((resolve) => server.close(resolve));
  });
});
