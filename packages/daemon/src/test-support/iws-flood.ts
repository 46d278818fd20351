/** TEST ONLY: what the iws flood specs share: a cgroup source that reads nothing, socket probes, polling. */
import { connect } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import type { IwsHost } from '../iws/host.js';

/** Cgroups of a workspace that uses nothing and has a 1 GiB memory limit. */
export const idleCgroups = {
  cgroup: () => ({
    usage: async () => ({ cpuUsageNs: 0, memoryWorkingSetBytes: 1 }),
    limits: async () => ({ memoryBytes: 1 << 30 }),
    child: () => undefined,
  }),
} as unknown as ConstructorParameters<typeof IwsHost>[0]['cgroups'];

/** Whether a plain connect to the unix socket at `path` is accepted (true), else its error code. */
export function connects(path: string): Promise<boolean | string> {
  return new Promise((resolve) => {
    const socket = connect(path);
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', (error: NodeJS.ErrnoException) => resolve(error.code ?? 'error'));
  });
}

/** Polls `check` every 50 ms until it holds (true) or `ms` pass (false). */
export async function until(check: () => Promise<boolean>, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > end) return false;
    await sleep(50);
  }
  return true;
}
