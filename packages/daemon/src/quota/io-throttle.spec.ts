/**
 * The root blkio cgroup's rules on loop devices (real cgroup v1, real loop devices, as root): a rule left on a loop
 * device that nothing is attached to any more is lifted, a rule on an attached one is kept.
 */
import { execFileSync } from 'node:child_process';
import { mkdtemp, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { BlkioThrottle, blkioRoot, ioLimitDefaults, probeIoThrottle } from './io-throttle.js';

const isRoot = process.getuid?.() === 0;
const throttleAvailable = isRoot && (await probeIoThrottle()).available;

const writeRules = (): Promise<string> => readFile(join(blkioRoot, 'blkio.throttle.write_bps_device'), 'utf8');

describe.runIf(throttleAvailable)('BlkioThrottle on loop devices', () => {
  let work: string;
  let loop: string | undefined;
  let device: string | undefined;
  const throttle = new BlkioThrottle({ ...ioLimitDefaults, writeBytesPerSecond: 3 * 1024 * 1024 });

  beforeEach(async () => {
    work = await mkdtemp(join(tmpdir(), 'workbay-io-throttle-'));
    const image = join(work, 'image');
    await writeFile(image, '');
    await truncate(image, 8 * 1024 * 1024);
    loop = execFileSync('losetup', ['--find', '--show', image], { encoding: 'utf8' }).trim();
    device = execFileSync('lsblk', ['-dno', 'MAJ:MIN', loop], { encoding: 'utf8' }).trim();
  });
  afterEach(async () => {
    if (device) await throttle.lift(device).catch(() => undefined);
    if (loop) execFileSync('losetup', ['-d', loop], { stdio: 'ignore' });
    loop = undefined;
    await rm(work, { recursive: true, force: true });
  });

  it('lifts the rules of a loop device once it is detached (an image unmounted behind the daemon), and only those', async () => {
    expect(device).toMatch(/^7:\d+$/);
    await throttle.limit(device!);
    expect((await writeRules()).split('\n')).toContain(`${device} ${3 * 1024 * 1024}`);

    // Attached: another image's rule, or another tool's; kept.
    expect(await throttle.liftDetachedLoops()).not.toContain(device);
    expect((await writeRules()).split('\n')).toContain(`${device} ${3 * 1024 * 1024}`);

    execFileSync('losetup', ['-d', loop!]);
    loop = undefined;
    expect(await throttle.liftDetachedLoops()).toContain(device);
    expect(await writeRules()).not.toContain(`${device} `);
  });
});
