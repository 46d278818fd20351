/**
 * Admission for loop-image quotas: the daemon never promises more disk than the filesystem holding the images
 * can give. Sparse images cost only what is written, so without this N workspaces each filling their image could
 * fill that filesystem (the node's state, logs and backups live there too). Like Kubernetes admitting pods on
 * their ephemeral-storage requests against the node's allocatable (capacity minus what is reserved for the
 * system), the rule counts promises, not current use:
 *
 *   promised  = Σ over the images (size − bytes already allocated on disk)   allocated blocks are out of `free`
 *   capacity  = (free − reserve) × overcommitRatio,   reserve = max(reserveBytes, reserveFraction × fs size)
 *   admit a new image of `bytes` iff promised + bytes ≤ capacity
 *
 * The images counted are every `*.img` in the image directory (so images restored after a restart, and those of
 * failed or half-deleted workspaces, count until they are removed) plus the images being created right now, less
 * the dormant ones: content kept after its final backup failed, mounted read-only until its owner resumes it, can
 * take no more than it has (red team round 17, L5: kept 10 GB promises of workspaces that could never write again
 * refused every owner's starts). Resuming one admits the rest of its size again ({@link ImageAdmission.wake}).
 */
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { PluginLogger } from '@workbay/api';
import { silentLogger } from '@workbay/api';
import { DiskOvercommitError } from '../errors.js';
import type { HostOps } from '../host-ops/host-ops.js';

/** The daemon config's `quota` keys that govern loop-image admission. */
export interface LoopAdmissionSettings {
  /** Bytes of the images' filesystem kept free for the node. */
  readonly reserveBytes: number;
  /** Share of the images' filesystem kept free for the node (the larger reserve wins). */
  readonly reserveFraction: number;
  /** How many times the free space above the reserve may be promised; 1: never more than exists. */
  readonly overcommitRatio: number;
  /** Allocate each image's full size up front (`fallocate`) instead of leaving it sparse. */
  readonly preallocate: boolean;
}

/**
 * Defaults: keep at least what the disk guard's default `minFree` wants (1 GiB), or 5% of the filesystem on large
 * disks; never overcommit; sparse images.
 */
export const loopAdmissionDefaults: LoopAdmissionSettings = Object.freeze({
  reserveBytes: 1024 ** 3,
  reserveFraction: 0.05,
  overcommitRatio: 1,
  preallocate: false,
});

/** The numbers behind one admission decision (logged, and returned for tests and diagnostics). */
export interface AdmissionSnapshot {
  /** Free bytes of the images' filesystem. */
  readonly freeBytes: number;
  readonly reserveBytes: number;
  /** What the live images may still take from `freeBytes`. */
  readonly promisedBytes: number;
  readonly images: number;
  /** Of `images`, those of dormant kept content (read-only, in `promisedBytes` with nothing). */
  readonly dormantImages: number;
  /** What a new image may still be promised: `(free − reserve) × overcommitRatio − promised`, at least 0. */
  readonly availableBytes: number;
}

/** Reserves room for loop images in `imageDir`; decisions are serialized so two cannot take the same space. */
export class ImageAdmission {
  private readonly settings: LoopAdmissionSettings;
  /** Images admitted whose file may not exist (or not be full size) yet: path → size. */
  private readonly pending = new Map<string, number>();
  /** Images mounted read-only (dormant kept content): what they hold is allocated already, they promise nothing more. */
  private readonly dormant = new Set<string>();
  private queue: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly ops: HostOps,
    private readonly imageDir: string,
    settings: Partial<LoopAdmissionSettings> = {},
    private readonly logger: PluginLogger = silentLogger,
  ) {
    this.settings = { ...loopAdmissionDefaults, ...settings };
  }

  get preallocate(): boolean {
    return this.settings.preallocate;
  }

  /**
   * Admits an image of `bytes` at `image`, or throws {@link DiskOvercommitError} having changed nothing. The
   * returned function ends the reservation: call it once the image file exists at full size, or is gone.
   */
  async admit(image: string, bytes: number): Promise<() => void> {
    return this.serialized(async () => {
      const snapshot = await this.snapshotUnlocked();
      if (bytes > snapshot.availableBytes) {
        this.logger.warn({ image, requestedBytes: bytes, ...snapshot }, 'refused a loop image the disk cannot back');
        throw new DiskOvercommitError(bytes, snapshot.availableBytes);
      }
      this.pending.set(image, bytes);
      return () => {
        if (this.pending.get(image) === bytes) this.pending.delete(image);
      };
    });
  }

  /** `image` is read-only from now on: it promises nothing beyond its allocated blocks. */
  markDormant(image: string): void {
    this.dormant.add(image);
  }

  /** `image` is gone: forgotten, so that a new image at its path counts in full. */
  forget(image: string): void {
    this.dormant.delete(image);
  }

  /**
   * Admits the rest of a dormant image of `bytes` (what it has not allocated yet) before it is made writable again,
   * or throws {@link DiskOvercommitError} leaving it dormant. An image that is not dormant holds its promise already.
   * The returned function undoes the admission (the image stays read-only after all).
   */
  async wake(image: string, bytes: number): Promise<() => void> {
    return this.serialized(async () => {
      if (!this.dormant.has(image)) return () => undefined;
      const snapshot = await this.snapshotUnlocked();
      const info = await stat(image);
      const rest = Math.max(0, Math.max(bytes, info.size) - info.blocks * 512);
      if (rest > snapshot.availableBytes) {
        this.logger.warn(
          { image, requestedBytes: rest, ...snapshot },
          'refused to resume a kept image the disk cannot back',
        );
        throw new DiskOvercommitError(rest, snapshot.availableBytes);
      }
      this.dormant.delete(image);
      return () => this.dormant.add(image);
    });
  }

  /** The current numbers (waits for decisions in flight). */
  async snapshot(): Promise<AdmissionSnapshot> {
    return this.serialized(() => this.snapshotUnlocked());
  }

  private async snapshotUnlocked(): Promise<AdmissionSnapshot> {
    const fs = await this.ops.statfs(this.imageDir);
    const reserve = Math.max(this.settings.reserveBytes, Math.ceil(this.settings.reserveFraction * fs.totalBytes));
    const { promised, images, dormantImages } = await this.promised();
    const capacity = Math.floor(Math.max(0, fs.freeBytes - reserve) * this.settings.overcommitRatio);
    return {
      freeBytes: fs.freeBytes,
      reserveBytes: reserve,
      promisedBytes: promised,
      images,
      dormantImages,
      availableBytes: Math.max(0, capacity - promised),
    };
  }

  private async promised(): Promise<{ promised: number; images: number; dormantImages: number }> {
    const sizes = new Map(this.pending);
    for (const name of await readdir(this.imageDir).catch(() => [] as string[])) {
      if (name.endsWith('.img')) {
        const path = join(this.imageDir, name);
        sizes.set(path, sizes.get(path) ?? 0);
      }
    }
    let promised = 0;
    let dormantImages = 0;
    for (const [path, pendingSize] of sizes) {
      if (this.dormant.has(path)) {
        dormantImages++;
        continue;
      }
      // Gone meanwhile (released): it promises nothing.
      const info = await stat(path).catch(() => undefined);
      // A pending image counts at its admitted size even while its file is still being created (size 0).
      const size = Math.max(pendingSize, info?.size ?? 0);
      const allocated = info ? info.blocks * 512 : 0;
      promised += Math.max(0, size - allocated);
    }
    return { promised, images: sizes.size, dormantImages };
  }

  private serialized<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(fn, fn);
    this.queue = run.catch(() => undefined);
    return run;
  }
}
