import { connect, createServer } from 'node:net';
import type { Socket } from 'node:net';
import { availableParallelism } from 'node:os';
import { describe, expect, it } from 'vitest';
import {
  canonicalAddress,
  connectionKey,
  parseSocketQueues,
  parseSsQueues,
  readProcSocketQueues,
  readNodeTcpBytes,
  readSsSocketQueues,
} from './socket-queues.js';

describe('canonicalAddress', () => {
  it('spells each address one way, IPv4-mapped included', () => {
    expect(canonicalAddress('127.0.0.1')).toBe('127.0.0.1');
    expect(canonicalAddress('::ffff:127.0.0.1')).toBe('0:0:0:0:0:ffff:7f00:1');
    expect(canonicalAddress('::FFFF:7f00:0001')).toBe('0:0:0:0:0:ffff:7f00:1');
    expect(canonicalAddress('::1')).toBe('0:0:0:0:0:0:0:1');
    expect(canonicalAddress('fe80::1%eth0')).toBe('fe80:0:0:0:0:0:0:1');
    expect(canonicalAddress('2001:db8:0:0:0:0:0:1')).toBe('2001:db8:0:0:0:0:0:1');
    for (const bad of ['', 'host', '1::2::3', '::ffff:300.0.0.1', '1:2:3:4:5:6:7:8:9', 'g::1']) {
      expect(canonicalAddress(bad)).toBeUndefined();
    }
  });
});

describe('parseSocketQueues', () => {
  it('reads the send and receive queues of connections from /proc/net/tcp and tcp6, not listeners', () => {
    const tcp = [
      '  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode',
      '   0: 0100007F:1F90 00000000:0000 0A 00000000:00000003 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0',
      '   1: 0100007F:1F90 0200007F:D431 01 00010000:00000200 00:00000000 00000000     0        0 2 1 0 20 4 30 10 -1',
    ].join('\n');
    const tcp6 = [
      '  sl  local_address                         remote_address                        st tx_queue rx_queue',
      '   0: 0000000000000000FFFF00000100007F:1F90 0000000000000000FFFF00000300007F:A000 01 00000010:00000001 00:0',
    ].join('\n');
    const queues = parseSocketQueues(tcp6, parseSocketQueues(tcp));
    expect([...queues]).toEqual([
      ['127.0.0.1:8080|127.0.0.2:54321', { send: 0x10000, receive: 0x200 }],
      ['0:0:0:0:0:ffff:7f00:1:8080|0:0:0:0:0:ffff:7f00:3:40960', { send: 0x10, receive: 1 }],
    ]);
    // Only the connections of the given local ports, when asked.
    const other = [
      '   2: 0100007F:0050 0200007F:D432 01 00000100:00000000 00:00000000 00000000     0        0 3',
      // TIME_WAIT holds no buffers (the proxy's own port had 45,000 of them in 40 s, 18b).
      '   3: 0100007F:0050 0200007F:D433 06 00000000:00000000 03:00000DC8 00000000     0        0 0',
    ].join('\n');
    expect([...parseSocketQueues(`${tcp}\n${other}`, undefined, new Set([80])).keys()]).toEqual([
      '127.0.0.1:80|127.0.0.2:54322',
    ]);
    expect(parseSocketQueues(`${tcp}\n${other}`, undefined, new Set([8080])).size).toBe(1);
    expect(connectionKey('::ffff:127.0.0.1', 8080, '::ffff:127.0.0.3', 40960)).toBe(
      '0:0:0:0:0:ffff:7f00:1:8080|0:0:0:0:0:ffff:7f00:3:40960',
    );
    expect(connectionKey(undefined, 1, '127.0.0.1', 2)).toBeUndefined();
  });

  it('reads the queues of connections from ss -tnHm with several states, with the memory the kernel charges', () => {
    const ss = [
      'ESTAB      512    65536   127.0.0.1:8080   127.0.0.2:54321',
      '\t skmem:(r1280,rb131072,t0,tb2626560,f2816,w140800,o0,bl0,d0) ',
      'FIN-WAIT-1 0      4096    [::ffff:127.0.0.1]:8080 [::ffff:127.0.0.3]:40960',
      'ESTAB      1      0       [fe80::1%lo]:80  [fe80::2]:5000',
      '',
    ].join('\n');
    expect([...parseSsQueues(ss)]).toEqual([
      ['127.0.0.1:8080|127.0.0.2:54321', { send: 65536, receive: 512, memory: 1280 + 140800 + 2816 }],
      ['0:0:0:0:0:ffff:7f00:1:8080|0:0:0:0:0:ffff:7f00:3:40960', { send: 4096, receive: 0 }],
      ['fe80:0:0:0:0:0:0:1:80|fe80:0:0:0:0:0:0:2:5000', { send: 0, receive: 1 }],
    ]);
    expect([...parseSsQueues(ss, undefined, new Set([80])).keys()]).toEqual([
      'fe80:0:0:0:0:0:0:1:80|fe80:0:0:0:0:0:0:2:5000',
    ]);
  });

  it("finds what the kernel holds for this process's own connection, through ss and /proc alike", async () => {
    let accepted: Socket | undefined;
    const server = createServer((socket) => {
      accepted = socket;
      socket.pause();
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as { port: number }).port;
    const client = connect(port, '127.0.0.1');
    await new Promise((resolve) => client.once('connect', resolve));
    client.write(Buffer.alloc(8 * 1024 * 1024, 1));
    await new Promise((resolve) => setTimeout(resolve, 300));
    const end = accepted!;
    const key = connectionKey(end.localAddress, end.localPort, end.remoteAddress, end.remotePort)!;
    const clientKey = connectionKey(client.localAddress, client.localPort, client.remoteAddress, client.remotePort)!;
    const ports = new Set([end.localPort!, client.localPort!]);
    // `ss` is installed where the tests run (scripts/system-deps.mjs: iproute2).
    const viaSs = (await readSsSocketQueues(ports))!;
    // With the memory the kernel charges: at least the data it holds.
    expect(viaSs.get(key)?.memory).toBeGreaterThanOrEqual(viaSs.get(key)!.receive);
    for (const queues of [viaSs, await readProcSocketQueues(ports)]) {
      // The server reads nothing: the bytes wait in its receive queue and in the client's send queue.
      expect(queues.get(key)?.receive).toBeGreaterThan(64 * 1024);
      expect((queues.get(key)?.receive ?? 0) + (queues.get(clientKey)?.send ?? 0)).toBeGreaterThan(1024 * 1024);
    }
    // The node's TCP memory (pages of 4 KiB) holds what is queued here, give or take what each CPU keeps in its own
    // reserve: the kernel adds a CPU's charges to the node's count once they pass 1 MiB (SK_MEMORY_PCPU_RESERVE), so
    // the count can lag by up to 1 MiB a CPU (CI saw 962,560 bytes for more than 1 MiB queued).
    const viaProc = await readProcSocketQueues(ports);
    const queued = (viaProc.get(key)?.receive ?? 0) + (viaProc.get(clientKey)?.send ?? 0);
    const node = await readNodeTcpBytes();
    expect(node % 4096).toBe(0);
    expect(node + availableParallelism() * 1024 * 1024).toBeGreaterThan(queued);
    client.destroy();
    end.destroy();
    await new Promise((resolve) => server.close(resolve));
  });
});
