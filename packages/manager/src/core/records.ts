/**
 * What the core derives from a record without changing it: a new record from a validated StartWorkspace, the
 * public URLs of a workspace and its ports, and the spec the runtime starts the process with.
 *
 * @module
 */
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import type { RuntimeWorkspaceSpec } from '@workbay/api';
import type { ManagerConfig, ResolvedClass } from '../config.js';
import { emptyConditions } from '../domain/status.js';
import { renderTemplate } from '../domain/templates.js';
import type { UrlVariables } from '../domain/templates.js';
import type { PortProtocol, PortSpec, PortVisibility, StartWorkspaceInput, WorkspaceRecord } from '../domain/types.js';
import type { validateStartInput } from '../domain/validation.js';

/** 32 random characters from the URL-safe base64 alphabet (24 bytes of entropy). */
export function createOwnerToken(): string {
  return randomBytes(24).toString('base64url');
}

type Identity = Pick<WorkspaceRecord, 'id' | 'servicePrefix' | 'metaId' | 'owner'>;

/** URLs of workspaces and their ports, from the configured templates. */
export class WorkspaceUrls {
  constructor(
    private readonly config: ManagerConfig,
    private readonly proxyAddress: () => string,
  ) {}

  variables(record: Identity): UrlVariables {
    return {
      id: record.id,
      prefix: record.servicePrefix,
      metaId: record.metaId,
      owner: record.owner,
      proxy: this.proxyAddress(),
      domain: this.config.proxy.domain ?? '',
    };
  }

  workspaceUrl(record: Identity): string {
    return renderTemplate(this.config.urlTemplate, this.variables(record));
  }

  portSpec(record: Identity, port: number, visibility: PortVisibility, protocol: PortProtocol): PortSpec {
    const url = renderTemplate(this.config.portUrlTemplate, { ...this.variables(record), port });
    return { port, visibility, protocol, url };
  }
}

/** A new PENDING record for a validated StartWorkspace (status_version is assigned when it is stored). */
export function newRecord(
  input: StartWorkspaceInput,
  validated: ReturnType<typeof validateStartInput>,
  className: string,
  urls: WorkspaceUrls,
  now: number,
): WorkspaceRecord {
  const spec = input.spec!;
  const metadata = input.metadata!;
  const identity = {
    id: input.id,
    servicePrefix: input.servicePrefix || input.id,
    metaId: metadata.metaId,
    owner: metadata.owner,
  };
  return {
    ...identity,
    annotations: { ...metadata.annotations },
    ...(metadata.team !== undefined ? { team: metadata.team } : {}),
    ...(metadata.project !== undefined ? { project: metadata.project } : {}),
    type: input.type,
    url: urls.workspaceUrl(identity),
    ownerToken: createOwnerToken(),
    spec: {
      image: spec.image,
      ideImage: spec.ideImage,
      ideImageLayers: [...spec.ideImageLayers],
      initializer: spec.initializer,
      initializerKind: spec.initializerKind,
      ports: spec.ports.map((p) => urls.portSpec(identity, p.port, p.visibility, p.protocol)),
      envvars: validated.envvars,
      sysEnvvars: validated.sysEnvvars,
      workspaceLocation: spec.workspaceLocation,
      ...(spec.git ? { git: spec.git } : {}),
      ...(validated.timeoutMs !== undefined ? { timeoutMs: validated.timeoutMs } : {}),
      ...(validated.closedTimeoutMs !== undefined ? { closedTimeoutMs: validated.closedTimeoutMs } : {}),
      ...(validated.maximumLifetimeMs !== undefined ? { maximumLifetimeMs: validated.maximumLifetimeMs } : {}),
      admission: spec.admission,
      className,
      sshPublicKeys: spec.sshPublicKeys.map((k) => k.trim()),
      featureFlags: [...new Set(spec.featureFlags)],
    },
    phase: 'pending',
    conditions: emptyConditions,
    message: '',
    statusVersion: 0,
    createdAt: now,
    phaseTimes: { pending: now },
    progress: {
      contentReady: false,
      initRequested: false,
      everReady: false,
      closed: false,
      disposed: false,
      idePort: 0,
    },
  };
}

export function contentDirOf(record: WorkspaceRecord, workingArea: string): string {
  return record.progress.contentDir ?? join(workingArea, record.id);
}

/** The spec the runtime starts the workspace process with. */
export function runtimeSpecOf(record: WorkspaceRecord, cls: ResolvedClass, contentDir: string): RuntimeWorkspaceSpec {
  const env: Record<string, string> = {};
  for (const e of record.spec.envvars) env[e.name] = e.value;
  // System variables win over user variables of the same name.
  for (const e of record.spec.sysEnvvars) env[e.name] = e.value;
  const git = record.spec.git;
  if (git?.username) {
    env.GIT_AUTHOR_NAME = git.username;
    env.GIT_COMMITTER_NAME = git.username;
  }
  if (git?.email) {
    env.GIT_AUTHOR_EMAIL = git.email;
    env.GIT_COMMITTER_EMAIL = git.email;
  }
  Object.assign(env, {
    WORKBAY_WORKSPACE_ID: record.metaId,
    WORKBAY_INSTANCE_ID: record.id,
    WORKBAY_WORKSPACE_URL: record.url,
    WORKBAY_OWNER: record.owner,
    WORKBAY_WORKSPACE_CLASS: cls.id,
    WORKBAY_REPO_ROOT: join(contentDir, record.spec.workspaceLocation),
    WORKBAY_HEADLESS: String(record.type !== 'regular'),
  });
  return {
    instanceId: record.id,
    workspaceId: record.metaId,
    owner: record.owner,
    image: record.spec.image,
    url: record.url,
    headless: record.type !== 'regular',
    type: record.type,
    contentDir,
    env,
    ports: [
      record.progress.idePort,
      ...record.spec.ports.map((p) => p.port).filter((p) => p !== record.progress.idePort),
    ],
    className: cls.id,
    nodeName: record.progress.nodeName,
    resources: {
      cpu: cls.resources.cpu,
      memoryBytes: cls.resources.memoryBytes,
      pids: cls.resources.pids,
      diskBytes: cls.resources.diskBytes,
    },
  };
}
