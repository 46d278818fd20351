/**
 * Wire ↔ domain conversion for `wsdaemon.WorkspaceContentService`. Proto types stop here: everything past
 * this module speaks the domain types. Invalid input becomes INVALID_ARGUMENT naming the request field
 * (`initializer.composite.initializer[1].git.remote_uri`).
 */
import type { contentservice, wsdaemon } from '@workbay/api';
import { cloneTargetMode, gitAuthMethod, parseQualifiedObject } from '@workbay/api';
import type { InitWorkspaceInput } from '../content-service.js';
import { InvalidArgumentError } from '../errors.js';
import type { GitStatusSummary } from '../git/git-status.js';
import type {
  DownloadFileSpec,
  GitAuth,
  GitInitializerSpec,
  InitializerMetric,
  InitializerSpec,
} from '../initializer/types.js';

const maxCompositeDepth = 8;

function required(value: string | undefined, field: string): string {
  if (!value) throw new InvalidArgumentError(field, 'must be set');
  return value;
}

export function requireId(id: string, field = 'id'): string {
  return required(id, field);
}

function httpUrl(value: string, field: string): string {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new InvalidArgumentError(field, 'is not a URL');
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:')
    throw new InvalidArgumentError(field, `must be an http(s) URL, not ${url.protocol}`);
  return value;
}

