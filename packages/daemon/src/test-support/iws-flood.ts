/** TEST ONLY: what the iws flood specs share: a host of workspaces' sockets, socket probes, polling. */
import { mkdir } from 'node:fs/promises';
import { connect } from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { NamespaceOps } from '@workbay/nsinsider';
import { IwsHost } from '../iws/host.js';

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

type HostOptions = ConstructorParameters<typeof IwsHost>[0];

/**
 * An IwsHost in `scratch` with a socket open for each of `ids` (content `scratch/content/<id>`, workspace `ws-<id>`),
 * penalising floods fast: 40 offences in 10 s, then a cooldown of 3 s doubling to 6 s (long enough for the checks
 * during it on a slow machine; the specs wait for its end). `config` adds to or overrides that.
 */
export async function startFloodHost(
  scratch: string,
  ids: readonly string[],
  options: Pick<HostOptions, 'metrics'> & Partial<Pick<HostOptions, 'logger'>> & { config?: HostOptions['config'] },
): Promise<IwsHost> {
  for (const id of ids) await mkdir(join(scratch, 'content', id), { recursive: true });
  const host = new IwsHost({
    workingArea: join(scratch, 'wa'),
    ops: {} as NamespaceOps,
    cgroups: idleCgroups,
    processes: () => ({ initPid: async () => process.pid, cgroupPath: async () => 'ws' }),
    config: {
      cpuSampleMs: 1,
      penaltyThreshold: 40,
      penaltyWindowMs: 10_000,
      penaltyCooldownMs: 3000,
      penaltyMaxCooldownMs: 6000,
      ...options.config,
    },
    ...(options.logger ? { logger: options.logger } : {}),
    metrics: options.metrics,
    closeGraceMs: 0,
  });
  for (const id of ids) {
    await host.open({ instanceId: id, workspaceId: `ws-${id}`, contentLocation: join(scratch, 'content', id) });
  }
  return host;
}
