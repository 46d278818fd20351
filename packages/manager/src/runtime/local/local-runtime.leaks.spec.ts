// LocalRuntime as root: what an isolated workspace learns of its neighbours through its mounts, /proc and /sys
// (red team round 6, finding 8: loop devices' image paths, the host's mount table, every device's I/O).
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chown, mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  base,
  isRoot,
  newRuntime,
  shellImages,
  spec,
  useLocalRuntimeFixtures,
  waitForFile,
} from '../../test-support/local-runtime.js';

const run = promisify(execFile);

useLocalRuntimeFixtures();

/** Loop-mounted ext4 images as the daemon's `loop` quota makes them, where the machine can; else a tmpfs. */
const loopImages =
  ['/sbin/mkfs.ext4', '/usr/sbin/mkfs.ext4'].some((f) => existsSync(f)) && existsSync('/dev/loop-control');

/**
 * The directory holding every workspace's content, as the daemon's: outside /tmp, so that the runtime hides it
 * with a tmpfs of its own (below /tmp, the private /tmp would).
 */
let area: string;
const mounted: string[] = [];

/** A content directory at `<area>/<instanceId>` with a filesystem of its own of `mib` MiB, owned by `uid`. */
async function mountedContent(instanceId: string, mib: number, uid: number): Promise<string> {
  const dir = path.join(area, instanceId);
  await mkdir(dir);
  if (loopImages) {
    const image = path.join(base, 'images', `${instanceId}.img`);
    await mkdir(path.dirname(image), { recursive: true });
    await run('truncate', ['-s', `${mib}M`, image]);
    await run('mkfs.ext4', ['-q', image], { env: { PATH: '/usr/sbin:/sbin:/usr/bin:/bin' } });
    await run('mount', ['-o', 'loop,nodev,nosuid', image, dir]);
  } else {
    await run('mount', ['-t', 'tmpfs', '-o', `size=${mib}m,nodev,nosuid`, 'tmpfs', dir]);
  }
  mounted.push(dir);
  await chown(dir, uid, uid);
  return dir;
}

async function tmpfsAt(dir: string): Promise<void> {
  await run('mount', ['-t', 'tmpfs', '-o', 'size=64k', 'workbay-spec', dir]);
  mounted.push(dir);
}

/** Run inside the workspace: what it sees, one file each, then `probe.txt` once all are written. */
const probe = [
  'cat /proc/self/mountinfo > mountinfo.txt',
  'for d in /sys/block /sys/class/block /sys/dev/block /sys/devices/virtual/block /sys/fs/ext4 /proc/fs/ext4 /proc/fs/jbd2; do',
  '  printf "%s %s\\n" "$d" "$(ls -A "$d" 2>/dev/null | wc -l)"',
  'done > sys.txt',
  'for f in /sys/block/loop*/loop/backing_file /sys/devices/virtual/block/loop*/loop/backing_file; do',
  '  if [ -e "$f" ]; then cat "$f"; fi',
  'done > backing.txt',
  'cat /proc/diskstats /proc/partitions /proc/locks > diskstats.txt',
  'stat -L -c %t:%T /dev/kmsg > kmsg.txt',
  'df -P /workspace | tail -1 > df.txt',
  'ls /sys/class/net > net.txt',
  'ip -o -4 addr show dev eth0 > ip.txt',
  'ps -e -o pid= | wc -l > ps.txt',
  'echo written > probe.tmp && mv probe.tmp probe.txt',
  'exec sleep 600',
].join('\n');

