/**
 * The proxy's connections to a workspace end with a reset, not a graceful close: a workspace that answers at once and
 * never reads the request's body left the rest of each body queued in an orphan socket that probed its zero window
 * for minutes (red team round 16b, J1: 18,701 orphans and 1.5 GB of the node's TCP memory in 30 s). Real proxy, real
 * sockets on 127.0.0.1; the kernel's view from `ss`.
 */
import { spawnSync } from 'node:child_process';
import { connect, createServer } from 'node:net';
import type { Server, Socket } from 'node:net';
import { Subject } from 'rxjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { WorkspaceRecord } from '../domain/types.js';
import { createSilentLogger } from '../logger.js';
import { makeRecord } from '../test-support/records.js';
import { PortProxy } from './port-proxy.js';

/** Sockets of this host to `port` in a state (`ss` filter), e.g. fin-wait-1: a close still waiting to send. */
function socketsTo(port: number, state: string): number {
  const r = spawnSync('ss', ['-Htn', 'state', state, `( dport = :${port} )`], { encoding: 'utf8' });
  return r.stdout.split('\n').filter((l) => l.trim() !== '').length;
}

describe('PortProxy against a workspace that answers early and never reads', () => {
  const held = new Set<Socket>();
  let workspace: Server;
  let port: number;
  let proxy: PortProxy;
  let proxyPort: number;
  const status$ = new Subject<WorkspaceRecord>();

  beforeAll(async () => {
    workspace = createServer((socket) => {
      held.add(socket);
      socket.on('error', () => undefined);
      socket.once('data', (chunk: Buffer) => {
        // The answer at once, then nothing: the request's body (or the tunnel's bytes) is never read, the connection
        // never closed.
        socket.write(
          chunk.toString('latin1').includes('upgrade: websocket')
            ? 'HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n\r\n'
            : 'HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok',
        );
        socket.pause();
      });
    });
    await new Promise<void>((resolve) => workspace.listen(0, '127.0.0.1', resolve));
    port = (workspace.address() as { port: number }).port;
    const base = makeRecord({ id: 'early', ownerToken: `Ab3_xY-9${'q'.repeat(24)}` });
    const record: WorkspaceRecord = {
      ...base,
      phase: 'running',
      spec: { ...base.spec, admission: 'everyone' },
      progress: { ...base.progress, runtimeHost: '127.0.0.1', idePort: port },
    };
    proxy = new PortProxy({
      router: { getWorkspace: (id) => (id === record.id ? record : undefined), allWorkspaces: () => [record] },
      address: '127.0.0.1:0',
      cookieName: 'workbay_owner',
      logger: createSilentLogger(),
    });
    proxyPort = Number((await proxy.start()).split(':').pop());
    proxy.follow(status$);
  });

  afterAll(async () => {
    await proxy?.stop();
    for (const s of held) s.destroy();
    await new Promise<void>((resolve) => workspace.close(() => resolve()));
  });

  it('leaves no socket of its own behind with the request’s body still queued', async () => {
    const body = 8 * 1024 * 1024;
    for (let i = 0; i < 5; i++) {
      const answer = await new Promise<string>((resolve) => {
        const client = connect(proxyPort, '127.0.0.1');
        let text = '';
        client.on('data', (chunk: Buffer) => {
          text += chunk.toString('latin1');
          // The whole answer is in: the client leaves, its upload unfinished.
          if (text.endsWith('\r\n\r\nok')) client.destroy();
        });
        client.on('close', () => resolve(text));
        client.on('error', () => undefined);
        client.write(`POST /ws/early/upload HTTP/1.1\r\nhost: p\r\ncontent-length: ${body}\r\n\r\n`);
        client.write(Buffer.alloc(body, 0x61));
      });
      expect(answer).toMatch(/^HTTP\/1\.1 200 /);
    }
    await new Promise((resolve) => setTimeout(resolve, 500));
    // Without the reset: one socket per request, closing for minutes behind a zero window.
    expect(socketsTo(port, 'fin-wait-1')).toBe(0);
  });
});
