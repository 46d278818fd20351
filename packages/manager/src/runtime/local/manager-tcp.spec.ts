// cgroup v1, as root: a process's TCP buffers held to its cgroup's cap (red team round 17, L4: the manager's proxy
// connections held 591 MB of the node's TCP memory for 60 clients of one address that did not read an 8 MB answer).
import { spawn, spawnSync } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { connect } from 'node:net';
import type { Socket } from 'node:net';
import path from 'node:path';
import { CgroupController } from '@workbay/nsinsider';
import { afterEach, describe, expect, it } from 'vitest';
import { createSilentLogger } from '../../logger.js';
import { confineManagerTcp, confineTcpMemory, managerCgroupName, managerTcpBytesFor } from './manager-tcp.js';

const isRoot = process.getuid?.() === 0;
const controller = isRoot ? await CgroupController.detect().catch(() => undefined) : undefined;
const v1 = controller?.version === 'v1';
const MiB = 1024 * 1024;

describe('managerTcpBytesFor', () => {
  it('takes half of what lies between the workspaces’ total and the node’s pressure mark', () => {
    // This machine's tcp_mem: 1.1 GB for the workspaces, pressure at 1.5 GB: 187 MiB (196,548,608 B) for the manager.
    expect(managerTcpBytesFor([287_907, 383_878, 575_814])).toBe(Math.floor(((383_878 - 287_907) * 4096) / 2));
    expect(managerTcpBytesFor([100, 110, 120])).toBe(16 * MiB);
    expect(managerTcpBytesFor([])).toBe(16 * MiB);
  });
});

describe('confineManagerTcp without cgroup v1', () => {
  it('still gives the budget, without a pressure: the proxy keeps within it by itself', async () => {
    const logger = createSilentLogger();
    const budget = await confineManagerTcp(undefined, 'spec', undefined, logger);
    expect(budget?.bytes).toBeGreaterThanOrEqual(16 * MiB);
    expect(budget?.pressure).toBeUndefined();
    expect(await confineManagerTcp(undefined, 'spec', 1234, logger)).toEqual({ bytes: 1234 });
    // 0 configured: no budget at all.
    expect(await confineManagerTcp(undefined, 'spec', 0, logger)).toBeUndefined();
  });
});

/** The bytes the sockets from `port` hold queued to send (`ss` Send-Q), summed. */
function queuedFrom(port: number): number {
  const r = spawnSync('ss', ['-Htn', 'state', 'established', `( sport = :${port} )`], { encoding: 'utf8' });
  return r.stdout
    .split('\n')
    .filter((l) => l.trim() !== '')
    .reduce((sum, line) => sum + Number(line.trim().split(/\s+/)[1] ?? 0), 0);
}

/** A server sending 8 MB to every connection; prints its port once listening. */
const server = `
const net = require('node:net');
const answer = Buffer.alloc(8 * 1024 * 1024, 0x61);
net.createServer((s) => { s.on('error', () => {}); s.write(answer); }).listen(0, '127.0.0.1', function () {
  console.log('PORT ' + this.address().port);
});`;

let child: ChildProcess | undefined;
const clients: Socket[] = [];
afterEach(() => {
  child?.kill('SIGKILL');
  for (const c of clients.splice(0)) c.destroy();
});

/** The server's sockets' queued bytes once 40 clients that never read are connected; `confine`: capped first. */
async function queuedWith(confine: ((pid: number) => Promise<void>) | undefined): Promise<number> {
  child = spawn(process.execPath, ['-e', server], { stdio: ['ignore', 'pipe', 'inherit'] });
  // The port on a line of its own (whatever else the child may print first).
  const port = await new Promise<number>((resolve, reject) => {
    let text = '';
    child!.stdout!.on('data', (d: Buffer) => {
      text += d.toString();
      const line = /^PORT (\d+)$/m.exec(text);
      if (line) resolve(Number(line[1]));
    });
    child!.once('exit', (code) => reject(new Error(`the server exited (${code}): ${text.slice(0, 500)}`)));
  });
  if (confine) await confine(child.pid!);
  for (let i = 0; i < 40; i++) {
    const c = connect(port, '127.0.0.1');
    c.on('error', () => undefined);
    c.pause();
    clients.push(c);
  }
  await new Promise((resolve) => setTimeout(resolve, 1_500));
  return queuedFrom(port);
}

describe.runIf(v1)('confineTcpMemory (root, cgroup v1)', () => {
  it('holds what a process’s sockets queue to its cgroup’s cap', async () => {
    const cap = 16 * MiB;
    const cgroupPath = path.posix.join('workbay-spec', `${managerCgroupName}-spec${process.pid}`);
    try {
      const capped = await queuedWith((pid) => confineTcpMemory(controller!, cgroupPath, pid, cap));
      child?.kill('SIGKILL');
      for (const c of clients.splice(0)) c.destroy();
      const free = await queuedWith(undefined);
      console.log(
        `queued by 40 unread connections: ${(capped / MiB).toFixed(1)} MiB capped, ${(free / MiB).toFixed(1)} MiB not`,
      );
      // Each socket may overshoot a full cap by about one segment (64 KiB on loopback).
      expect(capped).toBeLessThan(cap + 40 * 64 * 1024);
      // Without the cap the kernel queues several MB per connection.
      expect(free).toBeGreaterThan(4 * cap);
    } finally {
      child?.kill('SIGKILL');
      await new Promise((resolve) => setTimeout(resolve, 200));
      await controller!
        .cgroup(cgroupPath)
        .remove()
        .catch(() => undefined);
      await controller!
        .cgroup('workbay-spec')
        .remove()
        .catch(() => undefined);
    }
  });
});
