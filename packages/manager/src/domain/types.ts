/**
 * The manager's own model of a workspace. Proto types never appear here: the gRPC edge converts.
 *
 * A {@link WorkspaceRecord} is immutable once published: every change produces a new object (see
 * `updateRecord` in `./status.js`), so a record handed to a subscriber never changes under it.
 *
 * @module
 */

import type {
  AdmissionLevel,
  GitStatusSummary,
  PortProtocol,
  PortVisibility,
  StopPolicy,
  TimeoutType,
  WorkspaceFeatureFlag,
  WorkspacePhase,
  WorkspaceType as ApiWorkspaceType,
} from '@workbay/api';

export type { AdmissionLevel, PortProtocol, PortVisibility, StopPolicy, WorkspacePhase };

/** The kinds of workspace this manager runs (`probe` is rejected at StartWorkspace). */
export type WorkspaceType = Exclude<ApiWorkspaceType, 'probe'>;

/** Which timeout SetTimeout changes. */
export type TimeoutKind = TimeoutType;

/** A feature flag a workspace was started with (`noop` is dropped). */
export type FeatureFlag = Exclude<WorkspaceFeatureFlag, 'noop'>;

/** Why a workspace stopped; the `reason` label of the stops counter. */
export type StopReason =
  'regular-stop' | 'aborted' | 'timeout' | 'tab-closed' | 'failed' | 'start-failure' | 'completed';

export interface PortSpec {
  readonly port: number;
  readonly visibility: PortVisibility;
  readonly protocol: PortProtocol;
  /** Public URL of the port through the manager's proxy. */
  readonly url: string;
}

export interface EnvVar {
  readonly name: string;
  readonly value: string;
}

export interface IdeImage {
  readonly webRef: string;
  readonly supervisorRef: string;
  readonly desktopRef: string;
  readonly desktopPluginRef: string;
}

export interface GitIdentity {
  readonly username: string;
  readonly email: string;
}

/** The repository state the daemon reported on disposal (shared with the daemon through `@workbay/api`). */
export type GitStatusInfo = GitStatusSummary;

export interface InitializerMetricInfo {
  readonly durationMs: number;
  readonly sizeBytes: number;
}

export type InitializerMetricKind = 'git' | 'fileDownload' | 'snapshot' | 'backup' | 'prebuild' | 'composite';

export type InitializerMetricsInfo = Readonly<Partial<Record<InitializerMetricKind, InitializerMetricInfo>>>;

/** The spec a workspace runs with, as requested (validated) and later changed by ControlPort/SetTimeout/… */
export interface WorkspaceSpec {
  readonly image: string;
  readonly ideImage: IdeImage;
  readonly ideImageLayers: readonly string[];
  /**
   * The content initializer, encoded as the `contentservice.WorkspaceInitializer` message in base64. Opaque
   * to the core: only the daemon adapter decodes it.
   */
  readonly initializer: string;
  /** Which initializer it is (`git`, `snapshot`, …), for logs and status. */
  readonly initializerKind: string;
  readonly ports: readonly PortSpec[];
  readonly envvars: readonly EnvVar[];
  readonly sysEnvvars: readonly EnvVar[];
  readonly workspaceLocation: string;
  readonly git?: GitIdentity;
  /** Inactivity timeout; undefined uses the configured default. */
  readonly timeoutMs?: number;
  /** Timeout after the IDE was closed; undefined uses the default, 0 disables the closed rule. */
  readonly closedTimeoutMs?: number;
  readonly maximumLifetimeMs?: number;
  readonly admission: AdmissionLevel;
  readonly className: string;
  readonly sshPublicKeys: readonly string[];
  readonly featureFlags: readonly FeatureFlag[];
}

/** The wire-visible conditions (`wsman.WorkspaceConditions`). */
export interface WorkspaceConditions {
  /** Why the workspace failed; the first failure wins. */
  readonly failed: string;
  /** Which timeout rule fired. */
  readonly timeout: string;
  /** Last snapshot taken (`<object>@<bucket>`). */
  readonly snapshot: string;
  readonly headlessTaskFailed: string;
  readonly finalBackupComplete: boolean;
  readonly deployed: boolean;
  readonly stoppedByRequest: boolean;
  readonly aborted: boolean;
  /** Epoch ms of the first MarkActive. */
  readonly firstUserActivity?: number;
}

