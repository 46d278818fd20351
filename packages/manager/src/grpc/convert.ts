/**
 * Conversion between the wire (ts-proto `wsman` messages) and the manager's domain types. The only place
 * besides the server and the daemon adapter where proto types appear. Unknown enum values become
 * `InvalidArgumentError`s naming the field.
 *
 * @module
 */
import {
  InvalidArgumentError,
  admissionLevel,
  contentservice,
  formatGoDuration,
  parseQualifiedObject,
  portProtocol,
  portVisibility,
  workspaceConditionBool,
  workspaceFeatureFlag,
  workspacePhase,
  workspaceType,
  wsman,
} from '@workbay/api';
import type { TimeoutSettings } from '../config.js';
import { closedTimeoutMs, inactivityTimeoutMs } from '../domain/timeouts.js';
import type {
  FeatureFlag,
  GitStatusInfo,
  InitializerMetricInfo,
  MetadataFilter,
  StartWorkspaceInput,
  WorkspaceRecord,
  WorkspaceType,
} from '../domain/types.js';

export function filterFromProto(filter: wsman.MetadataFilter | undefined): MetadataFilter | undefined {
  if (!filter) return undefined;
  const annotations = filter.annotations ?? {};
  if (!filter.owner && !filter.metaId && Object.keys(annotations).length === 0) return undefined;
  return { owner: filter.owner || undefined, metaId: filter.metaId || undefined, annotations };
}

export function domainTypeFromProto(value: number, field: string): WorkspaceType {
  const type = workspaceType.fromProto(value, field);
  if (type === 'probe') throw new InvalidArgumentError(field, 'PROBE workspaces are no longer supported');
  return type;
}

/** Light structural checks of the initializer; the daemon does the rest. Names the offending field. */
function checkInitializer(init: contentservice.WorkspaceInitializer, field: string, depth = 0): void {
  const spec = init.spec;
  if (!spec)
    throw new InvalidArgumentError(
      field,
      'must set one initializer (empty, git, snapshot, prebuild, composite, download, backup)',
    );
  if (depth > 8) throw new InvalidArgumentError(field, 'composite initializers are nested too deeply');
  switch (spec.$case) {
    case 'git':
      if (!spec.value.remoteUri) throw new InvalidArgumentError(`${field}.git.remote_uri`, 'is required');
      break;
    case 'snapshot':
      parseQualifiedObject(spec.value.snapshot, `${field}.snapshot.snapshot`);
      break;
    case 'prebuild':
      if (spec.value.prebuild)
        parseQualifiedObject(spec.value.prebuild.snapshot, `${field}.prebuild.prebuild.snapshot`);
      spec.value.git.forEach((g, i) => {
        if (!g.remoteUri) throw new InvalidArgumentError(`${field}.prebuild.git[${i}].remote_uri`, 'is required');
      });
      break;
    case 'composite':
      spec.value.initializer.forEach((child, i) =>
        checkInitializer(child, `${field}.composite.initializer[${i}]`, depth + 1),
      );
      break;
    case 'download':
      spec.value.files.forEach((f, i) => {
        if (!f.url) throw new InvalidArgumentError(`${field}.download.files[${i}].url`, 'is required');
      });
      break;
    default:
      break;
  }
}

function envFromProto(list: readonly wsman.EnvironmentVariable[]): NonNullable<StartWorkspaceInput['spec']>['envvars'] {
  return list.map((e) => ({
    name: e.name,
    value: e.value,
    ...(e.secret ? { secret: { secretName: e.secret.secretName, key: e.secret.key } } : {}),
  }));
}