// Branch names as `git check-ref-format --branch` accepts them, a little stricter.
// eslint-disable-next-line no-control-regex -- control characters are exactly what is excluded
const branchPattern = /^(?!-)(?!.*\.\.)(?!.*\/\/)(?!.*@\{)[^\s~^:?*[\\\x00-\x1f\x7f]+(?<![./])$/;
const commitPattern = /^[0-9a-fA-F]{4,64}$/;
const configKeyPattern = /^[A-Za-z][A-Za-z0-9-]*(\.[^\s=]+)?\.[A-Za-z][A-Za-z0-9-]*$/;

function remoteUri(value: string, field: string): string {
  required(value, field);
  if (value.startsWith('-')) throw new InvalidArgumentError(field, 'must not start with -');
  // eslint-disable-next-line no-control-regex -- control characters are exactly what is refused
  if (/[\s\x00-\x1f]/.test(value))
    throw new InvalidArgumentError(field, 'must not contain whitespace or control characters');
  return value;
}

export function gitFromProto(git: contentservice.GitInitializer, field: string): GitInitializerSpec {
  const targetMode = cloneTargetMode.fromProto(git.targetMode, `${field}.target_mode`);
  const cloneTarget = git.cloneTaget;
  if (targetMode === 'remote-commit') {
    if (!commitPattern.test(cloneTarget))
      throw new InvalidArgumentError(`${field}.clone_taget`, `'${cloneTarget}' is not a commit id`);
  } else if (targetMode !== 'remote-head') {
    if (!branchPattern.test(cloneTarget))
      throw new InvalidArgumentError(`${field}.clone_taget`, `'${cloneTarget}' is not a valid branch name`);
  }
  const config = git.config;
  const method = gitAuthMethod.fromProto(config?.authentication ?? 0, `${field}.config.authentication`);
  let auth: GitAuth;
  switch (method) {
    case 'none':
      auth = { method: 'none' };
      break;
    case 'basic':
      auth = {
        method: 'basic',
        username: required(config?.authUser, `${field}.config.auth_user`),
        password: required(config?.authPassword, `${field}.config.auth_password`),
      };
      break;
    case 'basic-ots':
      auth = {
        method: 'basic-ots',
        otsUrl: httpUrl(required(config?.authOts, `${field}.config.auth_ots`), `${field}.config.auth_ots`),
      };
      break;
  }
  const customConfig: Record<string, string> = {};
  for (const [key, value] of Object.entries(config?.customConfig ?? {})) {
    if (!configKeyPattern.test(key))
      throw new InvalidArgumentError(`${field}.config.custom_config`, `'${key}' is not a git config key`);
    if (/[\n\r\0]/.test(value))
      throw new InvalidArgumentError(`${field}.config.custom_config`, `value of '${key}' must be a single line`);
    customConfig[key] = value;
  }
  return {
    remoteUri: remoteUri(git.remoteUri, `${field}.remote_uri`),
    ...(git.upstreamRemoteUri
      ? { upstreamRemoteUri: remoteUri(git.upstreamRemoteUri, `${field}.upstream_Remote_uri`) }
      : {}),
    targetMode,
    cloneTarget,
    checkoutLocation: git.checkoutLocation,
    customConfig,
    auth,
    fullClone: git.fullClone,
  };
}

export function initializerFromProto(
  initializer: contentservice.WorkspaceInitializer | undefined,
  field: string,
  depth = 0,
): InitializerSpec {
  const spec = initializer?.spec;
  if (!spec)
    throw new InvalidArgumentError(
      field,
      'must be set (one of empty, git, snapshot, prebuild, composite, download, backup)',
    );
  switch (spec.$case) {
    case 'empty':
      return { kind: 'empty' };
    case 'git':
      return { kind: 'git', git: gitFromProto(spec.value, `${field}.git`) };
    case 'snapshot': {
      const snapshotField = `${field}.snapshot.snapshot`;
      if (spec.value.fromVolumeSnapshot) {
        throw new InvalidArgumentError(
          `${field}.snapshot.from_volume_snapshot`,
          'volume snapshots are not supported by this daemon',
        );
      }
      parseQualifiedObject(required(spec.value.snapshot, snapshotField), snapshotField);
      return { kind: 'snapshot', snapshot: spec.value.snapshot };
    }
    case 'prebuild': {
      const snapshot = spec.value.prebuild?.snapshot;
      if (spec.value.prebuild?.fromVolumeSnapshot) {
        throw new InvalidArgumentError(
          `${field}.prebuild.prebuild.from_volume_snapshot`,
          'volume snapshots are not supported by this daemon',
        );
      }
      if (snapshot) parseQualifiedObject(snapshot, `${field}.prebuild.prebuild.snapshot`);
      const git = spec.value.git.map((g, i) => gitFromProto(g, `${field}.prebuild.git[${i}]`));
      return { kind: 'prebuild', ...(snapshot ? { snapshot } : {}), git };
    }
    case 'composite': {
      if (depth >= maxCompositeDepth)
        throw new InvalidArgumentError(`${field}.composite`, `nested deeper than ${maxCompositeDepth} levels`);
      const children = spec.value.initializer.map((child, i) =>
        initializerFromProto(child, `${field}.composite.initializer[${i}]`, depth + 1),
      );
      return { kind: 'composite', children };
    }
    case 'download': {
      const files: DownloadFileSpec[] = spec.value.files.map((file, i) => {
        const fileField = `${field}.download.files[${i}]`;
        return {
          url: httpUrl(required(file.url, `${fileField}.url`), `${fileField}.url`),
          filePath: required(file.filePath, `${fileField}.file_path`),
          digest: required(file.digest, `${fileField}.digest`),
        };
      });
      return { kind: 'download', targetLocation: spec.value.targetLocation, files };
    }
    case 'backup':
      if (spec.value.fromVolumeSnapshot) {
        throw new InvalidArgumentError(
          `${field}.backup.from_volume_snapshot`,
          'volume snapshots are not supported by this daemon',
        );
      }
      return { kind: 'backup', checkoutLocation: spec.value.checkoutLocation };
  }
}

export function initRequestFromProto(request: wsdaemon.InitWorkspaceRequest): InitWorkspaceInput {
  return {
    instanceId: requireId(request.id),
    owner: request.metadata?.owner ?? '',
    workspaceId: request.metadata?.metaId ?? '',
    initializer: initializerFromProto(request.initializer, 'initializer'),
    remoteStorageDisabled: request.remoteStorageDisabled,
    storageQuotaBytes: request.storageQuotaBytes,
  };
}

export function metricToProto(metric: InitializerMetric): wsdaemon.InitializerStepMetric {
  const ms = Math.max(0, Math.round(metric.durationMs));
  return {
    type: metric.type,
    duration: { seconds: Math.floor(ms / 1000), nanos: (ms % 1000) * 1_000_000 },
    size: metric.bytes,
  };
}

export function gitStatusToProto(status: GitStatusSummary): contentservice.GitStatus {
  return {
    branch: status.branch,
    latestCommit: status.latestCommit,
    uncommitedFiles: [...status.uncommittedFiles],
    untrackedFiles: [...status.untrackedFiles],
    unpushedCommits: [...status.unpushedCommits],
    totalUncommitedFiles: status.totalUncommittedFiles,
    totalUntrackedFiles: status.totalUntrackedFiles,
    totalUnpushedCommits: status.totalUnpushedCommits,
  };
}
