import { readFile, writeFile } from 'node:fs/promises';
import type { PluginLogger } from '@workbay/api';

/**
 * Node-wide kernel counts that one workspace could fill for everyone, raised where the kernel charges what stands
 * behind them to the memory cgroup of the process that makes it, so that each workspace's memory limit becomes the
 * bound instead of a count shared by the whole node (red team, round 4):
 * - open files (`fs.file-max`): 2,466,290 eventfds in 8 s, 1.5 GB of a 4 GiB limit, and a neighbour could no longer
 *   open a file nor a new workspace load libc. Each file is charged (about 600 bytes). systemd sets the same value
 *   on every machine it boots, for the same reason.
 * - AIO events (`fs.aio-max-nr`): 65,536 reserved by one workspace, and io_setup failed for its neighbours (a
 *   database with native AIO does not start) and for root. Ring pages are charged: 16,000,000 events took 986 MB of
 *   the cgroup that reserved them.
 * - pseudo-terminals (`kernel.pty.max`): each workspace has a devpts instance of its own with at most
 *   `ptysPerWorkspace`, and instances share `pty.max` minus the host's reserve; raised so that they do not run out
 *   before the workspaces' own limits do.
 * Only ever raised, never lowered (an operator's higher value stays). Config `nodeTunables: false` leaves the node
 * as it is.
 */
export const nodeTunables: readonly { readonly file: string; readonly value: bigint }[] = [
  { file: '/proc/sys/fs/file-max', value: 9_223_372_036_854_775_807n },
  { file: '/proc/sys/fs/aio-max-nr', value: 1n << 40n },
  { file: '/proc/sys/kernel/pty/max', value: 65_536n },
];

/** Raises each of {@link nodeTunables} that is lower; a value that cannot be read or written is a warning. */
export async function raiseNodeTunables(logger: PluginLogger): Promise<void> {
  for (const { file, value } of nodeTunables) {
    try {
      const current = BigInt((await readFile(file, 'utf8')).trim());
      if (current >= value) continue;
      await writeFile(file, `${value}\n`);
      logger.info({ file, from: String(current), to: String(value) }, 'raised a node-wide kernel limit');
    } catch (error) {
      // Deliberate: each workspace's own limits still hold; the node stays as exposed as it was, said loudly.
      logger.warn({ file, err: error }, 'could not raise a node-wide kernel limit that one workspace could fill');
    }
  }
}
