/**
 * The one validation of an InitWorkspace request, run before anything is registered or written (issue 8
 * item 10): ids, quota, storage, and the whole initializer tree (nesting, list and string sizes, locations
 * inside the content, owner confinement of snapshots). A refused request leaves no trace, so a corrected
 * retry with the same id succeeds.
 *
 * The gRPC edge only converts; library callers of the content service get exactly the same checks.
 */
import type { BucketLayout } from '@workbay/api';
import { assertWorkspaceId, locateOwner } from '@workbay/api';
import { collidesWithSessionFiles } from '../session/session-store.js';
import { FailedPreconditionError, InvalidArgumentError, isWorkbayError } from '../errors.js';
import type { GitPolicy } from '../git/git-policy.js';
import { validateGitInitializer } from '../git/git-policy.js';
import type { DownloadFileSpec, GitInitializerSpec, InitializerSpec } from '../initializer/types.js';
import { checkCount, checkLength, limits, quote } from '../util/bounds.js';
import { checkRelativeLocation } from '../util/paths.js';
import { assertOwnedSnapshot, splitQualified } from './ownership.js';

/** What InitWorkspace asks for, in domain terms. */
export interface InitWorkspaceInput {
  readonly instanceId: string;
  readonly owner: string;
  /** The workspace (meta) id: backups are keyed by it. */
  readonly workspaceId: string;
  readonly initializer: InitializerSpec;
  readonly remoteStorageDisabled: boolean;
  /** 0: the daemon's default. */
  readonly storageQuotaBytes: number;
}

export interface ValidationContext {
  readonly layout: BucketLayout;
  /** Whether this daemon has remote storage at all. */
  readonly hasStorage: boolean;
  /** The daemon's git rules (local remotes); default: local remotes are judged when the clone runs. */
  readonly git?: GitPolicy;
}

interface TreeState {
  nodes: number;
  readonly owner: string;
  readonly storage: boolean;
  readonly layout: BucketLayout;
  readonly git?: GitPolicy;
}

/** Re-throws an INVALID_ARGUMENT from a helper that does not know the request field under `field`. */
function withField<T>(field: string, fn: () => T): T {
  try {
    return fn();
  } catch (error) {
    if (isWorkbayError(error, 'invalid-argument'))
      throw new InvalidArgumentError(field, (error as InvalidArgumentError).reason, { cause: error });
    throw error;
  }
}

function checkId(value: string, field: string): void {
  if (!value) throw new InvalidArgumentError(field, 'must be set');
  checkLength(value, field, limits.id);
  withField(field, () => assertWorkspaceId(value, field));
  if (collidesWithSessionFiles(value)) {
    throw new InvalidArgumentError(
      field,
      "must not end in '.workspace.json' or '.disposed.json' (the daemon's own files)",
    );
  }
}

/** Throws the first problem of `input`; returns normally when the request may be registered. */
export function validateInitWorkspace(input: InitWorkspaceInput, context: ValidationContext): void {
  checkId(input.instanceId, 'id');
  if (!Number.isSafeInteger(input.storageQuotaBytes) || input.storageQuotaBytes < 0) {
    throw new InvalidArgumentError(
      'storage_quota_bytes',
      `must be a non-negative integer (got ${quote(String(input.storageQuotaBytes))})`,
    );
  }
  checkLength(input.owner, 'metadata.owner', limits.id);
  checkLength(input.workspaceId, 'metadata.meta_id', limits.id);
  if (!input.remoteStorageDisabled) {
    if (!context.hasStorage) {
      throw new FailedPreconditionError(
        'this daemon has no remote storage; set remote_storage_disabled to run without backups',
      );
    }
    if (!input.owner) throw new InvalidArgumentError('metadata.owner', 'must be set (backups are stored per owner)');
    withField('metadata.owner', () => locateOwner(context.layout, input.owner));
    if (!input.workspaceId) throw new InvalidArgumentError('metadata.meta_id', 'must be set (backups are keyed by it)');
    checkId(input.workspaceId, 'metadata.meta_id');
  } else if (input.workspaceId) {
    checkId(input.workspaceId, 'metadata.meta_id');
  }
  validateInitializer(input.initializer, 'initializer', 0, {
    nodes: 0,
    owner: input.owner,
    storage: !input.remoteStorageDisabled && context.hasStorage,
    layout: context.layout,
    ...(context.git ? { git: context.git } : {}),
  });
}

function requireStorage(state: TreeState, field: string, what: string): void {
  if (!state.storage)
    throw new FailedPreconditionError(`${field}: remote storage is disabled for this workspace; cannot ${what}`);
}

