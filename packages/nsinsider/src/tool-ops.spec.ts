import { chmod, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { NsinsiderError } from './errors.js';
import { isNsinsiderError } from './errors.js';
import { createNsinsiderOps } from './nsinsider-ops.js';
import type { NamespaceSandbox } from './testing.js';
import { startNamespaceSandbox } from './testing.js';

// The tools mode (the default) against real namespaces, as root: no Node process per operation, what happens when
// a tool hangs or is missing, and the CLI mode (cliPath) answering alike.
const cliPath = fileURLToPath(new URL('../dist/bin.js', import.meta.url));

async function rejection(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (e) {
    return e;
  }
  throw new Error('expected a rejection');
}

async function processesWith(marker: string): Promise<number[]> {
  const found: number[] = [];
  for (const name of await readdir('/proc')) {
    if (!/^\d+$/.test(name) || Number(name) === process.pid) continue;
    const cmdline = await readFile(`/proc/${name}/cmdline`, 'utf8').catch(() => '');
    if (cmdline.includes(marker)) found.push(Number(name));
  }
  return found;
}

describe('createNsinsiderOps, tools mode', () => {
  let sb: NamespaceSandbox;
  let scratch: string;

  beforeAll(async () => {
    sb = await startNamespaceSandbox();
    scratch = await mkdtemp(join(tmpdir(), 'nsinsider-tools-'));
  });

  afterAll(async () => {
    await sb?.stop();
    if (scratch) await rm(scratch, { recursive: true, force: true });
  });

  it('runs an operation as tools under nsenter, never a Node process', async () => {
    const spawns: Array<{ op: string; args: readonly string[] }> = [];
    const ops = createNsinsiderOps({ onSpawn: (e) => spawns.push(e) });
    await ops.setIpForwarding({ pid: sb.pid, enabled: true });
    await ops.setupConnectionLimit({ pid: sb.pid, limitPerMinute: 60, bucketSize: 10 });
    const info = await ops.networkInfo({ pid: sb.pid });
    expect(info.links.map((l) => l.name)).toContain('lo');
    expect(await ops.removeConnectionLimit({ pid: sb.pid })).toBe(true);
    // One tool run each, entering only the network namespace.
    expect(spawns.map((s) => s.op)).toEqual([
      'enable-ip-forward',
      'setup-connection-limit',
      'dump-network-info',
      'remove-connection-limit',
    ]);
    for (const s of spawns) {
      expect(s.args.slice(0, 4)).toEqual(['--target', String(sb.pid), '--net', '--']);
      expect(s.args).not.toContain(process.execPath);
    }
    expect((await sb.check(['cat', '/proc/sys/net/ipv4/ip_forward'], ['net'])).trim()).toBe('1');
  });

  it('kills a hung tool together with what nsenter forked into the pid namespace', async () => {
    // A `mount` that never returns, found first on the search path.
    const bin = await mkdtemp(join(scratch, 'bin-'));
    const marker = `nsinsider-hung-tool-${process.pid}`;
    await writeFile(
      join(bin, 'mount'),
      `#!${process.execPath}\nprocess.title = '${marker}'; setInterval(() => {}, 1000);\n`,
    );
    await chmod(join(bin, 'mount'), 0o755);
    const slow = createNsinsiderOps({ toolSearchPath: `${bin}:${process.env.PATH ?? ''}`, timeoutMs: 500 });
    // mountProc enters the pid namespace, so nsenter forks the tool.
    const e = await rejection(slow.mountProc({ pid: sb.pid, target: '/proc' }));
    expect(isNsinsiderError(e) && e.kind).toBe('timeout');
    expect((e as NsinsiderError).op).toBe('mount-proc');
    await new Promise((r) => setTimeout(r, 200));
    expect(await processesWith(marker)).toEqual([]);
  });

  it('tells a tool missing in the target apart from a failing one', async () => {
    const empty = await mkdtemp(join(scratch, 'empty-'));
    const nsenter = (await readdir('/usr/bin')).includes('nsenter') ? '/usr/bin/nsenter' : '/bin/nsenter';
    const bare = createNsinsiderOps({ nsenterPath: nsenter, toolSearchPath: empty });
    // Not installed where a network-only operation runs it: this machine cannot do it.
    const net = await rejection(bare.networkInfo({ pid: sb.pid }));
    expect(isNsinsiderError(net) && [net.kind, net.code]).toEqual(['unsupported', 'ENOENT']);
    // Not found in the target's mount namespace: the workspace's file system does not hold it.
    const mnt = await rejection(bare.makeShared({ pid: sb.pid, target: '/' }));
    expect(isNsinsiderError(mnt) && mnt.kind).toBe('protocol');
    // A tool that runs and fails is a failure with its code, exit code and stderr.
    const ops = createNsinsiderOps();
    const failed = await rejection(ops.unmount({ pid: sb.pid, target: scratch }));
    expect(isNsinsiderError(failed) && [failed.kind, failed.code]).toEqual(['failed', 'ENOTMOUNTED']);
    expect((failed as NsinsiderError).exitCode).toBeGreaterThan(0);
    expect((failed as NsinsiderError).stderr).toMatch(/umount: .*not mounted/);
  });

  it('answers alike in the CLI mode (cliPath set)', async () => {
    const spawns: Array<readonly string[]> = [];
    const viaCli = createNsinsiderOps({ cliPath, onSpawn: (e) => spawns.push(e.args) });
    const tools = createNsinsiderOps();
    expect(await viaCli.networkInfo({ pid: sb.pid })).toEqual(await tools.networkInfo({ pid: sb.pid }));
    await viaCli.setIpForwarding({ pid: sb.pid, enabled: false });
    expect((await sb.check(['cat', '/proc/sys/net/ipv4/ip_forward'], ['net'])).trim()).toBe('0');
    expect(spawns.every((argv) => argv.includes(cliPath))).toBe(true);
    const e = await rejection(viaCli.unmount({ pid: sb.pid, target: scratch }));
    expect(isNsinsiderError(e) && [e.kind, e.code]).toEqual(['failed', 'ENOTMOUNTED']);
  });
});
