/**
 * Housekeeping of the working area: directories without session state older than the orphan age (content
 * left by crashes before state was written), quota images without a workspace, and old tombstones.
 */
import { readdir, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { PluginLogger } from '@workbay/api';
import { errorMessage } from '../errors.js';
import type { DaemonMetrics } from '../health/metrics.js';
import type { HostOps } from '../host-ops/host-ops.js';
import { SessionStore } from '../session/session-store.js';
import { removeTree } from '../util/remove-tree.js';

export interface HousekeepingDeps {
  readonly workingArea: string;
  /** True for ids of workspaces registered in memory. */
  readonly isRegistered: (instanceId: string) => boolean;
  readonly store: SessionStore;
  readonly hostOps: HostOps;
  readonly metrics: DaemonMetrics;
  readonly logger: PluginLogger;
  readonly orphanAgeMs: number;
  readonly tombstoneTtlMs: number;
}

/**
 * A name with session state on disk is never an orphan, registered or not: a workspace whose recovery failed
 * at start is unregistered but keeps its content (and its quota image) for the next start.
 */
async function hasState(deps: HousekeepingDeps, id: string): Promise<boolean> {
  // Unreadable state still counts as state: housekeeping must not delete what it cannot judge.
  return deps.isRegistered(id) || (await deps.store.load(id).catch(() => 'unreadable')) !== undefined;
}

export async function housekeeping(deps: HousekeepingDeps, now = Date.now()): Promise<{ removed: string[] }> {
  const removed: string[] = [];
  const area = deps.workingArea;
  let names: string[];
  try {
    names = await readdir(area);
  } catch (error) {
    // No working area yet: nothing to clean. Anything else (EACCES, EIO) is the caller's to report.
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return { removed };
    throw error;
  }
  for (const name of names) {
    if (name.startsWith('.') || SessionStore.isStoreFile(name) || deps.isRegistered(name)) continue;
    const path = join(area, name);
    try {
      const info = await stat(path);
      if (!info.isDirectory() || now - info.mtimeMs < deps.orphanAgeMs) continue;
      if (await hasState(deps, name)) continue; // state appeared meanwhile, or an unrecovered workspace
      if (await deps.hostOps.isMountPoint(path)) await deps.hostOps.unmount(path, { lazy: true });
      await removeTree(path);
      removed.push(name);
      deps.metrics.housekeepingRemoved.inc({ kind: 'directory' });
      deps.logger.info({ path }, 'housekeeping removed an orphaned workspace directory');
    } catch (error) {
      deps.logger.warn({ path, err: errorMessage(error) }, 'housekeeping could not remove directory');
    }
  }
  const images = join(area, '.images');
  // No .images directory (quotas unused): no images to clean.
  for (const name of await readdir(images).catch(() => [] as string[])) {
    const id = name.replace(/\.img$/, '');
    const path = join(images, name);
    try {
      if (await hasState(deps, id)) continue;
      const info = await stat(path);
      if (now - info.mtimeMs < deps.orphanAgeMs) continue;
      if (await deps.hostOps.isMountPoint(join(area, id))) continue;
      await rm(path, { force: true });
      removed.push(`.images/${name}`);
      deps.metrics.housekeepingRemoved.inc({ kind: 'image' });
    } catch (error) {
      deps.logger.warn({ path, err: errorMessage(error) }, 'housekeeping could not remove image');
    }
  }
  for (const id of await deps.store.expiredTombstones(deps.tombstoneTtlMs, now)) {
    try {
      await deps.store.removeTombstone(id);
      deps.metrics.housekeepingRemoved.inc({ kind: 'tombstone' });
    } catch (error) {
      deps.logger.warn({ instanceId: id, err: errorMessage(error) }, 'housekeeping could not remove tombstone');
    }
  }
  return { removed };
}