/** Decodes a StartWorkspaceRequest; enum values and the initializer are checked here, the rest by the core. */
export function startInputFromProto(request: wsman.StartWorkspaceRequest): StartWorkspaceInput {
  const type = domainTypeFromProto(request.type, 'type');
  const metadata = request.metadata && {
    owner: request.metadata.owner,
    metaId: request.metadata.metaId,
    annotations: { ...request.metadata.annotations },
    ...(request.metadata.team !== undefined ? { team: request.metadata.team } : {}),
    ...(request.metadata.project !== undefined ? { project: request.metadata.project } : {}),
  };
  const spec = request.spec;
  if (!spec) return { id: request.id, servicePrefix: request.servicePrefix, metadata, type };
  let initializer = '';
  let initializerKind = '';
  if (spec.initializer) {
    checkInitializer(spec.initializer, 'spec.initializer');
    initializer = Buffer.from(contentservice.WorkspaceInitializer.encode(spec.initializer).finish()).toString('base64');
    initializerKind = spec.initializer.spec?.$case ?? '';
  }
  const ide = spec.ideImage;
  const featureFlags: FeatureFlag[] = [];
  spec.featureFlags.forEach((flag, i) => {
    const value = workspaceFeatureFlag.fromProto(flag, `spec.feature_flags[${i}]`);
    if (value !== 'noop') featureFlags.push(value);
  });
  return {
    id: request.id,
    servicePrefix: request.servicePrefix,
    metadata,
    type,
    spec: {
      image: spec.workspaceImage,
      ideImage: {
        webRef: ide?.webRef || spec.deprecatedIdeImage,
        supervisorRef: ide?.supervisorRef ?? '',
        desktopRef: ide?.desktopRef ?? '',
        desktopPluginRef: ide?.desktopPluginRef ?? '',
      },
      ideImageLayers: spec.ideImageLayers,
      initializer,
      initializerKind,
      ports: spec.ports.map((p, i) => ({
        port: p.port,
        visibility: portVisibility.fromProto(p.visibility, `spec.ports[${i}].visibility`),
        protocol: portProtocol.fromProto(p.protocol, `spec.ports[${i}].protocol`),
      })),
      envvars: envFromProto(spec.envvars),
      sysEnvvars: envFromProto(spec.sysEnvvars),
      workspaceLocation: spec.workspaceLocation,
      ...(spec.git ? { git: { username: spec.git.username, email: spec.git.email } } : {}),
      timeout: spec.timeout,
      closedTimeout: spec.closedTimeout,
      maximumLifetime: spec.maximumLifetime,
      admission: admissionLevel.fromProto(spec.admission, 'spec.admission'),
      className: spec.class,
      sshPublicKeys: spec.sshPublicKeys,
      featureFlags,
    },
  };
}

function gitStatusToProto(git: GitStatusInfo): contentservice.GitStatus {
  return {
    branch: git.branch,
    latestCommit: git.latestCommit,
    uncommitedFiles: [...git.uncommittedFiles],
    untrackedFiles: [...git.untrackedFiles],
    unpushedCommits: [...git.unpushedCommits],
    totalUncommitedFiles: git.totalUncommittedFiles,
    totalUntrackedFiles: git.totalUntrackedFiles,
    totalUnpushedCommits: git.totalUnpushedCommits,
  };
}

function metricToProto(metric: InitializerMetricInfo | undefined): wsman.InitializerMetric | undefined {
  if (!metric) return undefined;
  const seconds = Math.floor(metric.durationMs / 1000);
  return {
    duration: { seconds, nanos: Math.round((metric.durationMs - seconds * 1000) * 1e6) },
    size: metric.sizeBytes,
  };
}

const bool = (value: boolean): wsman.WorkspaceConditionBool => workspaceConditionBool.toProto(value);

/**
 * The wire status of a record. Records are immutable, so the conversion is cached per record object (a
 * status fanned out to many subscribers is converted once).
 */
export class StatusConverter {
  private readonly cache = new WeakMap<WorkspaceRecord, wsman.WorkspaceStatus>();
  private readonly encoded = new WeakMap<WorkspaceRecord, Buffer>();
  private readonly described = new WeakMap<WorkspaceRecord, Buffer>();

  constructor(private readonly timeouts: TimeoutSettings) {}

  toProto(record: WorkspaceRecord): wsman.WorkspaceStatus {
    const cached = this.cache.get(record);
    if (cached) return cached;
    const status = this.convert(record);
    this.cache.set(record, status);
    return status;
  }