function validateInitializer(spec: InitializerSpec, field: string, depth: number, state: TreeState): void {
  state.nodes++;
  if (state.nodes > limits.nodes)
    throw new InvalidArgumentError(field, `the initializer tree has more than ${limits.nodes} initializers`);
  switch (spec.kind) {
    case 'empty':
      return;
    case 'git':
      validateGit(spec.git, `${field}.git`, state.git);
      return;
    case 'snapshot': {
      const snapshotField = `${field}.snapshot.snapshot`;
      if (!spec.snapshot) throw new InvalidArgumentError(snapshotField, 'must be set');
      splitQualified(spec.snapshot, snapshotField);
      requireStorage(state, snapshotField, 'restore a snapshot');
      assertOwnedSnapshot(state.layout, state.owner, spec.snapshot, snapshotField);
      return;
    }
    case 'prebuild': {
      if (spec.snapshot !== undefined) {
        const snapshotField = `${field}.prebuild.prebuild.snapshot`;
        splitQualified(spec.snapshot, snapshotField);
        // Without remote storage the prebuild falls back to its git initializers; nothing is read.
        if (state.storage) assertOwnedSnapshot(state.layout, state.owner, spec.snapshot, snapshotField);
      }
      checkCount(spec.git.length, `${field}.prebuild.git`, limits.children);
      spec.git.forEach((git, i) => validateGit(git, `${field}.prebuild.git[${i}]`, state.git));
      return;
    }
    case 'composite': {
      if (depth >= limits.depth)
        throw new InvalidArgumentError(`${field}.composite`, `nested deeper than ${limits.depth} levels`);
      checkCount(spec.children.length, `${field}.composite.initializer`, limits.children);
      spec.children.forEach((child, i) =>
        validateInitializer(child, `${field}.composite.initializer[${i}]`, depth + 1, state),
      );
      return;
    }
    case 'download':
      validateDownload(spec, `${field}.download`);
      return;
    case 'backup':
      checkRelativeLocation(spec.checkoutLocation, `${field}.backup.checkout_location`);
      requireStorage(state, `${field}.backup`, 'restore a backup');
      return;
  }
}

/** The generic part of a git initializer (sizes, location); git's own rules are the git initializer's. */
function validateGit(spec: GitInitializerSpec, field: string, git: GitPolicy | undefined): void {
  checkLength(spec.remoteUri, `${field}.remote_uri`, limits.url);
  if (spec.upstreamRemoteUri !== undefined)
    checkLength(spec.upstreamRemoteUri, `${field}.upstream_Remote_uri`, limits.url);
  checkLength(spec.cloneTarget, `${field}.clone_taget`, limits.cloneTarget);
  checkRelativeLocation(spec.checkoutLocation, `${field}.checkout_location`);
  const config = Object.entries(spec.customConfig);
  const configField = `${field}.config.custom_config`;
  if (config.length > limits.customConfig.entries)
    throw new InvalidArgumentError(
      configField,
      `has too many entries (${config.length}; at most ${limits.customConfig.entries})`,
    );
  for (const [key, value] of config) {
    checkLength(key, `${configField} key`, limits.customConfig.key);
    checkLength(value, `${configField}[${quote(key, 32)}]`, limits.customConfig.value);
  }
  switch (spec.auth.method) {
    case 'basic':
      checkLength(spec.auth.username, `${field}.config.auth_user`, limits.username);
      checkLength(spec.auth.password, `${field}.config.auth_password`, limits.password);
      break;
    case 'basic-ots':
      checkHttpUrl(spec.auth.otsUrl, `${field}.config.auth_ots`);
      break;
    case 'none':
      break;
  }
  // Git's own rules: custom_config allowlist, allowed transports (git/git-policy.ts).
  validateGitInitializer(spec, field, git);
}

/** Only http(s): a download must never read the node's own files (`file:`) or anything else. */
export function checkHttpUrl(value: string, field: string): void {
  if (!value) throw new InvalidArgumentError(field, 'must be set');
  checkLength(value, field, limits.url);
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new InvalidArgumentError(field, `${quote(value)} is not a URL`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:')
    throw new InvalidArgumentError(field, `must be an http(s) URL, not ${quote(url.protocol)}`);
}

const digestPattern = /^(sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128})$/;

function validateDownload(
  spec: { readonly targetLocation: string; readonly files: readonly DownloadFileSpec[] },
  field: string,
): void {
  checkRelativeLocation(spec.targetLocation, `${field}.target_location`);
  checkCount(spec.files.length, `${field}.files`, limits.files);
  spec.files.forEach((file, i) => {
    const fileField = `${field}.files[${i}]`;
    checkHttpUrl(file.url, `${fileField}.url`);
    if (!file.filePath) throw new InvalidArgumentError(`${fileField}.file_path`, 'must be set');
    checkRelativeLocation(file.filePath, `${fileField}.file_path`);
    if (file.filePath.endsWith('/'))
      throw new InvalidArgumentError(`${fileField}.file_path`, `${quote(file.filePath)} must be a file path`);
    checkLength(`${spec.targetLocation}/${file.filePath}`, `${fileField}.file_path`, limits.location);
    if (!file.digest) throw new InvalidArgumentError(`${fileField}.digest`, 'must be set');
    checkLength(file.digest, `${fileField}.digest`, limits.digest);
    if (!digestPattern.test(file.digest)) {
      throw new InvalidArgumentError(
        `${fileField}.digest`,
        `${quote(file.digest)} is not an OCI digest (sha256:<hex> or sha512:<hex>)`,
      );
    }
  });
}
