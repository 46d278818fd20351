import { mkdir, rm, truncate } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { EMPTY } from 'rxjs';
import type { Observable } from 'rxjs';
import type { PluginLogger } from '@workbay/api';
import { silentLogger } from '@workbay/api';
import {
  FailedPreconditionError,
  InternalError,
  InvalidArgumentError,
  ResourceExhaustedError,
  errorMessage,
} from '../errors.js';
import type { HostOps } from '../host-ops/host-ops.js';
import { runProcess } from '../util/process.js';
import { ImageAdmission } from './admission.js';
import type { AdmissionSnapshot, LoopAdmissionSettings } from './admission.js';
import type { DiskQuota, QuotaExceeded, QuotaHandle, QuotaUsage } from './disk-quota.js';
import type { BlkioThrottle } from './io-throttle.js';

/** Smallest image the loop mode makes: ext4's own metadata needs a few MiB. */
export const minimumLoopImageBytes = 16 * 1024 * 1024;

/**
 * A loop-mounted ext4 image per workspace at `<imageDir>/<instanceId>.img`, sparse so that it costs only what
 * is written. The kernel enforces the size: writes past it fail with ENOSPC. An image is only created once
 * {@link ImageAdmission} has found room for all of it on the filesystem holding the images, so the images
 * together can never fill that filesystem (see admission.ts); a refusal creates nothing.
 *
 * Sparse + admission is the default rather than preallocation (`quota.preallocate`): admission already makes the
 * promise hold against other workspaces, while a sparse image leaves the unwritten part free for the node's own
 * short-lived needs (backup staging, logs) and costs no time to create. Preallocation is the hard guarantee for
 * nodes where something outside the daemon also writes to that filesystem: the blocks are the image's from the
 * start, at the price of the full size on disk for every workspace, used or not.
 */
export class LoopDiskQuota implements DiskQuota {
  readonly mode = 'loop';
  readonly exceeded$: Observable<QuotaExceeded> = EMPTY;
  private readonly admission: ImageAdmission;

  constructor(
    private readonly ops: HostOps,
    private readonly imageDir: string,
    private readonly logger: PluginLogger = silentLogger,
    settings: Partial<LoopAdmissionSettings> = {},
    /** Sets the workspaces' disk IO limits on their loop devices; none: not limited. */
    private readonly throttle?: BlkioThrottle,
  ) {
    this.admission = new ImageAdmission(ops, imageDir, settings, logger);
  }

  private imagePath(instanceId: string): string {
    return join(this.imageDir, `${instanceId}.img`);
  }

  /** What the images' filesystem can still back, and what the live images already hold a claim on. */
  async capacity(): Promise<AdmissionSnapshot> {
    await mkdir(this.imageDir, { recursive: true, mode: 0o700 });
    return this.admission.snapshot();
  }

  async apply(instanceId: string, dir: string, bytes: number): Promise<QuotaHandle> {
    if (bytes < minimumLoopImageBytes) {
      throw new InvalidArgumentError(
        'storage_quota_bytes',
        `must be at least ${minimumLoopImageBytes} bytes for loop-image quotas (got ${bytes})`,
      );
    }
    await mkdir(this.imageDir, { recursive: true, mode: 0o700 });
    const image = this.imagePath(instanceId);
    // Before anything changes: a refusal leaves no image, no loop device and the directory as it was.
    const admitted = await this.admission.admit(image, bytes);
    try {
      if (await this.ops.isMountPoint(dir)) await this.ops.unmount(dir, { lazy: true });
      try {
        await this.ops.createSparseFile(image, bytes);
        await this.ops.formatExt4(image);
        // After formatting: mkfs.ext4 discards a file's blocks (punches holes), which would undo the allocation.
        if (this.admission.preallocate) await preallocate(image, bytes);
        await this.ops.mountLoop(image, dir);
        // A loop device number is reused: a rule a crashed daemon left on it would throttle this workspace's restore.
        if (this.throttle) await this.liftIo(instanceId, dir);
      } catch (error) {
        await rm(image, { force: true });
        throw error;
      }
    } finally {
      // The image now exists at full size (admission counts it from the directory) or is gone.
      admitted();
    }
    return { mode: 'loop', bytes, image };
  }