describe.runIf(isRoot)('LocalRuntime: what an isolated workspace sees of its neighbours', () => {
  beforeAll(async () => {
    area = await mkdtemp('/run/workbay-leaks-');
  });

  afterAll(async () => {
    for (const dir of mounted.splice(0).reverse()) await run('umount', ['-l', dir]).catch(() => undefined);
    await rm(area, { recursive: true, force: true });
  });

  it("lists neither a neighbour's mounts nor its netns, nor any block device or its I/O; its own /workspace, df and links work", async () => {
    const runtime = await newRuntime({
      images: shellImages({ neighbour: 'dd if=/dev/zero of=busy bs=64k count=16 2>/dev/null; exec sleep 600', probe }),
    });
    const neighbourSpec = spec({ contentDir: '', image: 'neighbour' });
    const neighbourDir = await mountedContent(neighbourSpec.instanceId, 16, 230_001);
    const neighbour = await runtime.start({ ...neighbourSpec, contentDir: neighbourDir });
    // Mounts below the area the init must find and detach too: a name mountinfo escapes, two stacked at one place,
    // and one covered by a later mount over its parent directory.
    for (const [dir, times] of [
      ['with space\\and backslash', 1],
      ['stacked', 2],
      ['shadow/inner', 1],
      ['shadow', 1],
    ] as const) {
      await mkdir(path.join(area, dir), { recursive: true });
      for (let i = 0; i < times; i += 1) await tmpfsAt(path.join(area, dir));
    }
    const ownSpec = spec({ contentDir: '', image: 'probe' });
    const dir = await mountedContent(ownSpec.instanceId, 40, 230_002);
    const own = await runtime.start({ ...ownSpec, contentDir: dir });
    expect((await waitForFile(path.join(dir, 'probe.txt'))).trim()).toBe('written');
    // Written before probe.txt: complete.
    const read = (name: string): Promise<string> => readFile(path.join(dir, name), 'utf8');

    // The host's mount table had the neighbour's content (its instance id in the path) and its netns, and every
    // other workspace's; covering their directories with a tmpfs hid the files, not the mounts.
    const mountinfo = await read('mountinfo.txt');
    expect(mountinfo).toContain(' /workspace ');
    expect(mountinfo).not.toContain(neighbourSpec.instanceId);
    expect(mountinfo).not.toContain(neighbourDir);
    expect(mountinfo).not.toContain(neighbour.net!.netns);
    expect(mountinfo).not.toContain(own.net!.netns);
    expect(mountinfo).not.toContain(base); // loop images, the runtime's state
    expect(mountinfo).not.toMatch(/ \/run\/netns\//);
    expect(mountinfo.split('\n').filter((line) => line.includes(` ${area}/`))).toEqual([]);
    expect(mountinfo).not.toContain('workbay-spec');

    // No block device in sysfs, so no loop device's image, and no filesystem's counters.
    expect((await read('sys.txt')).trim().split('\n')).toEqual([
      '/sys/block 0',
      '/sys/class/block 0',
      '/sys/dev/block 0',
      '/sys/devices/virtual/block 0',
      '/sys/fs/ext4 0',
      '/proc/fs/ext4 0',
      '/proc/fs/jbd2 0',
    ]);
    expect(await read('backing.txt')).toBe('');
    // No device's I/O (the neighbour's loop device wrote 1 MiB), no lock on the node.
    expect(await read('diskstats.txt')).toBe('');
    // The kernel log (other workspaces' OOM kills, cgroups, images) is /dev/null's device (1:3), not kmsg's (1:b).
    expect((await read('kmsg.txt')).trim()).toBe('1:3');

    // What it needs still works: its content (it wrote these files), df on it (its own filesystem's size), its own
    // links and address, ps.
    const df = (await read('df.txt')).trim().split(/\s+/);
    expect(df.at(-1)).toBe('/workspace');
    if (loopImages) expect(Number(df[1])).toBeGreaterThan(20 * 1024); // 40 MiB, not the neighbour's 16
    expect((await read('net.txt')).trim().split('\n').sort()).toEqual(['eth0', 'lo']);
    expect(await read('ip.txt')).toContain(`${own.net!.address}/`);
    expect(Number((await read('ps.txt')).trim())).toBeGreaterThan(0);
  });
});
