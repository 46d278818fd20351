import type { OpArgs, OpName } from './contract.js';
import type { ToolRunner } from './inside-tools.js';
import { makeShared, mknod, mountProc, mountSysfs, prepareDev, unmount } from './inside-mounts.js';
import {
  connectionLimitStats,
  disableIpv6,
  dumpNetworkInfo,
  enableIpForward,
  removeConnectionLimit,
  setupConnectionLimit,
  setupPairVeths,
  setupPeerVeth,
} from './inside-network.js';

/**
 * The operations themselves, as sequences of the system's own tools (mount, umount, mkdir, mknod, chown, stat,
 * install, tee, ip, nft), each run through a {@link ToolRunner} that puts it into the target's namespaces: the
 * library runs every tool under `nsenter` (no Node start-up per operation), the CLI runs them in the namespaces it
 * was itself started in. Nothing here touches the file system in-process: a path is only ever resolved by a tool
 * inside the target's mount namespace, never through the caller's view of it. Arguments are argv arrays (and
 * stdin for `ip -batch`/`nft -f`, built only from validated values), never shell strings. Failures become
 * {@link OpFailure} with the tool's stderr and an errno-like code.
 * @internal
 */

type Handlers = { [O in OpName]: (args: OpArgs<O>, tools: ToolRunner) => Promise<unknown> };

/** @internal */
export const insideHandlers: Handlers = {
  'mount-proc': mountProc,
  'mount-sysfs': mountSysfs,
  unmount,
  'make-shared': makeShared,
  mknod,
  'prepare-dev': prepareDev,
  'setup-pair-veths': setupPairVeths,
  'setup-peer-veth': setupPeerVeth,
  'enable-ip-forward': enableIpForward,
  'disable-ipv6': disableIpv6,
  'setup-connection-limit': setupConnectionLimit,
  'remove-connection-limit': removeConnectionLimit,
  'connection-limit-stats': connectionLimitStats,
  'dump-network-info': dumpNetworkInfo,
};
