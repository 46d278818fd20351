/**
 * The RPCs that change a workspace's record but not its lifecycle: DescribeWorkspace, MarkActive, SetTimeout,
 * ControlPort, ControlAdmission. Each validates, then commits the change through the repository.
 *
 * @module
 */
import { FailedPreconditionError, InvalidArgumentError } from '@workbay/api';
import type { ManagerConfig } from '../config.js';
import { withConditions, withProgress } from '../domain/status.js';
import type {
  AdmissionLevel,
  DescribeResult,
  PortProtocol,
  PortVisibility,
  TimeoutKind,
  WorkspaceRecord,
} from '../domain/types.js';
import { parseOptionalDuration, validateInstanceId } from '../domain/validation.js';
import type { ReservedEndpoints } from '../proxy/exposure.js';
import { validateExposure, validatePortNumber } from '../proxy/exposure.js';
import { requireWorkspace } from './content-operations.js';
import type { WorkspaceUrls } from './records.js';
import type { WorkspaceRepository } from './repository.js';

export interface RecordOperationsDeps {
  readonly repo: WorkspaceRepository;
  readonly config: ManagerConfig;
  readonly urls: WorkspaceUrls;
  readonly reservedEndpoints: ReservedEndpoints;
  readonly now: () => number;
}

export class RecordOperations {
  constructor(private readonly deps: RecordOperationsDeps) {}

  private update(id: string, change: (record: WorkspaceRecord) => WorkspaceRecord): void {
    const current = this.deps.repo.get(id);
    if (current) this.deps.repo.commit(current, change(current));
  }

  describeWorkspace(id: string): DescribeResult {
    const record = requireWorkspace(this.deps.repo, id);
    return {
      status: record,
      lastActivity: record.lastActivity !== undefined ? new Date(record.lastActivity).toISOString() : '',
    };
  }

  private requireRunning(id: string): WorkspaceRecord {
    const record = requireWorkspace(this.deps.repo, id);
    if (record.phase === 'stopped') throw new FailedPreconditionError(`workspace ${record.id} is stopped`);
    return record;
  }

  /** MarkActive: records user activity (and whether the IDE is closed). */
  markActive(id: string, options: { closed: boolean; ignoreIfActive: boolean }): void {
    const record = this.requireRunning(id);
    if (options.ignoreIfActive && record.conditions.firstUserActivity !== undefined) return;
    const now = this.deps.now();
    this.update(id, (r) => ({
      ...withProgress(
        r.conditions.firstUserActivity === undefined ? withConditions(r, { firstUserActivity: now }) : r,
        { closed: options.closed },
      ),
      lastActivity: now,
    }));
  }

  /**
   * SetTimeout. `workspace` sets the inactivity timeout and, like the original, resets the closed timeout to
   * 0 (which disables the closed rule); `closed` sets the closed timeout.
   */
  setTimeout(id: string, kind: TimeoutKind, duration: string): void {
    validateInstanceId(id, 'id');
    if (duration === '') throw new InvalidArgumentError('duration', 'is required');
    const ms = parseOptionalDuration(duration, 'duration')!;
    this.requireRunning(id);
    const capped = Math.min(ms, this.deps.config.timeouts.maxWorkspaceTimeoutMs);
    this.update(id, (r) => ({
      ...r,
      spec:
        kind === 'workspace'
          ? { ...r.spec, timeoutMs: capped, closedTimeoutMs: 0 }
          : { ...r.spec, closedTimeoutMs: capped },
    }));
  }

  /** ControlPort: exposes (or re-exposes with new settings) or removes a port. */
  controlPort(
    id: string,
    expose: boolean,
    port: { readonly port: number; readonly visibility: PortVisibility; readonly protocol: PortProtocol } | undefined,
  ): void {
    validateInstanceId(id, 'id');
    if (!port) throw new InvalidArgumentError('spec', 'is required');
    validatePortNumber(port.port, 'spec.port');
    const record = this.requireRunning(id);
    validateExposure(record, port.port, expose, {
      reserved: this.deps.reservedEndpoints,
      workspaces: this.deps.repo.list(),
      idePorts: this.deps.config.idePorts,
    });
    this.update(id, (r) => {
      const ports = r.spec.ports.filter((p) => p.port !== port.port);
      if (expose) ports.push(this.deps.urls.portSpec(r, port.port, port.visibility, port.protocol));
      ports.sort((a, b) => a.port - b.port);
      return { ...r, spec: { ...r.spec, ports } };
    });
  }

  controlAdmission(id: string, level: AdmissionLevel): void {
    this.requireRunning(id);
    this.update(id, (r) => (r.spec.admission === level ? r : { ...r, spec: { ...r.spec, admission: level } }));
  }
}
