import type { Stats } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { InvalidArgumentError } from '@workbay/api';
import { parseLocalRuntimeConfig } from './config.js';
import { expandCommand, globToRegExp, resolveImage } from './images.js';
import { parseProcStat } from './proc.js';
import { PortAllocator } from './ports.js';
import { hideDirsFor, hostIdentity, sandboxEnv } from './sandbox.js';
import { mountinfoPath } from './sandbox-init.js';
import { execWithEnv, withOnlyEnv } from './workspace-exec.js';
import { trustedEnv, wrapperInvocation } from './wrapper.js';

describe('parseProcStat', () => {
  it('reads state, pgid and start time, even with spaces and parentheses in the command name', () => {
    const line =
      '4242 (my (odd) cmd) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10 18446744073709551615';
    expect(parseProcStat(line)).toEqual({ pid: 4242, state: 'S', ppid: 1, pgid: 4242, startTime: '987654' });
  });
  it('rejects garbage', () => {
    expect(() => parseProcStat('nonsense')).toThrow(/unexpected/);
  });
});

describe('the sandbox plan', () => {
  it('hides the working area and the state dir unless the workspace needs something there or it is a system dir', () => {
    expect(hideDirsFor(['/var/lib/workbay/area/', '/srv/state'], [process.execPath])).toEqual([
      '/srv/state',
      '/var/lib/workbay/area',
    ]);
    expect(hideDirsFor(['/opt/tools', '/srv/wb', '/srv/wb/state'], ['/opt/tools/node'])).toEqual(['/srv/wb']);
    expect(hideDirsFor(['/var', '/', '/usr'], [])).toEqual([]);
    expect(hideDirsFor(['/tmp', '/tmp/x/area', '/var/tmp/y'], [])).toEqual([]); // the private tmpfs covers them
  });
  it('shows content paths in the env as /workspace, defaults HOME and announces the iws socket', () => {
    const env = sandboxEnv(
      { WORKBAY_REPO_ROOT: '/area/i1/repo', OTHER: '/area/i10', SAME: '/area/i1', WORKBAY_IWS_SOCKET: '/x' },
      '/area/i1',
      '/area/.iws/i1',
    );
    expect(env).toEqual({
      WORKBAY_REPO_ROOT: '/workspace/repo',
      OTHER: '/area/i10',
      SAME: '/workspace',
      HOME: '/workspace',
      WORKBAY_IWS_SOCKET: '/.workbay/daemon.sock',
    });
    expect(sandboxEnv({ WORKBAY_IWS_SOCKET: '/x', HOME: '/h' }, '/a/b', undefined)).toEqual({ HOME: '/h' });
  });
  it('never maps host root into a workspace', () => {
    const owned = (uid: number, gid: number): Stats => ({ uid, gid }) as Stats;
    expect(hostIdentity(owned(200123, 200124))).toEqual({ uid: 200123, gid: 200124 });
    const fallback = hostIdentity(owned(0, 0));
    expect(fallback).toMatchObject({ uid: 65534, gid: 65534 });
    expect(fallback.notice).toMatch(/owned by root/);
  });
  it('passes the sandbox to the wrapper as positional arguments', () => {
    const inv = wrapperInvocation({
      exitFile: '/s/i.exit',
      cgroupProcsFiles: ['/cg/a/cgroup.procs'],
      sandbox: { netnsPath: '/run/netns/wbv3', hostname: 'ws', contentDir: '/c', uid: 7, gid: 8 },
      log: { file: '/s/i.log', maxBytes: 65536 },
      command: ['run', 'me'],
      env: { PATH: '/workspace/bin:/usr/bin', LD_PRELOAD: '/workspace/x.so' },
      perl: '/usr/bin/perl',
    });
    expect(inv.args.slice(3, 10)).toEqual([
      '/s/i.exit',
      '1',
      '/cg/a/cgroup.procs',
      'isolated',
      '/run/netns/wbv3',
      // The log writer's file and cap; the writer and the init script follow.
      '/s/i.log',
      '65536',
    ]);
    expect(inv.args.slice(12)).toEqual([
      'ws',
      '/c',
      '',
      '7',
      '8',
      // No nested namespaces unless the plan allows them.
      'user:0 net:0 mnt:0 pid:0 ipc:0 uts:0 cgroup:0 time:0',
      // No syscall filter unless the plan has one (the launch plan has, by default).
      '',
      // Where host mounts are detached, as mountinfo spells them: the hidden and private directories by default.
      '/tmp /var/tmp /dev/shm',
      '0',
      // Private tmpfs directories: the default three when the plan names none.
      '3',
      '/tmp',
      '/var/tmp',
      '/dev/shm',
      // Perl execs the command with the environment it reads from the carriers (never on a command line).
      '/usr/bin/perl',
      '-e',
      inv.args.at(-4),
      '--',
      'run',
      'me',
    ]);
    expect(inv.env['WORKBAY_WORKSPACE_ENV_0']).toBe(
      Buffer.from('PATH=/workspace/bin:/usr/bin\0LD_PRELOAD=/workspace/x.so').toString('base64'),
    );
  });
  it('spells the directories whose mounts the init detaches as mountinfo does, one word each', () => {
    expect(mountinfoPath('/srv/work area/a\\b\tc\nd')).toBe('/srv/work\\040area/a\\134b\\011c\\012d');
    const inv = wrapperInvocation({
      exitFile: '/s/i.exit',
      cgroupProcsFiles: [],
      sandbox: {
        netnsPath: '/run/netns/wbv3',
        hostname: 'ws',
        contentDir: '/c',
        uid: 7,
        gid: 8,
        hideDirs: ['/srv/work area'],
        privateDirs: ['/tmp'],
        detachDirs: ['/data/work area', '/tmp'],
      },
      command: ['run'],
      env: {},
    });
    expect(inv.args).toContain('/data/work\\040area /tmp');
  });
  it("runs the root wrapper with a fixed environment, never the workspace's", () => {
    const inv = wrapperInvocation({
      exitFile: '/s/i.exit',
      cgroupProcsFiles: [],
      command: ['run'],
      env: { PATH: 'repo/bin' },
      perl: null,
    });
    expect(inv.env).toEqual(trustedEnv);
    // With Perl, the workspace's variables travel encoded, in variables no tool on the way reads.
    const carried = wrapperInvocation({
      exitFile: '/s/i.exit',
      cgroupProcsFiles: [],
      command: ['run'],
      env: { PATH: 'repo/bin', TOKEN: 'secret' },
      perl: '/usr/bin/perl',
    });
    expect(Object.keys(carried.env).sort()).toEqual([...Object.keys(trustedEnv), 'WORKBAY_WORKSPACE_ENV_0'].sort());
    expect(carried.args.join(' ')).not.toContain('secret');
    expect(carried.args.slice(-2)).toEqual(['--', 'run']);
    expect(trustedEnv['PATH']!.split(':').every((dir) => dir.startsWith('/'))).toBe(true);
  });
  it('gives the workspace command exactly its environment', () => {
    expect(withOnlyEnv({ A: '1=2' }, ['a=b', 'x'])).toEqual([
      'env',
      '-i',
      'A=1=2',
      '/bin/sh',
      '-c',
      'exec "$@"',
      'workbay-exec',
      'a=b',
      'x',
    ]);
    expect(() => withOnlyEnv({ '-u': 'x' }, ['run'])).toThrow(/invalid environment variable name/);
  });
  it('spreads a large environment over carriers each within one environment string (128 KiB), a third larger than it', () => {
    // The API takes up to 1 MiB of variables; hex (twice as much) passed ARG_MAX (2 MiB): red team round 14b, R2.
    const big = { A: 'x'.repeat(1000 * 1024) };
    const { argv, carriers } = execWithEnv('/usr/bin/perl', big, ['run', '-x']);
    expect(argv.slice(0, 2)).toEqual(['/usr/bin/perl', '-e']);
    expect(argv.slice(-3)).toEqual(['--', 'run', '-x']);
    const parts = Object.keys(carriers);
    expect(parts).toEqual(parts.map((_, i) => `WORKBAY_WORKSPACE_ENV_${i}`));
    for (const part of Object.values(carriers)) expect(part.length).toBeLessThan(128 * 1024);
    const total = Object.values(carriers).reduce((sum, part) => sum + part.length, 0);
    expect(total).toBeLessThan(1.34 * 1000 * 1024 + 64);
    expect(Buffer.from(Object.values(carriers).join(''), 'base64').toString()).toBe(`A=${big.A}`);
    expect(() => execWithEnv('/usr/bin/perl', { '-u': 'x' }, ['run'])).toThrow(/invalid environment variable name/);
  });
});

