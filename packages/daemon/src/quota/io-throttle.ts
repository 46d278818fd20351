/**
 * Disk bandwidth and IOPS limits per workspace, on its loop device (loop quota mode).
 *
 * Red team round 7 wrote 425 MB/s to the node's disk from one workspace; a neighbour's fsync p99 went from 15 to
 * 25 ms. A cgroup v1 limit on the workspace's own cgroup does not hold: v1 throttles only the IO a task submits
 * itself, and buffered writes reach the disk from the kernel's flusher threads, in the root cgroup. So the rule is
 * set in the root blkio cgroup on the workspace's loop device, which only its content uses: the flusher's writeback
 * of that device is throttled too (measured here: 64 MiB written with `conv=fsync` took 4.1 s at 16 MiB/s, 0.17 s
 * without the rule), and so is the loop worker's IO on the node's disk, which follows it.
 *
 * The daemon's own IO on the device (the restore at init, the final backup) is not the workspace's: the limit is set
 * once the content is ready and lifted before the final backup (content/initialization.ts, disposal.ts).
 *
 * @module
 */
import { access, constants, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { InternalError } from '../errors.js';

/** Per workspace; 0: no limit of that kind. */
export interface IoLimits {
  readonly readBytesPerSecond: number;
  readonly writeBytesPerSecond: number;
  readonly readIops: number;
  readonly writeIops: number;
}

export const ioLimitDefaults: IoLimits = Object.freeze({
  readBytesPerSecond: 256 * 1024 * 1024,
  writeBytesPerSecond: 128 * 1024 * 1024,
  readIops: 4000,
  writeIops: 2000,
});

/** Where cgroup v1 mounts the blkio hierarchy. */
export const blkioRoot = '/sys/fs/cgroup/blkio';

const files: Record<keyof IoLimits, string> = {
  readBytesPerSecond: 'blkio.throttle.read_bps_device',
  writeBytesPerSecond: 'blkio.throttle.write_bps_device',
  readIops: 'blkio.throttle.read_iops_device',
  writeIops: 'blkio.throttle.write_iops_device',
};

const devicePattern = /^\d{1,4}:\d{1,8}$/;

/** The major number of loop devices (the kernel's devices.txt). */
const loopMajor = 7;

/** Where the kernel shows block devices by number (`<major>:<minor>/loop/backing_file` while a loop is attached). */
export const sysDevBlock = '/sys/dev/block';

export function hasIoLimits(limits: IoLimits): boolean {
  return Object.values(limits).some((value) => value > 0);
}

/** Whether this node can throttle a device from the root blkio cgroup (cgroup v1, as root). */
export async function probeIoThrottle(root = blkioRoot): Promise<{ available: boolean; reason?: string }> {
  try {
    await access(join(root, files.writeBytesPerSecond), constants.W_OK);
    return { available: true };
  } catch {
    return {
      available: false,
      reason: `${join(root, files.writeBytesPerSecond)} is not writable (needs root and the cgroup v1 blkio controller)`,
    };
  }
}

/** Sets and lifts the rules of one device in the root blkio cgroup. */
export class BlkioThrottle {
  constructor(
    private readonly limits: IoLimits,
    private readonly root = blkioRoot,
  ) {}

  /** Limits `device` (`major:minor`); a kind whose limit is 0 gets no rule (an old one is removed). */
  async limit(device: string): Promise<void> {
    await this.write(device, (kind) => this.limits[kind]);
  }

  /** Removes every rule of `device` (writing 0 removes one). */
  async lift(device: string): Promise<void> {
    await this.write(device, () => 0);
  }

  /**
   * Removes the rules of loop devices nothing is attached to any more, and returns them. An image unmounted behind the
   * daemon's back (by hand, or while the daemon was down) kept its rule on the freed number, which throttled whatever
   * took the number next; a Workbay image gets its rule lifted when it is attached, anything else did not. Rules of
   * attached devices are left alone (a Workbay image's own, or another tool's).
   */
  async liftDetachedLoops(sysBlock = sysDevBlock): Promise<string[]> {
    const devices = new Set<string>();
    for (const file of Object.values(files)) {
      for (const line of (await readFile(join(this.root, file), 'utf8')).split('\n')) {
        const device = line.split(' ')[0] ?? '';
        if (device.startsWith(`${loopMajor}:`) && devicePattern.test(device)) devices.add(device);
      }
    }
    const lifted: string[] = [];
    for (const device of devices) {
      const attached = await access(join(sysBlock, device, 'loop', 'backing_file')).then(
        () => true,
        () => false,
      );
      if (attached) continue;
      await this.lift(device);
      lifted.push(device);
    }
    return lifted;
  }

  private async write(device: string, value: (kind: keyof IoLimits) => number): Promise<void> {
    if (!devicePattern.test(device)) throw new InternalError(`'${device.slice(0, 32)}' is not a major:minor device`);
    for (const kind of Object.keys(files) as (keyof IoLimits)[]) {
      await writeFile(join(this.root, files[kind]), `${device} ${Math.max(0, Math.floor(value(kind)))}\n`);
    }
  }
}
