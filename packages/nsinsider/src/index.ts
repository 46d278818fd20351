/**
 * @workbay/nsinsider: operations inside Linux namespaces, as a CLI (`nsinsider`) and a typed library.
 *
 * The daemon depends on the {@link NamespaceOps} interface; {@link createNsinsiderOps} is the real
 * implementation, which runs the system's tools (mount, ip, nft, …) inside a process's namespaces through
 * util-linux nsenter, without a Node start-up per operation:
 *
 * ```ts
 * import { createNsinsiderOps, CgroupController } from '@workbay/nsinsider';
 *
 * const ops = createNsinsiderOps();
 * await ops.mountProc({ pid: workspacePid, target: '/proc' });
 * await ops.setupPairVeths({ targetPid: workspacePid, cidr: '10.0.5.0/30' });
 *
 * const cgroups = await CgroupController.detect();
 * const cg = cgroups.cgroup('workbay/ws-1');
 * await cg.create();
 * await cg.setCpuLimit({ quotaUs: 200_000, periodUs: 100_000 }); // 2 CPUs
 * ```
 *
 * Requires root (CAP_SYS_ADMIN, CAP_NET_ADMIN, CAP_MKNOD).
 * @module
 */
export type {
  NamespaceKind,
  NamespaceOps,
  DeviceNodeResult,
  PrepareDevResult,
  VethPairResult,
  ConnectionLimitStats,
  NetworkInfo,
  IdMapping,
  MountProcRequest,
  MountSysfsRequest,
  UnmountRequest,
  MakeDeviceNodeRequest,
  PrepareDevRequest,
  SetupPairVethsRequest,
  ConnectionLimitRequest,
  PidRequest,
} from './types.js';
export type { NsinsiderOpsOptions } from './nsinsider-ops.js';
export { createNsinsiderOps } from './nsinsider-ops.js';
export { systemToolEnv, systemToolPath } from './host-tool.js';
export type { CommandOptions, CommandResult, CommandSpawner } from './exec.js';
export { routeCommands, spawnCommand } from './exec.js';
export type { NsinsiderFailureKind, NsinsiderErrorOptions } from './errors.js';
export {
  NsinsiderError,
  NsinsiderValidationError,
  CgroupError,
  isNsinsiderError,
  isNsinsiderValidationError,
  isCgroupError,
} from './errors.js';
export type { OpName, OpInput, OpArgs, CliResult, Ipv4Cidr } from './contract.js';
export { opNames, parseOpArgs, parseIpv4Cidr, EXIT_FAILED, EXIT_USAGE } from './contract.js';
export { runCli } from './cli.js';
export { nodeWideProcDirs, nodeWideProcFiles, nodeWideSysDirs } from './node-masks.js';
export { resolveHostPid, namespaceId, writeIdMapping, validateIdMappings, MAX_ID_MAP_LINES } from './proc.js';
export type { CgroupVersion, WorkspaceCgroup, CgroupControllerOptions } from './cgroup.js';
export type { V1Controller, CgroupLayout } from './cgroup-layout.js';
export type { CpuLimit, CgroupLimits, CgroupUsage, IoDeviceLimit } from './cgroup-resources.js';
export { CgroupController, Cgroup } from './cgroup.js';
export { detectCgroupLayout } from './cgroup-layout.js';
export {
  CONNECTION_LIMIT_TABLE,
  CONNECTION_LIMIT_CHAIN,
  CONNECTION_DROP_COUNTER,
  NAT_TABLE,
} from './inside-network.js';
export { ownCgroupPath, mountCgroupsIfMissing, oomKillCount } from './cgroup-setup.js';
export type { HostLink, ClaimVethRequest, AttachVethRequest, WorkspaceVethRequest } from './workspace-network.js';
export type { WorkspaceEgress, WorkspaceFirewallRequest } from './workspace-firewall.js';
export {
  NETNS_DIR,
  createNetns,
  deleteNetns,
  listNetns,
  countLinks,
  listLinks,
  deleteLink,
  claimVethPair,
  attachVethToNetns,
  createWorkspaceVeth,
} from './workspace-network.js';
export type { SpecialNetwork, SpecialNetworkKind } from './special-networks.js';
export {
  DEFAULT_MAX_WORKSPACE_LINKS,
  MIN_FLOWS_PER_WORKSPACE,
  WORKSPACE_FLOW_SHARE,
  sharedFlowLimit,
  splitFlowBudget,
  WORKSPACE_CLOSED_FLOW_SECONDS,
} from './flow-share.js';
export type { FlowBudget } from './flow-share.js';
export { nonPublicNetworks, specialPurposeNetworks } from './special-networks.js';
export {
  DEFAULT_MAX_FLOWS_PER_WORKSPACE,
  WORKSPACE_FIREWALL_TABLE,
  workspaceFirewallRuleset,
  ensureWorkspaceFirewall,
  readWorkspaceFirewall,
  removeWorkspaceFirewall,
} from './workspace-firewall.js';
export {
  DEFAULT_MAX_CONNECTIONS_PER_WORKSPACE,
  WORKSPACE_LIMITS_TABLE,
  limitWorkspaceConnections,
  abortWorkspaceConnections,
  sharedConnectionLimit,
  readMaxOrphans,
  WORKSPACE_ORPHAN_SHARE,
} from './workspace-connections.js';
export type { SyscallFilter } from './syscall-filter.js';
export {
  syscallFilterArgument,
  syscallFilterLoader,
  syscallFilterProgram,
  syscallFilterSupported,
} from './syscall-filter.js';
