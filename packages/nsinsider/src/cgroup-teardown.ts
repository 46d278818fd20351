import { rmdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Cgroup } from './cgroup.js';
import type { CgroupLayout } from './cgroup-layout.js';
import { cgroupOp } from './cgroup-layout.js';
import { CgroupError, errnoCode } from './errors.js';

/**
 * Tearing a cgroup tree down: killing every process in it (cgroup.kill where v2 has it, else freeze and SIGKILL)
 * and waiting for them to go, then removing the directories deepest first.
 */

/** Kills every process in `cg` and its children and waits, up to `timeoutMs`, until they are gone. */
export async function killCgroupTree(cg: Cgroup, layout: CgroupLayout, timeoutMs: number): Promise<void> {
  const all = [cg, ...(await cg.descendants())];
  // A cgroup removed meanwhile (ENOENT/ENODEV) or without a pids hierarchy (ENOTSUP) has no processes to kill;
  // any other failure to list them fails the kill rather than count a possibly live process as gone.
  const listAll = async (): Promise<number[]> =>
    (
      await Promise.all(
        all.map((c) =>
          c.processes().catch((error: unknown) => {
            const code = (error as { code?: unknown }).code;
            if (code === 'ENOENT' || code === 'ENODEV' || code === 'ENOTSUP') return [] as number[];
            throw error;
          }),
        ),
      )
    ).flat();
  const deadline = Date.now() + timeoutMs;
  if (layout.version === 'v2' && (await fileExists(join(cg.dir(), 'cgroup.kill')))) {
    await cgroupOp('kill', cg.path, () => writeFile(join(cg.dir(), 'cgroup.kill'), '1'));
  } else {
    await freeze(cg, layout, true);
    try {
      for (const pid of await listAll()) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // Already gone.
        }
      }
    } finally {
      await freeze(cg, layout, false);
    }
  }
  for (;;) {
    const left = await listAll();
    if (left.length === 0) return;
    if (Date.now() > deadline) {
      throw new CgroupError(`processes ${left.join(', ')} survived the kill`, {
        op: 'kill',
        path: cg.path,
        code: 'EBUSY',
      });
    }
    for (const pid of left) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // Already gone.
      }
    }
    await sleep(20);
  }
}

async function freeze(cg: Cgroup, layout: CgroupLayout, frozen: boolean): Promise<void> {
  if (layout.version === 'v2') {
    const f = join(cg.dir(), 'cgroup.freeze');
    if (await fileExists(f)) await cgroupOp('freeze', cg.path, () => writeFile(f, frozen ? '1' : '0'));
    return;
  }
  if (!layout.roots.freezer) return;
  const f = join(cg.dir('freezer'), 'freezer.state');
  if (await fileExists(f)) await cgroupOp('freeze', cg.path, () => writeFile(f, frozen ? 'FROZEN' : 'THAWED'));
}

/** Removes `top` and its children; they must be empty (see {@link killCgroupTree}). Absent is fine. */
export async function removeCgroupTree(top: Cgroup): Promise<void> {
  const order = [...(await top.descendants()).reverse(), top];
  for (const cg of order) {
    for (const d of cg.dirs()) {
      for (let attempt = 0; ; attempt++) {
        try {
          await rmdir(d);
          break;
        } catch (e) {
          const code = errnoCode(e);
          if (code === 'ENOENT') break;
          // Exiting tasks may keep a cgroup busy for a moment.
          if (code === 'EBUSY' && attempt < 50) {
            await sleep(20);
            continue;
          }
          throw new CgroupError(`cannot remove ${d}: ${(e as Error).message}`, {
            op: 'remove',
            path: cg.path,
            code,
            cause: e,
          });
        }
      }
    }
  }
}

async function fileExists(p: string): Promise<boolean> {
  try {
    await stat(p);
    return true;
  } catch {
    // A probe: any failure means "not there" to the callers (optional cgroup files).
    return false;
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