describe('image mapping', () => {
  const images = {
    'node:20': { command: ['node', 'exact'] },
    'node:*': { command: ['node', 'glob'] },
    'ghcr.io/*/ide:?': { command: ['ide'] },
  };
  it('prefers an exact reference, then the first matching glob', () => {
    expect(resolveImage(images, 'node:20')?.config.command).toEqual(['node', 'exact']);
    expect(resolveImage(images, 'node:22')?.config.command).toEqual(['node', 'glob']);
    expect(resolveImage(images, 'ghcr.io/acme/ide:1')?.pattern).toBe('ghcr.io/*/ide:?');
    expect(resolveImage(images, 'ghcr.io/acme/ide:12')).toBeUndefined();
    expect(resolveImage(images, 'python:3')).toBeUndefined();
  });
  it('treats regex characters in patterns literally', () => {
    expect(globToRegExp('a.b+c').test('a.b+c')).toBe(true);
    expect(globToRegExp('a.b+c').test('axb+c')).toBe(false);
  });
  it('expands ${NAME} from the workspace env and leaves unknown names alone', () => {
    expect(expandCommand(['--port=${PORT}', '${NOPE}', '$PORT'], { PORT: '3000' })).toEqual([
      '--port=3000',
      '${NOPE}',
      '$PORT',
    ]);
  });
});

