/**
 * The domain surface of @workbay/nsinsider: what the daemon sees. Pids are host pids (as seen by the
 * caller's /proc) unless a field says otherwise.
 */

/** A namespace that an operation can enter. */
export type NamespaceKind = 'mount' | 'net' | 'pid' | 'uts' | 'ipc' | 'user';

export interface DeviceNodeResult {
  path: string;
  created: boolean;
}

export interface PrepareDevResult {
  /** Nodes and files that were created (and chowned). */
  created: string[];
  /** Device nodes that already existed with the right numbers and were left as they were. */
  existing: string[];
}

export interface VethPairResult {
  hostIfName: string;
  peerIfName: string;
  /** Address of the outer (host) end; the peer's default gateway. */
  hostAddress: string;
  /** Address of the inner (peer) end. */
  peerAddress: string;
  prefixLength: number;
}

export interface ConnectionLimitStats {
  /** New connections over the limit (dropped when enforcing, only counted otherwise). */
  packets: number;
  bytes: number;
}

export interface NetworkInfo {
  links: Array<{ name: string; up: boolean; state: string; mtu: number }>;
  addresses: Array<{ ifName: string; family: 'ipv4' | 'ipv6'; address: string; prefixLength: number }>;
  routes: Array<{ destination: string; gateway?: string; device?: string }>;
}

/** One line of a uid_map/gid_map. */
export interface IdMapping {
  containerId: number;
  hostId: number;
  size: number;
}

export interface MountProcRequest {
  /** A process whose mount and pid namespaces receive the proc mount. */
  pid: number;
  /** Mount point, absolute in the target's mount namespace (created when missing, unless `createTarget` is false). */
  target: string;
  /** Mask sensitive files and make kernel knobs read-only, as container runtimes do (default true). */
  mask?: boolean;
  /**
   * Create a missing mount point (default true). Off for a target a less trusted party names: `mkdir -p` runs as
   * root and follows the links on the way.
   */
  createTarget?: boolean;
}

export interface MountSysfsRequest {
  /** A process whose mount and network namespaces receive the sysfs mount. */
  pid: number;
  target: string;
  /** Default true. */
  readOnly?: boolean;
  /** As {@link MountProcRequest.createTarget}. */
  createTarget?: boolean;
}

export interface UnmountRequest {
  pid: number;
  target: string;
  /** Detach now, clean up when no longer busy (umount -l). */
  lazy?: boolean;
  /** Also unmount everything below the target (default true). */
  recursive?: boolean;
}

export interface MakeDeviceNodeRequest {
  pid: number;
  path: string;
  type: 'char' | 'block';
  major: number;
  minor: number;
  /** Permission bits; default 0o666. */
  mode?: number;
  uid?: number;
  gid?: number;
}

export interface PrepareDevRequest {
  pid: number;
  /** The /dev directory to populate, in the target's mount namespace (default `/dev`). */
  devDir?: string;
  /** Owner of the created nodes. */
  uid: number;
  gid: number;
}

export interface SetupPairVethsRequest {
  /** Process whose network namespace holds the outer end; omitted = the caller's own namespace. */
  outerPid?: number;
  /** Process whose network namespace receives the peer end. */
  targetPid: number;
  /** IPv4 CIDR for the pair: outer end gets the first address, the peer the second. */
  cidr: string;
  hostIfName?: string;
  peerIfName?: string;
  /** Masquerade traffic from the CIDR leaving the outer namespace (and enable forwarding there). */
  masquerade?: boolean;
}

export interface ConnectionLimitRequest {
  /** A process in the network namespace to limit. */
  pid: number;
  /** New outgoing connections per minute before the limit applies. */
  limitPerMinute: number;
  /** Burst allowance, in connections. */
  bucketSize: number;
  /** Drop connections over the limit (default true); false only counts them. */
  enforce?: boolean;
}

export interface PidRequest {
  pid: number;
}

/**
 * Operations inside Linux namespaces. The daemon depends on this interface only; the real implementation
 * ({@link createNsinsiderOps}) runs the system's tools through nsenter, and tests may pass a fake.
 * Every method validates its arguments first and rejects with `NsinsiderValidationError` naming the
 * field; failures reject with `NsinsiderError`.
 */
export interface NamespaceOps {
  /** Mounts proc for the target's pid namespace at `target` in its mount namespace. */
  mountProc(req: MountProcRequest): Promise<void>;
  /** Mounts sysfs for the target's network namespace at `target` in its mount namespace. */
  mountSysfs(req: MountSysfsRequest): Promise<void>;
  /** Unmounts `target` in the target's mount namespace. */
  unmount(req: UnmountRequest): Promise<void>;
  /** Makes the mount at `target` shared (mount --make-shared). */
  makeShared(req: { pid: number; target: string }): Promise<void>;
  /** Creates a device node (fails with code EEXIST when the path exists). */
  makeDeviceNode(req: MakeDeviceNodeRequest): Promise<DeviceNodeResult>;
  /** Creates /dev/net/tun and /dev/fuse (0666, owned by uid:gid) and an empty /dev/kmsg. */
  prepareDev(req: PrepareDevRequest): Promise<PrepareDevResult>;
  /** Creates a veth pair, moves the peer into the target's network namespace and configures both ends. */
  setupPairVeths(req: SetupPairVethsRequest): Promise<VethPairResult>;
  /** Turns IPv4 forwarding on or off in the target's network namespace. */
  setIpForwarding(req: { pid: number; enabled: boolean }): Promise<void>;
  /** Disables IPv6 in the target's network namespace (a no-op without kernel IPv6). */
  disableIpv6(req: PidRequest): Promise<void>;
  /** Installs (or replaces) the new-connection rate limit in the target's network namespace. */
  setupConnectionLimit(req: ConnectionLimitRequest): Promise<void>;
  /** Removes the connection limit; resolves to false when there was none. */
  removeConnectionLimit(req: PidRequest): Promise<boolean>;
  /** Counter of connections over the limit; undefined when no limit is installed. */
  connectionLimitStats(req: PidRequest): Promise<ConnectionLimitStats | undefined>;
  /** Links, addresses and routes of the target's network namespace. */
  networkInfo(req: PidRequest): Promise<NetworkInfo>;
  /**
   * Translates a pid as seen inside `anchorPid`'s pid namespace to the host pid. Only the anchor's own
   * processes (same pid namespace, or descendants of the anchor) match, so a workspace cannot name
   * another workspace's processes.
   */
  resolveHostPid(req: { nsPid: number; anchorPid: number }): Promise<number>;
  /** Identity of one of the process's namespaces (e.g. `net:[4026532180]`), to tell whether two share one. */
  namespaceId(req: { pid: number; kind: NamespaceKind }): Promise<string>;
  /** Writes /proc/<pid>/uid_map (or gid_map); the kernel accepts this once per process. */
  writeIdMapping(req: { pid: number; kind: 'uid' | 'gid'; mappings: readonly IdMapping[] }): Promise<void>;
}
