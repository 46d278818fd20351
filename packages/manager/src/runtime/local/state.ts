import type { RuntimeStatus, RuntimeWorkspaceSpec, RuntimeWorkspaceState } from '@workbay/api';
import type { LocalRuntimeConfig } from './config.js';
import type { LaunchPlan } from './launch.js';
import type { WorkspaceNet } from './network.js';
import type { InstanceRecord, RecordedCgroup } from './store.js';

/**
 * The local runtime's view of an instance: the SPI state plus where its ports ended up on this machine.
 * (`portMap` and friends are a local extension; the SPI has no field for them.)
 */
export interface LocalWorkspaceState extends RuntimeWorkspaceState {
  /**
   * Spec port → port on `host`. Isolated: identity (the workspace has an address of its own). Otherwise the IDE port
   * maps to another host port when the requested one was taken or 0.
   */
  readonly portMap: Readonly<Record<number, number>>;
  /** The port the IDE (first spec port) listens on at `host`; also `PORT` and `WORKBAY_IDE_PORT` in its env. */
  readonly idePort: number;
  /** Runs isolated: as an unprivileged uid in its own user, network, pid, mount and uts namespaces. */
  readonly namespaced: boolean;
  /** Isolated: the host uid/gid it runs as (the content directory's owner; 33333 inside). */
  readonly hostUid?: number;
  readonly hostGid?: number;
  /** Isolated: its network (netns, veth host end, addresses). */
  readonly net?: WorkspaceNet;
  /** The cgroup directories limiting it, when any. */
  readonly cgroupDirs: readonly string[];
  /** Where its stdout and stderr go while it runs. */
  readonly logFile: string;
}

/** The record of a just launched instance (written before anything else can happen to it). */
export function newRecord(o: {
  readonly spec: RuntimeWorkspaceSpec;
  readonly plan: LaunchPlan;
  readonly pid: number;
  readonly startTime?: string;
  readonly isolated: boolean;
  readonly net?: WorkspaceNet;
  readonly cgroup?: RecordedCgroup;
  readonly notice?: string;
  readonly logWriter: boolean;
  readonly config: LocalRuntimeConfig;
}): InstanceRecord {
  return {
    version: 1,
    instanceId: o.spec.instanceId,
    workspaceId: o.spec.workspaceId,
    owner: o.spec.owner,
    image: o.spec.image,
    className: o.spec.className,
    command: o.plan.command,
    pid: o.pid,
    pgid: o.pid,
    startTime: o.startTime,
    namespaced: o.isolated,
    hostUid: o.plan.identity?.uid,
    hostGid: o.plan.identity?.gid,
    net: o.net,
    notice: o.notice,
    ...(o.logWriter ? { logWriter: true } : {}),
    cgroup: o.cgroup,
    memoryLimitBytes: o.spec.resources.memoryBytes,
    host: o.net?.address ?? o.config.host,
    idePort: o.plan.idePort,
    portMap: o.plan.portMap,
    nodeName: o.config.nodeName,
    startedAt: new Date().toISOString(),
    readiness: o.plan.readiness,
    ready: false,
    stopRequested: false,
  };
}

export function stateOfRecord(r: InstanceRecord, status: RuntimeStatus, logFile: string): LocalWorkspaceState {
  const portMap: Record<number, number> = {};
  for (const [k, v] of Object.entries(r.portMap)) portMap[Number(k)] = v;
  return {
    instanceId: r.instanceId,
    status,
    ready: r.ready,
    pid: r.pid,
    exitCode: r.exit?.exitCode,
    failure: r.exit?.failure,
    nodeName: r.nodeName,
    host: r.host,
    startedAt: new Date(r.startedAt),
    portMap,
    idePort: r.idePort,
    namespaced: r.namespaced,
    hostUid: r.hostUid,
    hostGid: r.hostGid,
    net: r.net,
    notice: r.notice,
    cgroupDirs: r.cgroup?.dirs ?? [],
    logFile,
  };
}
