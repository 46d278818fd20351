/**
 * Filesystems of a test's own on loop images: a quota test fills the disk that holds the images, so that disk is a
 * small ext4 image in the test's scratch directory, never the host's.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createHostOps, parseMountInfo } from '../host-ops/host-ops.js';

const ops = createHostOps();

/** Formats a sparse ext4 image of `bytes` at `<scratch>/disk.img` and mounts it at `target`. */
export async function mountScratchDisk(scratch: string, target: string, bytes: number): Promise<void> {
  const image = join(scratch, 'disk.img');
  await ops.createSparseFile(image, bytes);
  await ops.formatExt4(image);
  await ops.mountLoop(image, target);
}

/**
 * Unmounts everything under `root`, deepest first, lazily: loop devices the kernel is still detaching
 * (asynchronously) keep the disk busy for a moment, and a failed test must not leave mounts for `rm -rf`.
 */
export async function unmountUnder(root: string): Promise<void> {
  const mounts = parseMountInfo(await readFile('/proc/self/mountinfo', 'utf8'))
    .map((m) => m.mountPoint)
    .filter((p) => p.startsWith(`${root}/`))
    .sort((a, b) => b.length - a.length);
  for (const mountPoint of mounts) await ops.unmount(mountPoint, { lazy: true });
}