  async restore(_instanceId: string, dir: string, handle: QuotaHandle): Promise<void> {
    // Admission needs nothing here: it counts every image in the image directory, restored or not.
    if (!handle.image) throw new FailedPreconditionError('loop quota handle without an image');
    if (await this.ops.isMountPoint(dir)) return;
    await mkdir(dir, { recursive: true });
    await this.ops.mountLoop(handle.image, dir);
    this.logger.info({ image: handle.image, dir }, 're-mounted workspace image after restart');
  }

  /** Remounts the image read-only and takes it out of the admission's promises (see {@link DiskQuota.makeDormant}). */
  async makeDormant(_instanceId: string, dir: string, handle: QuotaHandle): Promise<boolean> {
    if (!handle.image || !(await this.ops.isMountPoint(dir))) return false;
    try {
      await this.ops.remount(dir, { readOnly: true });
    } catch (error) {
      // Deliberate: busy (a file still open for writing) keeps it writable, and admission keeps counting its promise.
      this.logger.warn(
        { dir, err: errorMessage(error) },
        'cannot make kept content read-only; it keeps its disk promise',
      );
      return false;
    }
    this.admission.markDormant(handle.image);
    return true;
  }

  /** Admits the rest of the image again, then remounts it writable (see {@link DiskQuota.wake}). */
  async wake(_instanceId: string, dir: string, handle: QuotaHandle): Promise<void> {
    if (!handle.image) return;
    const undo = await this.admission.wake(handle.image, handle.bytes);
    try {
      await this.ops.remount(dir, { readOnly: false });
    } catch (error) {
      undo();
      throw error;
    }
  }

  async limitIo(_instanceId: string, dir: string): Promise<void> {
    if (this.throttle) await this.throttle.limit(await this.deviceOf(dir));
  }

  async liftIo(_instanceId: string, dir: string): Promise<void> {
    if (this.throttle) await this.throttle.lift(await this.deviceOf(dir));
  }

  /** The loop device mounted at `dir`. */
  private async deviceOf(dir: string): Promise<string> {
    const mount = await this.ops.mountOf(dir);
    if (!mount || mount.mountPoint !== resolve(dir)) {
      throw new FailedPreconditionError(`the workspace image is not mounted at ${dir}`);
    }
    return mount.device;
  }

  async release(instanceId: string, dir: string, handle: QuotaHandle): Promise<void> {
    if (this.throttle && (await this.ops.isMountPoint(dir))) {
      // Before the device is detached: a loop device number is reused, and a rule left on it would throttle the next
      // workspace's restore. A failure here only costs that, so it does not stop the release.
      await this.liftIo(instanceId, dir).catch((error: unknown) =>
        this.logger.warn({ dir, err: errorMessage(error) }, 'cannot lift the disk IO limits of a workspace image'),
      );
    }
    if (await this.ops.isMountPoint(dir)) {
      try {
        await this.ops.unmount(dir);
      } catch (error) {
        this.logger.warn({ dir, err: errorMessage(error) }, 'workspace image busy; detaching lazily');
        await this.ops.unmount(dir, { lazy: true });
      }
    }
    if (!handle.image) return;
    this.admission.forget(handle.image);
    // Truncated first: the kernel detaches the loop device and drops its reference to the image after the
    // unmount, asynchronously, and an unlinked file keeps its blocks until then; an admission right after this
    // release would not see them free. The content is gone by contract, also for a lazily detached image.
    await truncate(handle.image, 0).catch(() => undefined);
    await rm(handle.image, { force: true });
  }

  async usage(_instanceId: string, dir: string, handle: QuotaHandle): Promise<QuotaUsage> {
    const stats = await this.ops.statfs(dir);
    return { usedBytes: stats.totalBytes - stats.freeBytes, limitBytes: handle.bytes };
  }

  async close(): Promise<void> {}
}

/** Allocates every block of `image` (unwritten extents: fast, reads as zeros, keeps the data already there). */
async function preallocate(image: string, bytes: number): Promise<void> {
  // HostOps has no fallocate operation (and Node no fallocate(2)); util-linux `fallocate` is where mkfs.ext4 is.
  const result = await runProcess('fallocate', ['-l', String(bytes), image]);
  if (result.code === 0) return;
  const detail = result.stderr.trim();
  if (/No space left/i.test(detail)) {
    throw new ResourceExhaustedError(`cannot preallocate a disk quota of ${bytes} bytes: the node's disk is full`);
  }
  throw new InternalError(`preallocating the workspace image failed (fallocate exit ${result.code}): ${detail}`);
}
