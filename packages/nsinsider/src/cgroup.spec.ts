import type { ChildProcess } from 'node:child_process';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { Cgroup } from './cgroup.js';
import { CgroupController } from './cgroup.js';
import { detectCgroupLayout } from './cgroup-layout.js';
import { CgroupError, isCgroupError } from './errors.js';

const children: ChildProcess[] = [];
function start(cmd: string, args: string[]): ChildProcess {
  const c = spawn(cmd, args, { stdio: 'ignore' });
  children.push(c);
  return c;
}
/** Waits until the process has installed a handler for the signal (SigCgt in /proc/<pid>/status). */
async function untilCatches(pid: number, signo: number): Promise<void> {
  for (let i = 0; i < 500; i++) {
    const status = await readFile(`/proc/${pid}/status`, 'utf8').catch(() => '');
    const m = /SigCgt:\s*([0-9a-f]+)/.exec(status);
    if (m && (BigInt(`0x${m[1]}`) >> BigInt(signo - 1)) & 1n) return;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`process ${pid} never installed a handler for signal ${signo}`);
}

afterEach(() => {
  for (const c of children.splice(0)) c.kill('SIGKILL');
});

describe('CgroupController on this machine (real cgroupfs)', () => {
  let controller: CgroupController;
  const base = `workbay-test-${process.pid}`;
  let top: Cgroup;

  beforeAll(async () => {
    controller = await CgroupController.detect();
    top = controller.cgroup(base);
  });

  afterAll(async () => {
    if (top) {
      await top.kill().catch(() => undefined);
      await top.remove();
    }
  });

  it('detects the layout', () => {
    // Whichever this machine has, the controllers we need are there.
    if (controller.layout.version === 'v1') {
      expect(controller.layout.roots.cpu).toBeDefined();
      expect(controller.layout.roots.memory).toBeDefined();
    } else {
      expect(controller.layout.root).toMatch(/^\//);
    }
  });

  it('creates a workspace cgroup, limits it, moves a process in and reads usage', async () => {
    const cg = top.child('ws-1');
    expect(await cg.exists()).toBe(false);
    await cg.create();
    expect(await cg.exists()).toBe(true);
    expect(await cg.limits()).toEqual({ cpu: null, memoryBytes: null, pids: null });

    await cg.setCpuLimit({ quotaUs: 50_000, periodUs: 100_000 });
    await cg.setMemoryLimit(256 * 1024 * 1024);
    await cg.setPidsLimit(64);
    expect(await cg.limits()).toEqual({
      cpu: { quotaUs: 50_000, periodUs: 100_000 },
      memoryBytes: 256 * 1024 * 1024,
      pids: 64,
    });

    // Waits for SIGUSR1 so that the memory and CPU it then uses are charged to the new cgroup.
    const script = [
      "trap 'go=1' USR1",
      'while [ -z "$go" ]; do sleep 0.05; done',
      's=x; while [ ${#s} -lt 4000000 ]; do s="$s$s"; done',
      'i=0; while [ $i -lt 100000 ]; do i=$((i+1)); done',
      'exec sleep 60',
    ].join('\n');
    const busy = start('sh', ['-c', script]);
    await untilCatches(busy.pid!, 10);
    await cg.addProcess(busy.pid!);
    busy.kill('SIGUSR1');
    expect(await cg.processes()).toContain(busy.pid);
    // The cgroup's own files say the same (both hierarchies on v1).
    const procs = await readFile(join(cg.dir('cpu'), 'cgroup.procs'), 'utf8');
    expect(procs.split('\n')).toContain(String(busy.pid));

    let usage = await cg.usage();
    for (let i = 0; i < 500 && (usage.cpuUsageNs === 0 || usage.memoryBytes === 0); i++) {
      await new Promise((r) => setTimeout(r, 20));
      usage = await cg.usage();
    }
    expect(usage.cpuUsageNs).toBeGreaterThan(0);
    expect(usage.memoryBytes).toBeGreaterThan(0);
    expect(usage.memoryWorkingSetBytes).toBeLessThanOrEqual(usage.memoryBytes);
    expect(usage.pids).toBeGreaterThanOrEqual(1);

    await cg.setCpuLimit(null);
    await cg.setMemoryLimit(null);
    await cg.setPidsLimit(null);
    expect(await cg.limits()).toEqual({ cpu: null, memoryBytes: null, pids: null });
  });

  it('caps TCP socket buffers on v1 (read back from cgroupfs), and leaves v2 to memory.max', async () => {
    const cg = top.child('ws-tcp');
    await cg.create();
    await cg.setTcpMemoryLimit(8 * 1024 * 1024);
    const file = join(cg.dir('memory'), 'memory.kmem.tcp.limit_in_bytes');
    if (controller.version === 'v1') {
      expect((await readFile(file, 'utf8')).trim()).toBe(String(8 * 1024 * 1024));
      await cg.setTcpMemoryLimit(null);
      // Unlimited reads back as the page counter's maximum, far above any real size.
      expect(Number((await readFile(file, 'utf8')).trim())).toBeGreaterThan(2 ** 60);
    } else {
      expect(existsSync(file)).toBe(false);
    }
    await expect(cg.setTcpMemoryLimit(100)).rejects.toSatisfy(isCgroupError);
  });

  it('enforces the pids limit', async () => {
    const cg = top.child('ws-pids');
    await cg.create();
    await cg.setPidsLimit(2);
    // The shell joins the cgroup, then tries to start more processes than allowed.
    const script = `echo $$ > ${join(cg.dir('pids'), 'cgroup.procs')}; sleep 30 & sleep 30 & sleep 30 & wait`;
    const sh = spawn('sh', ['-c', script], { stdio: ['ignore', 'ignore', 'pipe'] });
    children.push(sh);
    let stderr = '';
    sh.stderr!.on('data', (b: Buffer) => (stderr += b.toString()));
    for (let i = 0; i < 200 && !/fork|resource/i.test(stderr); i++) await new Promise((r) => setTimeout(r, 20));
    expect(stderr).toMatch(/fork|resource/i);
    expect((await cg.usage()).pids).toBeLessThanOrEqual(2);
    await cg.kill();
    expect(await cg.processes()).toEqual([]);
  });

  it('gives an evacuated child the TCP cap and IO throttling v1 does not apply to children', async () => {
    const cg = top.child('ws-flat');
    await cg.create();
    const disk = (await readdir('/sys/block')).find((name) => !/^(loop|ram|zram)/.test(name));
    const device = disk === undefined ? undefined : (await readFile(`/sys/block/${disk}/dev`, 'utf8')).trim();
    await cg.setTcpMemoryLimit(8 * 1024 * 1024);
    const io = device !== undefined && controller.layout.version === 'v1' && controller.layout.roots.blkio;
    if (io) {
      await cg.setIoLimits([
        { device, readBytesPerSecond: 1_000_000, writeBytesPerSecond: 0, readIops: 400, writeIops: 0 },
      ]);
    }
    const a = start('sleep', ['60']);
    await cg.addProcess(a.pid!);
    expect(await cg.evacuateTo('user')).toBe(1);
    if (controller.layout.version === 'v1') {
      const child = cg.child('user');
      const tcp = await readFile(join(child.dir('memory'), 'memory.kmem.tcp.limit_in_bytes'), 'utf8');
      expect(tcp.trim()).toBe(String(8 * 1024 * 1024));
      if (io) {
        const blkio = child.dir('blkio');
        expect((await readFile(join(blkio, 'blkio.throttle.read_bps_device'), 'utf8')).trim()).toBe(
          `${device} 1000000`,
        );
        expect((await readFile(join(blkio, 'blkio.throttle.read_iops_device'), 'utf8')).trim()).toBe(`${device} 400`);
        expect((await readFile(join(blkio, 'blkio.throttle.write_bps_device'), 'utf8')).trim()).toBe('');
      }
      // A socket made in the child is charged, and to the parent's cap too: loopback buffers filled, never read.
      const fill =
        "const net=require('net');const s=net.createServer(()=>{}).listen(0,'127.0.0.1',()=>{" +
        "const c=net.connect(s.address().port,'127.0.0.1',()=>{const b=Buffer.alloc(1<<20);" +
        "const w=()=>{while(c.write(b));};w();c.on('drain',w);console.log('filling');});});";
      const filler = spawn(
        'sh',
        ['-c', `echo $$ > ${join(child.dir('memory'), 'cgroup.procs')}; exec "$0" -e "$1"`, process.execPath, fill],
        { stdio: ['ignore', 'pipe', 'ignore'] },
      );
      children.push(filler);
      const usage = join(cg.dir('memory'), 'memory.kmem.tcp.usage_in_bytes');
      let charged = 0;
      for (let i = 0; i < 250 && charged < 1024 * 1024; i++) {
        await new Promise((r) => setTimeout(r, 20));
        charged = Number((await readFile(usage, 'utf8')).trim());
      }
      // It joined the memory hierarchy only, where kill() does not look.
      const exited = new Promise((r) => filler.once('exit', r));
      filler.kill('SIGKILL');
      await exited;
      expect(charged).toBeGreaterThanOrEqual(1024 * 1024);
    }
    await cg.kill();
    await cg.remove();
  });

  it('evacuates processes into a child, kills everything and removes the tree', async () => {
    const cg = top.child('ws-2');
    await cg.create();
    const a = start('sleep', ['60']);
    const b = start('sleep', ['60']);
    await cg.addProcess(a.pid!);
    await cg.addProcess(b.pid!);
    expect(await cg.evacuateTo('user', { chownUid: 33333, chownGid: 33333 })).toBe(2);
    expect(await cg.processes()).toEqual([]);
    expect((await cg.child('user').processes()).sort()).toEqual([a.pid, b.pid].sort());
    const exited = Promise.all([a, b].map((c) => new Promise((r) => c.once('exit', r))));
    await cg.kill();
    await exited;
    expect(await cg.child('user').processes()).toEqual([]);
    await cg.remove();
    expect(await cg.exists()).toBe(false);
    expect(existsSync(cg.child('user').dir())).toBe(false);
    // Removing what is gone is fine.
    await cg.remove();
  });

  it('refuses bad paths and bad limits', async () => {
    expect(() => controller.cgroup('../escape')).toThrow(CgroupError);
    expect(() => controller.cgroup('a/b c')).toThrow(/not allowed/);
    const cg = top.child('ws-3');
    await expect(cg.setCpuLimit({ quotaUs: 10 })).rejects.toSatisfy(isCgroupError);
    await expect(cg.setMemoryLimit(12)).rejects.toSatisfy(isCgroupError);
    await expect(cg.setPidsLimit(0)).rejects.toSatisfy(isCgroupError);
    // Writing to a cgroup that does not exist names the operation and the path.
    const e = await cg.setPidsLimit(5).catch((x: unknown) => x);
    expect(isCgroupError(e)).toBe(true);
    expect((e as CgroupError).path).toBe(`${base}/ws-3`);
    expect((e as CgroupError).op).toBe('set-pids');
  });
});

describe('cgroup layout detection and v2 files (fixture tree)', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'cgroup-fixture-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('prefers v2 when the unified hierarchy has controllers, else v1', async () => {
    const root = join(dir, 'unified');
    await mkdir(root, { recursive: true });
    await writeFile(join(root, 'cgroup.controllers'), 'cpuset cpu io memory pids\n');
    const v2info = `30 23 0:26 / ${root} rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n`;
    await writeFile(join(dir, 'mi-v2'), v2info);
    expect(await detectCgroupLayout(join(dir, 'mi-v2'))).toEqual({ version: 'v2', root });

    const hybrid = [
      `35 25 0:30 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:9 - cgroup cgroup rw,cpu,cpuacct`,
      `36 25 0:31 / /sys/fs/cgroup/memory rw,relatime shared:10 - cgroup cgroup rw,memory`,
      `37 25 0:32 / /sys/fs/cgroup/pids rw,relatime shared:11 - cgroup cgroup rw,pids`,
      `38 25 0:33 / /sys/fs/cgroup/systemd rw,relatime shared:12 - cgroup cgroup rw,name=systemd`,
      `39 25 0:34 / ${join(dir, 'empty-unified')} rw,relatime shared:13 - cgroup2 cgroup2 rw`,
      '',
    ].join('\n');
    await writeFile(join(dir, 'mi-v1'), hybrid);
    expect(await detectCgroupLayout(join(dir, 'mi-v1'))).toEqual({
      version: 'v1',
      roots: {
        cpu: '/sys/fs/cgroup/cpu,cpuacct',
        cpuacct: '/sys/fs/cgroup/cpu,cpuacct',
        memory: '/sys/fs/cgroup/memory',
        pids: '/sys/fs/cgroup/pids',
      },
    });
    await writeFile(join(dir, 'mi-none'), '');
    await expect(detectCgroupLayout(join(dir, 'mi-none'))).rejects.toThrow(/no usable cgroup/);
  });

  it('reads and writes the v2 interface files', async () => {
    const root = join(dir, 'v2root');
    await mkdir(root, { recursive: true });
    await writeFile(join(root, 'cgroup.controllers'), 'cpu memory pids io\n');
    await writeFile(join(root, 'cgroup.subtree_control'), '');
    const controller = new CgroupController({ version: 'v2', root });
    const cg = controller.cgroup('ws-9');
    await cg.create();
    expect(await readFile(join(root, 'cgroup.subtree_control'), 'utf8')).toBe('+cpu +memory +pids');
    await cg.setCpuLimit({ quotaUs: 150_000 });
    await cg.setMemoryLimit(1 << 30);
    await cg.setPidsLimit(100);
    // v2 charges socket buffers to memory.max: no file of its own to write.
    await cg.setTcpMemoryLimit(64 << 20);
    expect(existsSync(join(root, 'ws-9', 'memory.kmem.tcp.limit_in_bytes'))).toBe(false);
    expect(await readFile(join(root, 'ws-9', 'cpu.max'), 'utf8')).toBe('150000 100000');
    expect(await cg.limits()).toEqual({
      cpu: { quotaUs: 150_000, periodUs: 100_000 },
      memoryBytes: 1 << 30,
      pids: 100,
    });
    await cg.setCpuLimit(null);
    await cg.setMemoryLimit(null);
    expect(await cg.limits()).toMatchObject({ cpu: null, memoryBytes: null });

    await writeFile(join(root, 'ws-9', 'cpu.stat'), 'usage_usec 2500\nuser_usec 2000\nsystem_usec 500\n');
    await writeFile(join(root, 'ws-9', 'memory.current'), '1000000\n');
    await writeFile(join(root, 'ws-9', 'memory.stat'), 'anon 600000\ninactive_file 300000\n');
    await writeFile(join(root, 'ws-9', 'pids.current'), '3\n');
    expect(await cg.usage()).toEqual({
      cpuUsageNs: 2_500_000,
      memoryBytes: 1_000_000,
      memoryWorkingSetBytes: 700_000,
      pids: 3,
    });

    await writeFile(join(root, 'ws-9', 'cgroup.procs'), '');
    await cg.addProcess(4242);
    expect(await readFile(join(root, 'ws-9', 'cgroup.procs'), 'utf8')).toBe('4242');
  });
});
