import { lstat, mkdtemp, readdir, rm } from 'node:fs/promises';
import { connect as http2Connect } from 'node:http2';
import type { ClientHttp2Session } from 'node:http2';
import { connect } from 'node:net';
import type { Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { sendUnaryData, ServerUnaryCall } from '@grpc/grpc-js';
import { createInWorkspaceClient } from '@workbay/api';
import type { InWorkspaceServiceServer } from '@workbay/api';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_MAX_CONNECTIONS, listenIws } from './server.js';

// The listener of a workspace's socket, with real unix sockets: how many connections it keeps, for how long.

const service = {
  teardown: (_call: ServerUnaryCall<unknown, unknown>, callback: sendUnaryData<unknown>) =>
    callback(null, { success: true }),
} as unknown as InWorkspaceServiceServer;

interface Raw {
  readonly socket: Socket;
  closed: boolean;
}

/** A plain connection that never sends a byte; `closed` turns true when the server closes it. */
function rawConnect(path: string): Promise<Raw> {
  return new Promise((resolve) => {
    const socket = connect(path);
    const raw: Raw = { socket, closed: false };
    socket.on('error', () => undefined);
    // Reading (and dropping) what the server sends, or its end would never be seen.
    socket.resume();
    socket.on('close', () => {
      raw.closed = true;
      resolve(raw);
    });
    socket.on('connect', () => resolve(raw));
  });
}

async function until(check: () => boolean, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) return false;
    await sleep(20);
  }
  return true;
}

describe('listenIws on a unix socket', () => {
  let scratch: string;
  const raws: Raw[] = [];

  beforeAll(async () => {
    scratch = await mkdtemp(join(tmpdir(), 'iws-server-'));
  });

  afterAll(async () => {
    for (const r of raws) r.socket.destroy();
    if (scratch) await rm(scratch, { recursive: true, force: true });
  });

  it('caps connections by default', () => {
    expect(DEFAULT_MAX_CONNECTIONS).toBe(64);
  });

  it('closes connections beyond maxConnections at once, while an existing channel keeps working', async () => {
    const socketPath = join(scratch, 'cap', 'daemon.sock');
    const handle = await listenIws(service, { socketPath, maxConnections: 4 });
    const client = createInWorkspaceClient(handle.target);
    try {
      expect((await client.teardown({}, { timeoutMs: 5000 })).success).toBe(true);
      const flood = await Promise.all(Array.from({ length: 40 }, () => rawConnect(socketPath)));
      raws.push(...flood);
      // The channel holds one connection: 3 raw ones stay, the other 37 are closed by the server.
      expect(await until(() => flood.filter((r) => r.closed).length >= 37, 5000)).toBe(true);
      await sleep(200);
      expect(flood.filter((r) => !r.closed)).toHaveLength(3);
      expect((await client.teardown({}, { timeoutMs: 5000 })).success).toBe(true);
      // A new connection beyond the cap is closed too; one frees a slot, and the next one is kept.
      const more = await rawConnect(socketPath);
      raws.push(more);
      expect(await until(() => more.closed, 2000)).toBe(true);
      flood.find((r) => !r.closed)!.socket.destroy();
      await sleep(100);
      const kept = await rawConnect(socketPath);
      raws.push(kept);
      await sleep(300);
      expect(kept.closed).toBe(false);
    } finally {
      client.close();
      await handle.close(100);
    }
    // Closing drops every connection and the socket.
    expect(await until(() => raws.every((r) => r.closed), 5000)).toBe(true);
    await expect(lstat(socketPath)).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('bounds what a workspace may make it hold: 60 connections × 16 streams of 4 MiB requests grow it by tens of MiB, not GiB', async () => {
    const socketPath = join(scratch, 'flood', 'daemon.sock');
    const handle = await listenIws(service, { socketPath });
    const client = createInWorkspaceClient(handle.target);
    const sessions: ClientHttp2Session[] = [];
    try {
      global.gc?.();
      const before = process.memoryUsage();
      // Requests that announce 4 MiB (over the 64 KiB limit) and send it, on every stream a connection may open, on
      // nearly every connection allowed (red team round 4: daemon RSS 93 -> 220 MB): HTTP/2 flow control and the
      // length check keep what the daemon holds far below the 3.75 GiB sent.
      const body = Buffer.alloc(4 * 1024 * 1024 + 5, 7);
      body.writeUInt8(0, 0);
      body.writeUInt32BE(4 * 1024 * 1024, 1);
      for (let c = 0; c < 60; c++) {
        const session = http2Connect('http://localhost', { createConnection: () => connect(socketPath) });
        session.on('error', () => undefined);
        sessions.push(session);
        for (let i = 0; i < 16; i++) {
          const stream = session.request({
            ':method': 'POST',
            ':path': '/iws.InWorkspaceService/Teardown',
            'content-type': 'application/grpc',
            te: 'trailers',
          });
          stream.on('error', () => undefined);
          stream.resume();
          stream.write(body);
        }
      }
      await sleep(1500);
      const after = process.memoryUsage();
      const grown = after.arrayBuffers + after.heapUsed - (before.arrayBuffers + before.heapUsed);
      console.log(`960 streams of 4 MiB requests: the server's memory grew ${(grown / 1048576).toFixed(1)} MiB`);
      expect(grown).toBeLessThan(96 * 1024 * 1024);
      // And it still answers.
      expect((await client.teardown({}, { timeoutMs: 5000 })).success).toBe(true);
    } finally {
      for (const session of sessions) session.destroy();
      client.close();
      await handle.close(100);
    }
  });

  it('closes a connection without a call after connectionIdleMs, even one that never sent a byte', async () => {
    const socketPath = join(scratch, 'idle', 'daemon.sock');
    const handle = await listenIws(service, { socketPath, connectionIdleMs: 300 });
    try {
      const silent = await rawConnect(socketPath);
      raws.push(silent);
      expect(silent.closed).toBe(false);
      expect(await until(() => silent.closed, 5000)).toBe(true);
      // Peers that neither send nor read: the server's end of each is closed all the same (its descriptors go).
      const before = (await readdir('/proc/self/fd')).length;
      const mute = await Promise.all(
        Array.from(
          { length: 20 },
          () =>
            new Promise<Socket>((resolve) => {
              const socket = connect(socketPath, () => resolve(socket));
              socket.on('error', () => undefined);
              socket.pause();
            }),
        ),
      );
      try {
        await sleep(50);
        // 20 of the client's, 20 of the server's.
        expect((await readdir('/proc/self/fd')).length).toBeGreaterThanOrEqual(before + 40);
        let now = Infinity;
        for (const end = Date.now() + 4000; Date.now() < end && now > before + 22; await sleep(100)) {
          now = (await readdir('/proc/self/fd')).length;
        }
        expect(now).toBeLessThanOrEqual(before + 22);
      } finally {
        for (const socket of mute) socket.destroy();
      }
      // A channel whose connection was closed while idle reconnects on its next call.
      const client = createInWorkspaceClient(handle.target);
      try {
        expect((await client.teardown({}, { timeoutMs: 5000 })).success).toBe(true);
        await sleep(800);
        expect((await client.teardown({}, { timeoutMs: 5000 })).success).toBe(true);
      } finally {
        client.close();
      }
    } finally {
      await handle.close(100);
    }
  });
});
