import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { InvalidArgumentError, silentLogger } from '@workbay/api';
import { CgroupManager, detectCgroupLayout, parseMountInfo } from './cgroups.js';
import { parseLocalRuntimeConfig } from './config.js';
import { expandCommand, globToRegExp, resolveImage } from './images.js';
import { parseProcStat } from './proc.js';
import { PortAllocator } from './ports.js';

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

const v1MountInfo = `31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 /kubepods/pod1 /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw`;
const v1ProcCgroup = `9:pids:/svc
4:memory:/kubepods/pod1/ctr
1:cpu,cpuacct:/
0::/`;

describe('detectCgroupLayout', () => {
  it('prefers v1 controllers and resolves the own cgroup below each mount, honouring the mount root', () => {
    expect(detectCgroupLayout(v1MountInfo, v1ProcCgroup)).toEqual({
      version: 1,
      roots: { cpu: '/sys/fs/cgroup/cpu,cpuacct', memory: '/sys/fs/cgroup/memory', pids: '/sys/fs/cgroup/pids' },
      own: { cpu: '/sys/fs/cgroup/cpu,cpuacct', memory: '/sys/fs/cgroup/memory/ctr', pids: '/sys/fs/cgroup/pids/svc' },
    });
  });
  it('falls back to the unified hierarchy on a pure v2 machine', () => {
    const mountInfo = '30 23 0:27 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate';
    expect(detectCgroupLayout(mountInfo, '0::/system.slice/workbay.service\n')).toEqual({
      version: 2,
      root: '/sys/fs/cgroup',
      own: '/sys/fs/cgroup/system.slice/workbay.service',
      controllers: [],
    });
  });
  it('finds nothing without cgroup mounts', () => {
    expect(detectCgroupLayout('22 1 0:5 / /proc rw - proc proc rw', '0::/')).toBeUndefined();
  });
  it('unescapes mount points', () => {
    expect(parseMountInfo('1 2 0:1 / /mnt/with\\040space rw - tmpfs t rw')[0]!.mountPoint).toBe('/mnt/with space');
  });
});

describe('CgroupManager on v2 (against a scratch directory standing in for the hierarchy)', () => {
  it('enables the controllers down the chain and writes cpu.max, memory.max and pids.max', async () => {
    const root = await mkdtemp(path.join(os.tmpdir(), 'cg2-'));
    try {
      const manager = new CgroupManager(
        { version: 2, root, own: path.join(root, 'svc'), controllers: ['cpu', 'memory', 'pids'] },
        '/workbay',
        silentLogger,
      );
      const cg = await manager.create('inst-1', { cpu: 1.5, memoryBytes: 1 << 30, pids: 256 });
      const dir = path.join(root, 'workbay', 'inst-1');
      expect(cg).toEqual({ version: 2, dirs: [dir], memoryDir: dir });
      expect(await readFile(path.join(root, 'cgroup.subtree_control'), 'utf8')).toBe('+cpu +memory +pids');
      expect(await readFile(path.join(root, 'workbay', 'cgroup.subtree_control'), 'utf8')).toBe('+cpu +memory +pids');
      expect(await readFile(path.join(dir, 'cpu.max'), 'utf8')).toBe('150000 100000');
      expect(await readFile(path.join(dir, 'memory.max'), 'utf8')).toBe(String(1 << 30));
      expect(await readFile(path.join(dir, 'pids.max'), 'utf8')).toBe('256');
      expect(CgroupManager.procsFiles(cg)).toEqual([path.join(dir, 'cgroup.procs')]);
    } finally {
      await rm(root, { recursive: true, force: true });
    }
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
