/**
 * Wire ↔ domain conversion for `wsdaemon.WorkspaceContentService`. Proto types stop here: everything past
 * this module speaks the domain types. Invalid input becomes INVALID_ARGUMENT naming the request field
 * (`initializer.composite.initializer[1].git.remote_uri`).
 */
import type { contentservice, wsdaemon } from '@workbay/api';
import { cloneTargetMode, gitAuthMethod } from '@workbay/api';
import { splitQualified } from '../content/ownership.js';
import type { InitWorkspaceInput } from '../content/validate.js';
import { checkHttpUrl } from '../content/validate.js';
import { InvalidArgumentError } from '../errors.js';
import type { GitStatusSummary } from '../git/git-status.js';
import type {
  DownloadFileSpec,
  GitAuth,
  GitInitializerSpec,
  InitializerMetric,
  InitializerSpec,
} from '../initializer/types.js';
import { checkCount, checkLength, limits, quote } from '../util/bounds.js';

function required(value: string | undefined, field: string): string {
  if (!value) throw new InvalidArgumentError(field, 'must be set');
  return value;
}

/** A workspace id from a request: set, and short (it is echoed in messages and used in paths). */
// Workspace ids name directories, sockets and session files: the alphabet the runtimes accept, nothing else.
const idPattern = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;

export function requireId(id: string, field = 'id'): string {
  const checked = checkLength(required(id, field), field, limits.id);
  if (!idPattern.test(checked)) {
    throw new InvalidArgumentError(
      field,
      "may only contain letters, digits, '.', '_' and '-', starting with a letter or digit",
    );
  }
  return checked;
}

function httpUrl(value: string, field: string): string {
  checkHttpUrl(value, field);
  return value;
}

// Branch names as `git check-ref-format --branch` accepts them, a little stricter.
// eslint-disable-next-line no-control-regex -- control characters are exactly what is excluded
const branchPattern = /^(?!-)(?!.*\.\.)(?!.*\/\/)(?!.*@\{)[^\s~^:?*[\\\x00-\x1f\x7f]+(?<![./])$/;
const commitPattern = /^[0-9a-fA-F]{4,64}$/;
const configKeyPattern = /^[A-Za-z][A-Za-z0-9-]*(\.[^\s=]+)?\.[A-Za-z][A-Za-z0-9-]*$/;

function remoteUri(value: string, field: string): string {
  required(value, field);
  checkLength(value, field, limits.url);
  if (value.startsWith('-')) throw new InvalidArgumentError(field, 'must not start with -');
  // eslint-disable-next-line no-control-regex -- control characters are exactly what is refused
  if (/[\s\x00-\x1f]/.test(value))
    throw new InvalidArgumentError(field, 'must not contain whitespace or control characters');
  return value;
}

export function gitFromProto(git: contentservice.GitInitializer, field: string): GitInitializerSpec {
  const targetMode = cloneTargetMode.fromProto(git.targetMode, `${field}.target_mode`);
  const cloneTarget = checkLength(git.cloneTaget, `${field}.clone_taget`, limits.cloneTarget);
  if (targetMode === 'remote-commit') {
    if (!commitPattern.test(cloneTarget))
      throw new InvalidArgumentError(`${field}.clone_taget`, `${quote(cloneTarget)} is not a commit id`);
  } else if (targetMode !== 'remote-head') {
    if (!branchPattern.test(cloneTarget))
      throw new InvalidArgumentError(`${field}.clone_taget`, `${quote(cloneTarget)} is not a valid branch name`);
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
  const configField = `${field}.config.custom_config`;
  const entries = Object.entries(config?.customConfig ?? {});
  if (entries.length > limits.customConfig.entries)
    throw new InvalidArgumentError(
      configField,
      `has too many entries (${entries.length}; at most ${limits.customConfig.entries})`,
    );
  for (const [key, value] of entries) {
    // Lengths first: the key pattern backtracks, and nothing unbounded may reach a message.
    checkLength(key, `${configField} key`, limits.customConfig.key);
    checkLength(value, `${configField}[${quote(key, 32)}]`, limits.customConfig.value);
    if (!configKeyPattern.test(key))
      throw new InvalidArgumentError(configField, `${quote(key)} is not a git config key`);
    if (/[\n\r\0]/.test(value))
      throw new InvalidArgumentError(configField, `value of ${quote(key)} must be a single line`);
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
      splitQualified(required(spec.value.snapshot, snapshotField), snapshotField);
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
      if (snapshot) splitQualified(snapshot, `${field}.prebuild.prebuild.snapshot`);
      checkCount(spec.value.git.length, `${field}.prebuild.git`, limits.children);
      const git = spec.value.git.map((g, i) => gitFromProto(g, `${field}.prebuild.git[${i}]`));
      return { kind: 'prebuild', ...(snapshot ? { snapshot } : {}), git };
    }
    case 'composite': {
      if (depth >= limits.depth)
        throw new InvalidArgumentError(`${field}.composite`, `nested deeper than ${limits.depth} levels`);
      checkCount(spec.value.initializer.length, `${field}.composite.initializer`, limits.children);
      const children = spec.value.initializer.map((child, i) =>
        initializerFromProto(child, `${field}.composite.initializer[${i}]`, depth + 1),
      );
      return { kind: 'composite', children };
    }
    case 'download': {
      checkCount(spec.value.files.length, `${field}.download.files`, limits.files);
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
