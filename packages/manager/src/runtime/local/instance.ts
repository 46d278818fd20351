import { rmdir } from 'node:fs/promises';
import { InvalidArgumentError } from '@workbay/api';
import type { PluginLogger, RuntimeStatus } from '@workbay/api';
import { oomKillCount } from '@workbay/nsinsider';
import type { Cgroup } from '@workbay/nsinsider';
import type { LocalIsolation } from './isolation.js';
import type { SpawnedWrapper } from './spawner.js';
import { readProcStat } from './proc.js';
import type { InstanceRecord } from './store.js';

/** What the local runtime keeps per instance in memory, beside its record on disk. */
export interface Instance {
  record: InstanceRecord;
  status: RuntimeStatus;
  /** Set while the wrapper is our own child; adopted instances are polled instead. */
  child?: SpawnedWrapper;
  childExit?: { code: number | null; signal: NodeJS.Signals | null };
  readonly readyAbort: AbortController;
  pollTimer?: NodeJS.Timeout;
  finalizing?: Promise<void>;
  readonly exited: Promise<void>;
  markExited: () => void;
  killTimer?: NodeJS.Timeout;
  killDeadline?: number;
  killed?: boolean;
}

const instanceIdPattern = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

/** Instance ids name files, cgroups and network namespaces: a conservative alphabet, INVALID_ARGUMENT otherwise. */
export function assertInstanceId(id: string): void {
  if (!instanceIdPattern.test(id)) {
    throw new InvalidArgumentError(
      'instanceId',
      `'${id.slice(0, 64)}' may only contain letters, digits, '.', '_' and '-'`,
    );
  }
}

export function newInstance(record: InstanceRecord, status: RuntimeStatus): Instance {
  let markExited!: () => void;
  const exited = new Promise<void>((resolve) => (markExited = resolve));
  return { record, status, readyAbort: new AbortController(), exited, markExited };
}

/**
 * The process group may be signalled when its leader is still the recorded process, or when no process has
 * that pid any more (a group with that id can then only hold our leftovers, since the kernel does not reuse the
 * id of a live group). A different process with the pid means the pid was reused: the group is not ours.
 */
export async function groupIsOurs(r: InstanceRecord): Promise<boolean> {
  const leader = await readProcStat(r.pgid);
  if (!leader) return true;
  return r.startTime !== undefined && leader.startTime === r.startTime;
}

/** The recorded cgroup as a handle, when this runtime manages cgroups and the record has its path. */
export function cgroupOf(r: InstanceRecord, isolation: LocalIsolation): Cgroup | undefined {
  return r.cgroup?.path && isolation.cgroups ? isolation.cgroups.cgroup(r.cgroup.path) : undefined;
}

/** Kills what is left in the cgroup and removes it; returns how often the OOM killer struck in it. */
export async function removeCgroup(
  r: InstanceRecord,
  isolation: LocalIsolation,
  logger: PluginLogger,
): Promise<number> {
  if (!r.cgroup) return 0;
  const cg = cgroupOf(r, isolation);
  if (!cg) {
    // Written by an older runtime or with cgroups off now: the directories are all there is to go by. One that
    // cannot go (still busy, already gone) is logged, not fatal: the workspace's processes are gone either way.
    for (const dir of r.cgroup.dirs) {
      await rmdir(dir).catch((error: NodeJS.ErrnoException) => {
        if (error.code !== 'ENOENT') logger.warn({ instanceId: r.instanceId, dir, error: error.code }, 'cgroup left');
      });
    }
    return 0;
  }
  const oomKills = await oomKillCount(cg);
  try {
    await cg.kill();
    await cg.remove();
  } catch (error) {
    // Deliberate: a cgroup that is still busy stays for the next start's cleanup; the verdict does not depend on it.
    logger.warn({ instanceId: r.instanceId, error: String(error) }, 'cgroup still busy; left in place');
  }
  return oomKills;
}