  /** The encoded `SubscribeResponse` carrying this record, cached. */
  subscribeResponseBytes(record: WorkspaceRecord): Buffer {
    let bytes = this.encoded.get(record);
    if (!bytes) {
      bytes = Buffer.from(
        wsman.SubscribeResponse.encode({ status: this.toProto(record), header: {}, resyncRequired: false }).finish(),
      );
      this.encoded.set(record, bytes);
    }
    return bytes;
  }

  /** The encoded `DescribeWorkspaceResponse` for a record (activity changes replace the record, so it is cached). */
  describeResponseBytes(record: WorkspaceRecord, lastActivity: string): Buffer {
    let bytes = this.described.get(record);
    if (!bytes) {
      bytes = Buffer.from(
        wsman.DescribeWorkspaceResponse.encode({ status: this.toProto(record), lastActivity }).finish(),
      );
      this.described.set(record, bytes);
    }
    return bytes;
  }

  private convert(r: WorkspaceRecord): wsman.WorkspaceStatus {
    const c = r.conditions;
    const ide = r.spec.ideImage;
    return {
      id: r.id,
      statusVersion: r.statusVersion,
      metadata: {
        owner: r.owner,
        metaId: r.metaId,
        startedAt: new Date(r.createdAt),
        annotations: { ...r.annotations },
        ...(r.team !== undefined ? { team: r.team } : {}),
        ...(r.project !== undefined ? { project: r.project } : {}),
        metrics: undefined,
      },
      spec: {
        workspaceImage: r.spec.image,
        deprecatedIdeImage: '',
        headless: r.type !== 'regular',
        url: r.url,
        exposedPorts: r.spec.ports.map((p) => ({
          port: p.port,
          visibility: portVisibility.toProto(p.visibility),
          url: p.url,
          protocol: portProtocol.toProto(p.protocol),
        })),
        type: workspaceType.toProto(r.type),
        timeout: formatGoDuration(inactivityTimeoutMs(r, this.timeouts)),
        ideImage: {
          webRef: ide.webRef,
          supervisorRef: ide.supervisorRef,
          desktopRef: ide.desktopRef,
          desktopPluginRef: ide.desktopPluginRef,
        },
        class: r.spec.className,
        ideImageLayers: [...r.spec.ideImageLayers],
        closedTimeout: formatGoDuration(closedTimeoutMs(r, this.timeouts)),
      },
      phase: workspacePhase.toProto(r.phase),
      conditions: {
        failed: c.failed,
        timeout: c.timeout,
        pullingImages: bool(false),
        snapshot: c.snapshot,
        finalBackupComplete: bool(c.finalBackupComplete),
        deployed: bool(c.deployed),
        networkNotReady: bool(false),
        firstUserActivity: c.firstUserActivity !== undefined ? new Date(c.firstUserActivity) : undefined,
        headlessTaskFailed: c.headlessTaskFailed,
        stoppedByRequest: bool(c.stoppedByRequest),
        volumeSnapshot: undefined,
        aborted: bool(c.aborted),
      },
      message: r.message,
      repo: r.repo ? gitStatusToProto(r.repo) : undefined,
      runtime: r.progress.nodeName
        ? {
            nodeName: r.progress.nodeName,
            podName: r.progress.podName ?? r.id,
            nodeIp: r.progress.nodeIp ?? r.progress.runtimeHost ?? '',
          }
        : undefined,
      auth: { admission: admissionLevel.toProto(r.spec.admission), ownerToken: r.ownerToken },
      initializerMetrics: r.initializerMetrics
        ? {
            git: metricToProto(r.initializerMetrics.git),
            fileDownload: metricToProto(r.initializerMetrics.fileDownload),
            snapshot: metricToProto(r.initializerMetrics.snapshot),
            backup: metricToProto(r.initializerMetrics.backup),
            prebuild: metricToProto(r.initializerMetrics.prebuild),
            composite: metricToProto(r.initializerMetrics.composite),
          }
        : undefined,
    };
  }
}
