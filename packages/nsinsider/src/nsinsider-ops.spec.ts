import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { NsinsiderError } from './errors.js';
import { isNsinsiderError, isNsinsiderValidationError } from './errors.js';
import { createNsinsiderOps } from './nsinsider-ops.js';
import type { NamespaceSandbox } from './testing.js';
import { startNamespaceSandbox } from './testing.js';
import type { NamespaceOps } from './types.js';

// Real namespaces, real mounts, real links: these tests run as root on this machine. `ops` runs the tools under
// nsenter (the default); the hang tests below use the CLI mode (`cliPath`), tool-ops.spec.ts the tools mode's own.
const cliPath = fileURLToPath(new URL('../dist/bin.js', import.meta.url));
const spawned: string[] = [];
const ops: NamespaceOps = createNsinsiderOps({ onSpawn: (e) => spawned.push(e.op) });

async function rejection(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (e) {
    return e;
  }
  throw new Error('expected a rejection');
}

describe('createNsinsiderOps against real namespaces', () => {
  let sb: NamespaceSandbox;
  let outer: NamespaceSandbox;
  let scratch: string;

  beforeAll(async () => {
    expect(existsSync(cliPath), `build first: ${cliPath}`).toBe(true);
    [sb, outer] = await Promise.all([startNamespaceSandbox(), startNamespaceSandbox()]);
    scratch = await mkdtemp(join(tmpdir(), 'nsinsider-test-'));
  });

  afterAll(async () => {
    await Promise.all([sb?.stop(), outer?.stop()]);
    if (scratch) await rm(scratch, { recursive: true, force: true });
  });

  it('mounts proc that shows the namespace pids, masked', async () => {
    await ops.mountProc({ pid: sb.pid, target: '/proc' });
    const pids = (await sb.check(['ls', '/proc']))
      .split('\n')
      .filter((l) => /^\d+$/.test(l))
      .map(Number);
    expect(pids).toContain(1);
    expect(pids).not.toContain(process.pid);
    expect((await sb.check(['cat', '/proc/1/cmdline'])).split('\0')[0]).toBe('sleep');
    // Masked: timer_list reads as /dev/null, /proc/sys is read-only.
    expect(await sb.check(['cat', '/proc/timer_list'])).toBe('');
    const mountinfo = await sb.check(['cat', '/proc/1/mountinfo']);
    expect(mountinfo).toMatch(/ \/proc\/timer_list /);
    expect(mountinfo).toMatch(/ \/proc\/sys ro,/);
    // Like the workspace's own proc (round 11 N1): other users' processes hidden, and nothing of the node's block
    // devices (every workspace's loop device, its I/O), file locks or filesystems.
    expect(mountinfo).toMatch(/ \/proc .* proc proc \S*hidepid=(2|invisible)/);
    for (const file of ['/proc/diskstats', '/proc/partitions', '/proc/locks'])
      expect(await sb.check(['cat', file])).toBe('');
    if (existsSync('/proc/fs/ext4')) expect(await sb.check(['ls', '-A', '/proc/fs/ext4'])).toBe('');
    // The host's own /proc is untouched.
    expect(existsSync(`/proc/${process.pid}`)).toBe(true);
    await ops.unmount({ pid: sb.pid, target: '/proc' });
    const after = await sb.check(['cat', `/proc/${sb.pid}/mountinfo`]);
    expect(after).not.toMatch(/ \/proc\/sys ro,/);
  });

  it('mounts sysfs for the namespace network and unmounts it', async () => {
    const dir = await mkdtemp(join(scratch, 'sys-'));
    await ops.mountSysfs({ pid: sb.pid, target: dir });
    const links = (await sb.check(['ls', join(dir, 'class', 'net')])).split('\n').filter(Boolean);
    expect(links).toEqual(['lo']);
    // No block device of the node (a loop device's backing_file names another workspace's image), by any path.
    for (const sub of ['block', 'class/block', 'dev/block', 'devices/virtual/block']) {
      expect(await sb.check(['ls', '-A', join(dir, sub)])).toBe('');
    }
    // The mount is private to the sandbox's mount namespace.
    expect(existsSync(join(dir, 'class'))).toBe(false);
    await ops.unmount({ pid: sb.pid, target: dir });
    expect(await sb.check(['ls', dir])).toBe('');
  });

  it('creates device nodes and prepares /dev', async () => {
    const dir = await mkdtemp(join(scratch, 'dev-'));
    // A tmpfs inside the sandbox, so that no node lands on the host's filesystem.
    await sb.check(['mount', '-t', 'tmpfs', 'tmpfs', dir]);
    const node = join(dir, 'mynull');
    const res = await ops.makeDeviceNode({
      pid: sb.pid,
      path: node,
      type: 'char',
      major: 1,
      minor: 3,
      mode: 0o640,
      uid: 33333,
      gid: 33333,
    });
    expect(res).toEqual({ path: node, created: true });
    expect((await sb.check(['stat', '-c', '%F %t:%T %a %u:%g', node])).trim()).toBe(
      'character special file 1:3 640 33333:33333',
    );
    const dup = await rejection(ops.makeDeviceNode({ pid: sb.pid, path: node, type: 'char', major: 1, minor: 3 }));
    expect(isNsinsiderError(dup)).toBe(true);
    expect((dup as NsinsiderError).code).toBe('EEXIST');
    expect((dup as NsinsiderError).op).toBe('mknod');
    expect((dup as NsinsiderError).exitCode).toBe(1);
    expect((dup as NsinsiderError).stderr).toMatch(/exists/i);

    const devDir = join(dir, 'dev');
    const first = await ops.prepareDev({ pid: sb.pid, devDir, uid: 33333, gid: 33334 });
    expect(first.created.sort()).toEqual(
      [join(devDir, 'fuse'), join(devDir, 'kmsg'), join(devDir, 'net', 'tun')].sort(),
    );
    expect((await sb.check(['stat', '-c', '%F %t:%T %a %u:%g', join(devDir, 'net', 'tun')])).trim()).toBe(
      'character special file a:c8 666 33333:33334',
    );
    const second = await ops.prepareDev({ pid: sb.pid, devDir, uid: 33333, gid: 33334 });
    expect(second).toEqual({ created: [], existing: [join(devDir, 'net', 'tun'), join(devDir, 'fuse')] });
  });

  it('connects a veth pair between two namespaces, traffic flows', async () => {
    const pair = await ops.setupPairVeths({
      outerPid: outer.pid,
      targetPid: sb.pid,
      cidr: '198.18.0.0/30',
      hostIfName: 'wbveth0',
      peerIfName: 'eth0',
    });
    expect(pair).toEqual({
      hostIfName: 'wbveth0',
      peerIfName: 'eth0',
      hostAddress: '198.18.0.1',
      peerAddress: '198.18.0.2',
      prefixLength: 30,
    });
    const inner = await ops.networkInfo({ pid: sb.pid });
    expect(inner.addresses).toContainEqual({ ifName: 'eth0', family: 'ipv4', address: '198.18.0.2', prefixLength: 30 });
    expect(inner.routes).toContainEqual({ destination: 'default', gateway: '198.18.0.1', device: 'eth0' });
    expect(inner.links.find((l) => l.name === 'eth0')?.up).toBe(true);
    const outerInfo = await ops.networkInfo({ pid: outer.pid });
    expect(outerInfo.addresses).toContainEqual({
      ifName: 'wbveth0',
      family: 'ipv4',
      address: '198.18.0.1',
      prefixLength: 30,
    });

    // A TCP round trip from the inner namespace to a server on the outer end of the pair.
    const server = spawn(
      'nsenter',
      [
        '--target',
        String(outer.pid),
        '--net',
        '--',
        process.execPath,
        '-e',
        `const s=require('net').createServer(c=>{c.end('pong');s.close()});s.listen(7777,'198.18.0.1',()=>console.log('ready'));setTimeout(()=>process.exit(3),20000)`,
      ],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    try {
      await new Promise<void>((resolve, reject) => {
        server.stdout.on('data', (b: Buffer) => b.toString().includes('ready') && resolve());
        server.on('exit', (c) => reject(new Error(`server exited ${c}`)));
      });
      const client = await sb.run(
        [
          process.execPath,
          '-e',
          `const c=require('net').connect(7777,'198.18.0.1');let d='';c.on('data',x=>d+=x);c.on('end',()=>{console.log(d)});c.on('error',e=>{console.error(e.message);process.exit(1)})`,
        ],
        ['net'],
      );
      expect(client.stderr).toBe('');
      expect(client.stdout.trim()).toBe('pong');
    } finally {
      server.kill('SIGKILL');
    }
  });

  it("sets up a pair from the caller's own network namespace", async () => {
    const sb2 = await startNamespaceSandbox();
    const hostIf = `wbh${process.pid % 100000}`;
    try {
      const pair = await ops.setupPairVeths({
        targetPid: sb2.pid,
        cidr: '198.18.1.4/30',
        hostIfName: hostIf,
        peerIfName: 'eth0',
      });
      expect(pair.hostAddress).toBe('198.18.1.5');
      // The kernel reports the state a moment after the link is set up (seen `down` on a loaded machine): waited for.
      let state = '';
      for (let i = 0; i < 100; i++) {
        state = (await readFile(`/sys/class/net/${hostIf}/operstate`, 'utf8')).trim();
        if (/up|lowerlayerdown|unknown/i.test(state)) break;
        await new Promise((r) => setTimeout(r, 20));
      }
      expect(state).toMatch(/up|lowerlayerdown|unknown/i);
    } finally {
      await sb2.stop();
    }
    // The peer's namespace is gone, and the pair with it.
    for (let i = 0; i < 100 && existsSync(`/sys/class/net/${hostIf}`); i++) await new Promise((r) => setTimeout(r, 20));
    expect(existsSync(`/sys/class/net/${hostIf}`)).toBe(false);
  });

  it('masquerades the pair on the outer side when asked', async () => {
    const inner = await startNamespaceSandbox();
    const hostSide = await startNamespaceSandbox({ namespaces: ['net', 'mount'] });
    try {
      await ops.setupPairVeths({
        outerPid: hostSide.pid,
        targetPid: inner.pid,
        cidr: '198.18.2.0/30',
        masquerade: true,
      });
      const ruleset = await hostSide.check(['nft', 'list', 'ruleset'], ['net']);
      expect(ruleset).toContain('table ip workbay-nat');
      expect(ruleset).toMatch(/ip saddr 198\.18\.2\.0\/30 oifname != "veth0" masquerade/);
      expect((await hostSide.check(['cat', '/proc/sys/net/ipv4/ip_forward'], ['net'])).trim()).toBe('1');
      // A second pair with the same names fails cleanly and leaves the first one intact.
      const again = await rejection(
        ops.setupPairVeths({ outerPid: hostSide.pid, targetPid: inner.pid, cidr: '198.18.2.0/30' }),
      );
      expect(isNsinsiderError(again) && again.code).toBe('EEXIST');
      const info = await ops.networkInfo({ pid: hostSide.pid });
      expect(info.addresses).toContainEqual({
        ifName: 'veth0',
        family: 'ipv4',
        address: '198.18.2.1',
        prefixLength: 30,
      });
    } finally {
      await Promise.all([hostSide.stop(), inner.stop()]);
    }
  });

  it('toggles IP forwarding inside the namespace only', async () => {
    const hostBefore = (await readFile('/proc/sys/net/ipv4/ip_forward', 'utf8')).trim();
    await ops.setIpForwarding({ pid: sb.pid, enabled: true });
    expect((await sb.check(['cat', '/proc/sys/net/ipv4/ip_forward'], ['net'])).trim()).toBe('1');
    await ops.setIpForwarding({ pid: sb.pid, enabled: false });
    expect((await sb.check(['cat', '/proc/sys/net/ipv4/ip_forward'], ['net'])).trim()).toBe('0');
    expect((await readFile('/proc/sys/net/ipv4/ip_forward', 'utf8')).trim()).toBe(hostBefore);
    await ops.disableIpv6({ pid: sb.pid });
    if (existsSync('/proc/sys/net/ipv6')) {
      expect((await sb.check(['cat', '/proc/sys/net/ipv6/conf/all/disable_ipv6'], ['net'])).trim()).toBe('1');
    }
  });

  it('installs, replaces and removes the nftables connection limit', async () => {
    expect(await ops.connectionLimitStats({ pid: sb.pid })).toBeUndefined();
    await ops.setupConnectionLimit({ pid: sb.pid, limitPerMinute: 60, bucketSize: 10 });
    let ruleset = await sb.check(['nft', 'list', 'ruleset'], ['net']);
    expect(ruleset).toContain('table inet workbay');
    expect(ruleset).toContain('chain ratelimit');
    expect(ruleset).toMatch(
      /ct state new limit rate over 60\/minute burst 10 packets counter name "ws-connection-drop-stats" drop/,
    );
    // Replacing is atomic and leaves one table.
    await ops.setupConnectionLimit({ pid: sb.pid, limitPerMinute: 120, bucketSize: 7, enforce: false });
    ruleset = await sb.check(['nft', 'list', 'ruleset'], ['net']);
    expect(ruleset.match(/table inet workbay/g)).toHaveLength(1);
    expect(ruleset).toMatch(/limit rate over 120\/minute burst 7 packets counter name "ws-connection-drop-stats"\n/);
    expect(await ops.connectionLimitStats({ pid: sb.pid })).toEqual({ packets: 0, bytes: 0 });
    // The host's ruleset does not have it.
    expect(await ops.removeConnectionLimit({ pid: sb.pid })).toBe(true);
    expect(await ops.removeConnectionLimit({ pid: sb.pid })).toBe(false);
    expect((await sb.check(['nft', 'list', 'ruleset'], ['net'])).trim()).toBe('');
  });

  it('makes a mount shared', async () => {
    const dir = await mkdtemp(join(scratch, 'shared-'));
    await sb.check(['mount', '-t', 'tmpfs', 'tmpfs', dir]);
    await ops.makeShared({ pid: sb.pid, target: dir });
    const line = (await sb.check(['cat', '/proc/self/mountinfo'])).split('\n').find((l) => l.includes(` ${dir} `));
    expect(line).toMatch(/shared:\d+/);
  });

  it('translates pids of the namespace to host pids, and only those', async () => {
    expect(await ops.resolveHostPid({ nsPid: 1, anchorPid: sb.pid })).toBe(sb.pid);
    expect(await ops.resolveHostPid({ nsPid: 1, anchorPid: outer.pid })).toBe(outer.pid);
    // A second process inside the sandbox's pid namespace.
    const inner = spawn(
      'nsenter',
      ['--target', String(sb.pid), '--pid', '--mount', '--', 'sh', '-c', 'echo $$; exec sleep 30'],
      {
        stdio: ['ignore', 'pipe', 'inherit'],
      },
    );
    let hostPid = 0;
    try {
      const nsPid = Number(
        await new Promise<string>((resolve) => inner.stdout.once('data', (b: Buffer) => resolve(b.toString().trim()))),
      );
      expect(nsPid).toBeGreaterThan(1);
      hostPid = await ops.resolveHostPid({ nsPid, anchorPid: sb.pid });
      const status = await readFile(`/proc/${hostPid}/status`, 'utf8');
      expect(status).toMatch(new RegExp(`NSpid:\\s+${hostPid}\\s+${nsPid}\\n`));
      // The other sandbox has no such process.
      const e = await rejection(ops.resolveHostPid({ nsPid, anchorPid: outer.pid }));
      expect(isNsinsiderError(e) && e.kind).toBe('not-found');
    } finally {
      // nsenter's forked child would outlive it and hold our pipe open.
      if (hostPid > 0) process.kill(hostPid, 'SIGKILL');
      inner.kill('SIGKILL');
      inner.stdout.destroy();
    }
  });

  it('tells namespaces apart', async () => {
    expect(await ops.namespaceId({ pid: sb.pid, kind: 'net' })).toMatch(/^net:\[\d+\]$/);
    expect(await ops.namespaceId({ pid: sb.pid, kind: 'net' })).not.toBe(
      await ops.namespaceId({ pid: process.pid, kind: 'net' }),
    );
    expect(await ops.namespaceId({ pid: sb.pid, kind: 'mount' })).toMatch(/^mnt:/);
    const e = await rejection(ops.namespaceId({ pid: 999_999_999, kind: 'net' }));
    expect(isNsinsiderError(e) && e.kind).toBe('not-found');
  });

  it('confines an anchor in the host pid namespace to its own descendants', async () => {
    // A "workspace" without its own pid namespace: a shell with one child.
    const anchor = spawn('sh', ['-c', 'sleep 30 & echo $!; wait'], { stdio: ['ignore', 'pipe', 'inherit'] });
    let childPid = 0;
    try {
      childPid = Number(
        await new Promise<string>((resolve) =>
          anchor.stdout!.once('data', (b: Buffer) => resolve(b.toString().trim())),
        ),
      );
      expect(await ops.resolveHostPid({ nsPid: childPid, anchorPid: anchor.pid! })).toBe(childPid);
      expect(await ops.resolveHostPid({ nsPid: anchor.pid!, anchorPid: anchor.pid! })).toBe(anchor.pid);
      // Our own pid is in the same pid namespace but not the anchor's to name.
      const e = await rejection(ops.resolveHostPid({ nsPid: process.pid, anchorPid: anchor.pid! }));
      expect(isNsinsiderError(e) && e.kind).toBe('not-found');
    } finally {
      // The orphaned sleep would hold our pipe open.
      if (childPid > 0) process.kill(childPid, 'SIGKILL');
      anchor.kill('SIGKILL');
      anchor.stdout!.destroy();
    }
  });

  it('writes uid and gid maps once', async () => {
    const userns = await startNamespaceSandbox({ namespaces: ['user'] });
    try {
      await ops.writeIdMapping({
        pid: userns.pid,
        kind: 'uid',
        mappings: [
          { containerId: 0, hostId: 33333, size: 1 },
          { containerId: 1, hostId: 100000, size: 65534 },
        ],
      });
      await ops.writeIdMapping({
        pid: userns.pid,
        kind: 'gid',
        mappings: [{ containerId: 0, hostId: 33333, size: 1 }],
      });
      expect(
        (await readFile(`/proc/${userns.pid}/uid_map`, 'utf8')).split('\n').map((l) => l.trim().split(/\s+/).join(' ')),
      ).toEqual(['0 33333 1', '1 100000 65534', '']);
      expect((await readFile(`/proc/${userns.pid}/gid_map`, 'utf8')).trim().split(/\s+/)).toEqual(['0', '33333', '1']);
      const again = await rejection(
        ops.writeIdMapping({ pid: userns.pid, kind: 'uid', mappings: [{ containerId: 0, hostId: 0, size: 1 }] }),
      );
      expect(isNsinsiderError(again) && again.code).toBe('EPERM');
    } finally {
      await userns.stop();
    }
  });

  it('rejects bad input before spawning anything, naming the field', async () => {
    const before = spawned.length;
    const cases: Array<[Promise<unknown>, string]> = [
      [ops.mountProc({ pid: sb.pid, target: 'proc' }), 'target'],
      [ops.mountProc({ pid: 0, target: '/proc' }), 'pid'],
      [ops.unmount({ pid: -4, target: '/x' }), 'pid'],
      [ops.mountSysfs({ pid: sb.pid, target: '/a/../b' }), 'target'],
      [ops.makeDeviceNode({ pid: sb.pid, path: '/x', type: 'pipe' as 'char', major: 1, minor: 1 }), 'type'],
      [ops.setupPairVeths({ targetPid: sb.pid, cidr: '10.0.0.0/31' }), 'cidr'],
      [ops.setupPairVeths({ targetPid: 1.5, cidr: '198.18.0.0/30' }), 'targetPid'],
      [
        ops.setupPairVeths({ targetPid: sb.pid, cidr: '198.18.0.0/30', hostIfName: 'much-too-long-name' }),
        'hostIfName',
      ],
      [ops.setupConnectionLimit({ pid: sb.pid, limitPerMinute: 0, bucketSize: 1 }), 'limitPerMinute'],
      [ops.writeIdMapping({ pid: sb.pid, kind: 'uid', mappings: [] }), 'mappings'],
      [
        ops.writeIdMapping({ pid: sb.pid, kind: 'uid', mappings: [{ containerId: 0, hostId: 1, size: 0 }] }),
        'mappings[0].size',
      ],
      [
        ops.writeIdMapping({
          pid: sb.pid,
          kind: 'uid',
          mappings: [
            { containerId: 0, hostId: 100, size: 10 },
            { containerId: 20, hostId: 105, size: 10 },
          ],
        }),
        'mappings[1].hostId',
      ],
      [ops.resolveHostPid({ nsPid: 0, anchorPid: sb.pid }), 'nsPid'],
    ];
    for (const [p, field] of cases) {
      const e = await rejection(p);
      expect(isNsinsiderValidationError(e), String(e)).toBe(true);
      expect((e as { field: string }).field).toBe(field);
    }
    expect(spawned.length).toBe(before);
  });

  it('reports a vanished target process as not-found', async () => {
    const gone = await startNamespaceSandbox();
    const pid = gone.pid;
    await gone.stop();
    const e = await rejection(ops.mountProc({ pid, target: '/proc' }));
    expect(isNsinsiderError(e)).toBe(true);
    expect((e as NsinsiderError).kind).toBe('not-found');
  });

  it('kills a hung CLI helper together with what nsenter forked into the pid namespace', async () => {
    const dir = await mkdtemp(join(scratch, 'hang-pid-'));
    const hang = join(dir, 'hang.mjs');
    const marker = `nsinsider-hang-${process.pid}`;
    await import('node:fs/promises').then((fs) =>
      fs.writeFile(hang, `process.title = '${marker}'; setInterval(() => {}, 1000);\n`),
    );
    const slow = createNsinsiderOps({ cliPath: hang, timeoutMs: 500 });
    // mountProc enters the pid namespace, so nsenter forks the helper.
    const e = await rejection(slow.mountProc({ pid: sb.pid, target: '/proc' }));
    expect(isNsinsiderError(e) && e.kind).toBe('timeout');
    await new Promise((r) => setTimeout(r, 200));
    const { readdir } = await import('node:fs/promises');
    const left: number[] = [];
    for (const name of await readdir('/proc')) {
      if (!/^\d+$/.test(name) || Number(name) === process.pid) continue;
      const cmdline = await readFile(`/proc/${name}/cmdline`, 'utf8').catch(() => '');
      if (cmdline.includes(marker)) left.push(Number(name));
    }
    expect(left).toEqual([]);
  });

  it('kills a CLI helper that exceeds the timeout', async () => {
    // A CLI that never answers stands in for a hung helper.
    const dir = await mkdtemp(join(scratch, 'hang-'));
    const hang = join(dir, 'hang.mjs');
    await import('node:fs/promises').then((fs) => fs.writeFile(hang, 'setInterval(() => {}, 1000);\n'));
    const slow = createNsinsiderOps({ cliPath: hang, timeoutMs: 300 });
    const e = await rejection(slow.networkInfo({ pid: sb.pid }));
    expect(isNsinsiderError(e) && e.kind).toBe('timeout');
  });
});