describe('parseLocalRuntimeConfig', () => {
  it('fills in defaults', () => {
    const config = parseLocalRuntimeConfig({ stateDir: '/tmp/x' });
    expect(config).toMatchObject({
      stateDir: '/tmp/x',
      host: '127.0.0.1',
      isolation: 'auto',
      network: { pool: '10.88.0.0/16' },
      cgroups: 'auto',
      readiness: { kind: 'tcp', path: '/', intervalMs: 100, probeTimeoutMs: 1000 },
      images: {},
    });
  });
  it.each([
    [{ bogus: 1 }, 'runtime.local.bogus'],
    [{ isolation: 'vm' }, 'runtime.local.isolation'],
    [{ images: { x: { command: [] } } }, 'runtime.local.images.x.command'],
    [
      { images: { x: { command: ['a'], readiness: { kind: 'tcp', pth: '/' } } } },
      'runtime.local.images.x.readiness.pth',
    ],
    [{ cgroupParent: '../escape' }, 'runtime.local.cgroupParent'],
    [{ network: { pool: '10.88.0.1/16' } }, 'runtime.local.network.pool'],
    [{ network: { pool: '10.88.0.0/31' } }, 'runtime.local.network.pool'],
    [
      { network: { egress: { allowedNetworks: ['10.0.0.0/8 } accept'] } } },
      'runtime.local.network.egress.allowedNetworks[0]',
    ],
    [{ network: { egress: { allowedNetworks: ['10.0.0.1/8'] } } }, 'runtime.local.network.egress.allowedNetworks[0]'],
    [{ network: { egress: { blockedNetworks: ['0.0.0.0/0'] } } }, 'runtime.local.network.egress.blockedNetworks[0]'],
    [{ network: { egress: { dnsServers: ['dns.example'] } } }, 'runtime.local.network.egress.dnsServers[0]'],
    [{ exitPollIntervalMs: -1 }, 'runtime.local.exitPollIntervalMs'],
  ])('names the bad key in %j', (raw, field) => {
    let error: unknown;
    try {
      parseLocalRuntimeConfig(raw);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(InvalidArgumentError);
    expect((error as InvalidArgumentError).field).toBe(field);
    expect((error as Error).message.startsWith(`${field}: `)).toBe(true);
  });
});

describe('PortAllocator', () => {
  it('never hands out a reserved port twice and frees it on release', async () => {
    const ports = new PortAllocator();
    const a = await ports.allocate('a', 0);
    const b = await ports.allocate('b', a);
    expect(b).not.toBe(a);
    ports.release('a');
    expect(await ports.allocate('c', a)).toBe(a);
  });
});
