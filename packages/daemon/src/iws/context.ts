import type { PluginLogger } from '@workbay/api';
import type { NamespaceOps, WorkspaceCgroup } from '@workbay/nsinsider';
import type { FloodPenalty } from './flood-guard.js';

/** One workspace, as the in-workspace service sees it. The daemon's session supplies it. */
export interface IwsWorkspaceContext {
  readonly workspaceId: string;
  readonly instanceId?: string;
  /**
   * Host pid of the workspace's init process: the anchor for every pid a request names (those are pids in
   * the workspace's pid namespace). A function when the process can change or is not there yet (the daemon's
   * per-workspace server finds it by the workspace's host uid, see `workspace-process.ts`).
   */
  readonly initPid: number | (() => number | undefined | Promise<number | undefined>);
  /**
   * The workspace's cgroup, relative to the cgroup roots; without it the cgroup RPCs fail with FAILED_PRECONDITION.
   * A function when it is only known once the workspace's process runs.
   */
  readonly cgroupPath?: string | (() => string | undefined | Promise<string | undefined>);
  /**
   * The workspace's host uid: a pid a namespace operation acts on must run as it (the daemon's own helpers, root
   * processes that briefly sit in the workspace's pid namespace, never qualify). Unset: not checked.
   */
  readonly uid?: number;
}

/** A uid/gid range `[start, start + size)` on the host. */
export interface IdRange {
  readonly start: number;
  readonly size: number;
}

export interface IwsConfig {
  /** The host id that container root may map to (default 33333, one id). */
  readonly rootIdRange: IdRange;
  /** Host ids that other container ids may map to (default 100000 + 70000). */
  readonly userIdRanges: readonly IdRange[];
  /** IPv4 CIDR of the veth pair made by SetupPairVeths (default 10.0.5.0/30). */
  readonly vethCidr: string;
  /** The /dev that PrepareForUserNS populates, in the workspace's mount namespace (default /dev). */
  readonly devDir: string;
  /** Owner of the device nodes PrepareForUserNS creates (default 33333:33333). */
  readonly devOwner: { readonly uid: number; readonly gid: number };
  /** Owner given to the delegated `workspace/user` cgroup by EvacuateCGroup (default: left as is). */
  readonly cgroupDelegateTo?: { readonly uid: number; readonly gid: number };
  /** Apply the per-RPC rate limits (default true). */
  readonly rateLimits: boolean;
  /** How long WorkspaceInfo samples CPU usage to compute millicores (default 100 ms). */
  readonly cpuSampleMs: number;
  /**
   * Calls of one workspace running at once (default 4); more are refused with RESOURCE_EXHAUSTED. Most calls
   * cost a process on the node, so one workspace's flood must not stall the daemon or other workspaces.
   */
  readonly maxInFlight: number;
  /**
   * Serve the namespace operations (PrepareForUserNS, WriteIDMapping, Mount/UmountProc, Mount/UmountSysfs,
   * SetupPairVeths) at all (default false). They exist for nested containers inside workspaces and run the host's
   * tools as root in the workspace's namespaces; a node that does not need them should not offer them. Even on,
   * they act only on processes of the workspace's uid in its own mount namespace (never one the workspace made,
   * where it could plant the programs root would run).
   */
  readonly namespaceOps: boolean;
  /**
   * Connections open at once on one workspace's socket (default 64); one more is closed as soon as it is
   * accepted. Each costs the daemon a file descriptor, and all workspaces share the daemon's.
   */
  readonly maxConnections: number;
  /**
   * A connection without a running call for this long is closed (default 60 s), including one that never sends a
   * byte; a client's channel reconnects on its next call.
   */
  readonly connectionIdleMs: number;
  /**
   * Calls answered with an error (rate limits, the in-flight limit, bad requests), connections beyond
   * `maxConnections` and traffic beyond `penaltyBytesPerSecond` that one workspace may cause per `penaltyWindowMs`
   * (default 500 per 10 s, sustained 50 a second; an IDE polling a few times a second stays far below). One more
   * and the daemon stops serving the workspace's socket for a cooldown: each refusal still costs the daemon's one
   * event loop, so a workspace refused thousands of times a second slows every other workspace. 0: never.
   */
  readonly penaltyThreshold: number;
  /** The window of `penaltyThreshold` (default 10 s). */
  readonly penaltyWindowMs: number;
  /** The first cooldown (default 1 s); it doubles with every further penalty up to `penaltyMaxCooldownMs`. */
  readonly penaltyCooldownMs: number;
  /** The longest cooldown (default 60 s); each such period without a penalty forgives one doubling. */
  readonly penaltyMaxCooldownMs: number;
  /**
   * Bytes a second one workspace may send to its socket (default 64 KiB, averaged over a second); every 256 bytes
   * beyond count as an offence toward `penaltyThreshold`, so a burst is forgiven and a sustained flood is not.
   * Catches floods grpc-js answers itself, which the service never sees: unknown methods (~80 bytes a call),
   * malformed or oversized messages. A legitimate client sends a few hundred bytes a call, a few calls a second.
   * 0: not metered.
   */
  readonly penaltyBytesPerSecond: number;
}

export const defaultIwsConfig: IwsConfig = Object.freeze({
  rootIdRange: { start: 33333, size: 1 },
  userIdRanges: [{ start: 100000, size: 70000 }],
  vethCidr: '10.0.5.0/30',
  devDir: '/dev',
  devOwner: { uid: 33333, gid: 33333 },
  rateLimits: true,
  cpuSampleMs: 100,
  maxInFlight: 4,
  namespaceOps: false,
  maxConnections: 64,
  connectionIdleMs: 60_000,
  penaltyThreshold: 500,
  penaltyWindowMs: 10_000,
  penaltyCooldownMs: 1_000,
  penaltyMaxCooldownMs: 60_000,
  penaltyBytesPerSecond: 64 * 1024,
});

/** Opens cgroups by path; `CgroupController` from @workbay/nsinsider is the real one. */
export interface CgroupAccess {
  cgroup(path: string): WorkspaceCgroup & {
    child(name: string): WorkspaceCgroup;
  };
}

/** What {@link createInWorkspaceService} and {@link InWorkspaceOperations} need. */
export interface InWorkspaceServiceDeps {
  /** Namespace work; the daemon passes `createNsinsiderOps()`. */
  readonly ops: NamespaceOps;
  readonly workspace: IwsWorkspaceContext;
  /** Needed for EvacuateCGroup, PrepareForUserNS's cgroup step and WorkspaceInfo when `cgroupPath` is set. */
  readonly cgroups?: CgroupAccess;
  readonly config?: Partial<IwsConfig>;
  readonly logger?: PluginLogger;
  /** Deletes the workspace content; called by WipingTeardown with do_wipe. */
  readonly wipeContent?: () => Promise<void>;
  /** Whether the kernel can mount NFS (default: nfs or nfs4 listed in /proc/filesystems). */
  readonly nfsSupported?: () => Promise<boolean>;
  /** Machine totals used as the limit when the cgroup has none (default: os). */
  readonly machine?: { readonly cpus: number; readonly memoryBytes: number };
  /** Clock for the rate limits and the flood penalty (default Date.now). */
  readonly now?: () => number;
  /** Called when the workspace is penalised for flooding its socket (see `FloodGuard`), e.g. to count it. */
  readonly onFloodPenalty?: (penalty: FloodPenalty) => void;
}