/** Bookkeeping the lifecycle needs that is not on the wire. Persisted with the record. */
export interface WorkspaceProgress {
  /** The daemon reported the content as initialised (and it has not been disposed since). */
  readonly contentReady: boolean;
  /** InitWorkspace was sent at least once, so the daemon may hold content to clean up. */
  readonly initRequested: boolean;
  /** The workspace passed its readiness check once (sticky). */
  readonly everReady: boolean;
  /** The IDE was closed (MarkActive closed=true); the closed timeout applies. */
  readonly closed: boolean;
  /** The content was disposed by the daemon (final step of stopping). */
  readonly disposed: boolean;
  readonly contentDir?: string;
  /** Host port of the workspace's IDE (the first runtime port). */
  readonly idePort: number;
  /** Host address the workspace's ports are reachable on. */
  readonly runtimeHost?: string;
  readonly nodeName?: string;
  /** The runtime's name for the instance (the pod's name on Kubernetes). */
  readonly podName?: string;
  /** Address of the node the instance runs on (the pod's hostIP on Kubernetes). */
  readonly nodeIp?: string;
  /** Workspace port → host port, when the runtime maps ports (absent: the same number). */
  readonly portMap?: Readonly<Record<string, number>>;
  readonly stopPolicy?: StopPolicy;
  readonly stopReason?: StopReason;
  /** Stopping took too long and the manager forced the workspace to STOPPED. */
  readonly stopForced?: boolean;
}

export type PhaseTimes = Readonly<Partial<Record<WorkspacePhase, number>>>;

export interface WorkspaceRecord {
  /** Instance id: unique among the workspaces of this manager. */
  readonly id: string;
  /** The caller's workspace id (stable across restarts of the same workspace). */
  readonly metaId: string;
  readonly owner: string;
  readonly annotations: Readonly<Record<string, string>>;
  readonly team?: string;
  readonly project?: string;
  readonly type: WorkspaceType;
  readonly servicePrefix: string;
  readonly url: string;
  readonly ownerToken: string;
  readonly spec: WorkspaceSpec;
  readonly phase: WorkspacePhase;
  readonly conditions: WorkspaceConditions;
  readonly message: string;
  readonly repo?: GitStatusInfo;
  readonly initializerMetrics?: InitializerMetricsInfo;
  /** Strictly increasing across every published change of every workspace, also across restarts. */
  readonly statusVersion: number;
  /** Epoch ms of StartWorkspace. */
  readonly createdAt: number;
  /** Epoch ms of the last MarkActive; undefined before the first. */
  readonly lastActivity?: number;
  /** Epoch ms at which each phase was entered. */
  readonly phaseTimes: PhaseTimes;
  readonly progress: WorkspaceProgress;
}

/** Selects workspaces; every field that is set must match. */
export interface MetadataFilter {
  readonly owner?: string;
  readonly metaId?: string;
  readonly annotations?: Readonly<Record<string, string>>;
}

/** A workspace class from the config, as DescribeCluster reports it. */
export interface WorkspaceClassInfo {
  readonly id: string;
  readonly displayName: string;
  readonly description: string;
  readonly creditsPerMinute: number;
}

/** What StartWorkspace asks for, after the edge decoded the request (not yet validated). */
export interface StartWorkspaceInput {
  readonly id: string;
  readonly servicePrefix: string;
  readonly metadata?: {
    readonly owner: string;
    readonly metaId: string;
    readonly annotations: Readonly<Record<string, string>>;
    readonly team?: string;
    readonly project?: string;
  };
  readonly type: WorkspaceType;
  readonly spec?: {
    readonly image: string;
    readonly ideImage: IdeImage;
    readonly ideImageLayers: readonly string[];
    /** Base64 of the encoded initializer, or '' when the request had none. */
    readonly initializer: string;
    readonly initializerKind: string;
    readonly ports: readonly {
      readonly port: number;
      readonly visibility: PortVisibility;
      readonly protocol: PortProtocol;
    }[];
    readonly envvars: readonly (EnvVar & { readonly secret?: { secretName: string; key: string } })[];
    readonly sysEnvvars: readonly (EnvVar & { readonly secret?: { secretName: string; key: string } })[];
    readonly workspaceLocation: string;
    readonly git?: GitIdentity;
    readonly timeout: string;
    readonly closedTimeout: string;
    readonly maximumLifetime: string;
    readonly admission: AdmissionLevel;
    readonly className: string;
    readonly sshPublicKeys: readonly string[];
    readonly featureFlags: readonly FeatureFlag[];
  };
}

export interface StartWorkspaceResult {
  readonly url: string;
  readonly ownerToken: string;
}

export interface DescribeResult {
  readonly status: WorkspaceRecord;
  /** RFC 3339 with nanoseconds; empty when there was no activity yet. */
  readonly lastActivity: string;
}
