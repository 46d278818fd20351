/**
 * Runs an initializer spec against a workspace directory. Each step reports its duration and bytes; a
 * composite reports its children plus its own sum.
 */
import { createHash, randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { open, rename, rm } from 'node:fs/promises';
import { dirname, isAbsolute, join, posix } from 'node:path';
import {
  FailedPreconditionError,
  InvalidArgumentError,
  NoBackupFoundError,
  NotFoundError,
  UnavailableError,
  errorMessage,
  isWorkbayError,
} from '../errors.js';
import { resolveInside } from '../util/paths.js';
import type { RestoreOptions } from '../backup/backup-store.js';
import { quote } from '../util/bounds.js';
import { retryWithBackoff } from '../util/retry.js';
import type { InitializerContext } from './context.js';
import { progressErrorText } from './progress.js';
import { safeLocation } from './context.js';
import {
  GitCredentialSource,
  assertCheckoutArchivable,
  gitContentOwned,
  realizeCloneTarget,
  runGitInitializer,
  workingCopyOptions,
} from './git-initializer.js';
import { checkoutBytes } from './git-size.js';
import { downloadPolicyDefaults } from './address-policy.js';
import { guardedGet } from './guarded-get.js';
import type { GuardedResponse } from './guarded-get.js';
import type {
  ContentSource,
  GitInitializerSpec,
  InitializerMetric,
  InitializerOutcome,
  InitializerSpec,
} from './types.js';

async function timed<T>(
  type: InitializerMetric['type'],
  fn: () => Promise<{ value: T; bytes: number }>,
): Promise<{ value: T; metric: InitializerMetric }> {
  const started = performance.now();
  const { value, bytes } = await fn();
  return { value, metric: { type, durationMs: Math.round(performance.now() - started), bytes } };
}

/** Restores write as the workspace's host identity (not as the archive's owners). */
function restoreOptions(ctx: InitializerContext): RestoreOptions {
  return { ...(ctx.signal ? { signal: ctx.signal } : {}), ...(ctx.workspaceUser ? { owner: ctx.workspaceUser } : {}) };
}

function requireBackups(ctx: InitializerContext, what: string): NonNullable<InitializerContext['backups']> {
  if (!ctx.backups) throw new FailedPreconditionError(`remote storage is disabled for this workspace; cannot ${what}`);
  return ctx.backups;
}

async function emptyRoot(root: string): Promise<void> {
  const { readdir } = await import('node:fs/promises');
  for (const name of await readdir(root)) await rm(join(root, name), { recursive: true, force: true });
}

/** Runs the spec; `field` is the request path of the spec, for error messages. */
export async function runInitializer(
  spec: InitializerSpec,
  ctx: InitializerContext,
  field = 'initializer',
): Promise<InitializerOutcome> {
  switch (spec.kind) {
    case 'empty': {
      return { metrics: [{ type: 'empty', durationMs: 0, bytes: 0 }], source: 'from-other', gitLocations: [] };
    }
    case 'git': {
      const { value, metric } = await timed('git', async () => {
        const result = await runGitInitializer(spec.git, ctx, `${field}.git`);
        return {
          value: result,
          // From git's index, not a walk of the checkout (see git-size.ts).
          bytes: await checkoutBytes(await safeLocation(ctx.root, result.location, `${field}.git.checkout_location`)),
        };
      });
      return {
        metrics: [metric],
        source: 'from-other',
        gitLocations: [value.location],
        contentOwned: gitContentOwned(ctx),
      };
    }
    case 'snapshot': {
      const backups = requireBackups(ctx, 'restore a snapshot');
      const { metric } = await timed('snapshot', async () => {
        const stats = await backups.restoreSnapshot(
          ctx.root,
          spec.snapshot,
          `${field}.snapshot.snapshot`,
          restoreOptions(ctx),
        );
        return { value: undefined, bytes: stats.size };
      });
      return { metrics: [metric], source: 'from-other', gitLocations: await findGitLocations(ctx.root) };
    }
    case 'backup': {
      const backups = requireBackups(ctx, 'restore a backup');
      const { metric } = await timed('backup', async () => {
        const restored = await backups.restore(
          ctx.root,
          { owner: ctx.owner, workspaceId: ctx.workspaceId },
          restoreOptions(ctx),
        );
        if (!restored) throw new NoBackupFoundError(ctx.workspaceId);
        return { value: undefined, bytes: restored.transferredBytes };
      });
      return { metrics: [metric], source: 'from-backup', gitLocations: await findGitLocations(ctx.root) };
    }
    case 'download': {
      const { metric } = await timed('file_download', async () => ({
        value: undefined,
        bytes: await runDownloads(spec, ctx, `${field}.download`),
      }));
      return { metrics: [metric], source: 'from-other', gitLocations: [] };
    }
    case 'composite': {
      const started = performance.now();
      const metrics: InitializerMetric[] = [];
      const gitLocations: string[] = [];
      let source: ContentSource = 'from-other';
      let contentOwned = true;
      for (const [index, child] of spec.children.entries()) {
        const outcome = await runInitializer(child, ctx, `${field}.composite.initializer[${index}]`);
        metrics.push(...outcome.metrics);
        gitLocations.push(...outcome.gitLocations);
        contentOwned &&= outcome.contentOwned === true;
        if (outcome.source !== 'from-other') source = outcome.source;
      }
      const sum = metrics.reduce((total, m) => total + m.bytes, 0);
      metrics.push({ type: 'composite', durationMs: Math.round(performance.now() - started), bytes: sum });
      return { metrics, source, gitLocations, contentOwned };
    }
    case 'prebuild':
      return runPrebuild(spec, ctx, field);
  }
}

/**
 * Restores the prebuild snapshot, then brings each git checkout to its target (local changes of the
 * prebuild are stashed and popped back; on conflict the checkout is reset). If the snapshot is missing or
 * cannot be restored, the directory is wiped and the git initializers run from scratch.
 */
async function runPrebuild(
  spec: Extract<InitializerSpec, { kind: 'prebuild' }>,
  ctx: InitializerContext,
  field: string,
): Promise<InitializerOutcome> {
  const started = performance.now();
  const metrics: InitializerMetric[] = [];
  let restored = false;
  if (spec.snapshot) {
    try {
      const backups = requireBackups(ctx, 'restore a prebuild');
      const { metric } = await timed('snapshot', async () => {
        const stats = await backups.restoreSnapshot(
          ctx.root,
          spec.snapshot as string,
          `${field}.prebuild.prebuild.snapshot`,
          restoreOptions(ctx),
        );
        return { value: undefined, bytes: stats.size };
      });
      metrics.push(metric);
      restored = true;
    } catch (error) {
      if (isWorkbayError(error, 'invalid-argument') && String(error.message).startsWith(`${field}.`)) throw error;
      ctx.logger.warn(
        { err: errorMessage(error), snapshot: spec.snapshot },
        'prebuild snapshot unusable; falling back to the git initializers',
      );
      await emptyRoot(ctx.root);
    }
  }
  const gitLocations: string[] = [];
  let source: ContentSource = restored ? 'from-prebuild' : 'from-other';
  for (const [index, git] of spec.git.entries()) {
    const gitField = `${field}.prebuild.git[${index}]`;
    if (!restored) {
      const { value, metric } = await timed('git', async () => {
        const result = await runGitInitializer(git, ctx, gitField);
        return { value: result, bytes: 0 };
      });
      metrics.push(metric);
      gitLocations.push(value.location);
      continue;
    }
    const { metric } = await timed('git', async () => {
      const moved = await updatePrebuildCheckout(git, ctx, gitField);
      if (moved) source = 'from-other';
      return { value: undefined, bytes: 0 };
    });
    metrics.push(metric);
    gitLocations.push(git.checkoutLocation);
  }
  // New commits on top of the prebuild's checkout can bring what a clone of them would have been refused for (R2).
  if (restored && spec.git.length > 0) await assertCheckoutArchivable(ctx);
  const sum = metrics.reduce((total, m) => total + m.bytes, 0);
  metrics.push({ type: 'prebuild', durationMs: Math.round(performance.now() - started), bytes: sum });
  return { metrics, source, gitLocations };
}

/** Returns true when HEAD moved to a different commit. */
async function updatePrebuildCheckout(
  spec: GitInitializerSpec,
  ctx: InitializerContext,
  field: string,
): Promise<boolean> {
  const location = await safeLocation(ctx.root, spec.checkoutLocation, `${field}.checkout_location`);
  const probe = await ctx.git.tryRun(['rev-parse', 'HEAD'], workingCopyOptions(ctx, location));
  if (probe.code !== 0) {
    ctx.logger.warn({ location: spec.checkoutLocation }, 'prebuild has no working copy here; cloning');
    await runGitInitializer(spec, ctx, field);
    return true;
  }
  const before = probe.stdout.trim();
  const creds = await new GitCredentialSource(spec, ctx, field).get(ctx.signal);
  const stash = await ctx.git.run(
    ['stash', 'push', '--no-include-untracked', '-m', 'workbay-prebuild'],
    workingCopyOptions(ctx, location),
  );
  const stashed = !/No local changes to save/i.test(stash);
  await realizeCloneTarget(spec, location, ctx, creds, field);
  if (stashed) {
    const pop = await ctx.git.tryRun(['stash', 'pop'], workingCopyOptions(ctx, location));
    if (pop.code !== 0) {
      ctx.logger.warn(
        { location: spec.checkoutLocation, stderr: pop.stderr.trim() },
        'prebuild changes conflict with the target; resetting',
      );
      await ctx.git.run(['reset', '--hard', '--quiet'], workingCopyOptions(ctx, location));
    }
  }
  const after = (await ctx.git.run(['rev-parse', 'HEAD'], workingCopyOptions(ctx, location))).trim();
  return after !== before;
}

/** Top-level git working copies of restored content ('' for the root), for git status at disposal. */
export async function findGitLocations(root: string): Promise<string[]> {
  const { lstat, readdir } = await import('node:fs/promises');
  const out: string[] = [];
  try {
    if ((await lstat(join(root, '.git'))).isDirectory()) out.push('');
  } catch {
    // no repository at the root
  }
  for (const name of await readdir(root).catch(() => [] as string[])) {
    if (name.startsWith('.')) continue;
    try {
      if ((await lstat(join(root, name, '.git'))).isDirectory()) out.push(name);
    } catch {
      // not a repository
    }
  }
  return out;
}

const digestPattern = /^(sha256|sha512):([0-9a-f]+)$/;

/** Downloads each file, verifying its OCI digest; returns the bytes written. */
async function runDownloads(
  spec: Extract<InitializerSpec, { kind: 'download' }>,
  ctx: InitializerContext,
  field: string,
): Promise<number> {
  await safeLocation(ctx.root, spec.targetLocation, `${field}.target_location`);
  let total = 0;
  for (const [index, file] of spec.files.entries()) {
    const fileField = `${field}.files[${index}]`;
    const match = digestPattern.exec(file.digest);
    if (!match || match[2]!.length !== (match[1] === 'sha256' ? 64 : 128)) {
      throw new InvalidArgumentError(
        `${fileField}.digest`,
        `${quote(file.digest)} is not an OCI digest (sha256:<hex> or sha512:<hex>)`,
      );
    }
    if (file.filePath === '' || isAbsolute(file.filePath) || file.filePath.endsWith('/')) {
      throw new InvalidArgumentError(`${fileField}.file_path`, `${quote(file.filePath)} must be a relative file path`);
    }
    const relative = spec.targetLocation
      ? `${spec.targetLocation.replace(/\/+$/, '')}/${file.filePath}`
      : file.filePath;
    resolveInside(ctx.root, relative, `${fileField}.file_path`);
    const parentRelative = posix.dirname(relative) === '.' ? '' : posix.dirname(relative);
    const parent = await safeLocation(ctx.root, parentRelative, `${fileField}.file_path`);
    const destination = join(parent, posix.basename(relative));
    total += await retryWithBackoff(
      () => downloadOne(file.url, destination, match[1] as string, match[2] as string, ctx, fileField),
      {
        attempts: downloadAttempts,
        initialDelayMs: 500,
        retryable: (error) => isWorkbayError(error, 'unavailable'),
        onRetry: (error, attempt) =>
          ctx.progress?.({
            step: 'download',
            attempt: attempt + 1,
            maxAttempts: downloadAttempts,
            lastError: progressErrorText(errorMessage(error)),
          }),
        ...(ctx.signal ? { signal: ctx.signal } : {}),
      },
    );
  }
  return total;
}

/** A download that fails transiently (unavailable) is tried this often in all. */
const downloadAttempts = 3;

async function downloadOne(
  url: string,
  destination: string,
  algorithm: string,
  expected: string,
  ctx: InitializerContext,
  field: string,
): Promise<number> {
  const maxSize = ctx.download?.maxSize ?? downloadPolicyDefaults.maxSize;
  const signal = ctx.signal
    ? AbortSignal.any([ctx.signal, AbortSignal.timeout(ctx.downloadTimeoutMs)])
    : AbortSignal.timeout(ctx.downloadTimeoutMs);
  let response: GuardedResponse;
  try {
    response = await guardedGet(url, {
      ...(ctx.download ? { policy: ctx.download } : {}),
      field: `${field}.url`,
      signal,
    });
  } catch (cause) {
    // A refused destination or redirect is the request's fault: never retried.
    if (isWorkbayError(cause)) throw cause;
    throw new UnavailableError(`${field}.url: download failed: ${errorMessage(cause)}`, { cause });
  }
  const { status, body } = response;
  const ok = status >= 200 && status < 300;
  if (!ok) body.destroy();
  if (status === 404) throw new NotFoundError(`${field}.url: the server answered 404 Not Found`);
  if (status >= 500) throw new UnavailableError(`${field}.url: the server answered HTTP ${status}`);
  if (!ok) throw new FailedPreconditionError(`${field}.url: the server answered HTTP ${status}`);
  const tooLarge = (): FailedPreconditionError =>
    new FailedPreconditionError(`${field}.url: the file is larger than the limit of ${maxSize} bytes`);
  if (!response.decoded && Number(response.headers['content-length'] ?? 0) > maxSize) {
    body.destroy();
    throw tooLarge();
  }
  const temporary = join(dirname(destination), `.workbay-download-${randomBytes(6).toString('hex')}`);
  const hash = createHash(algorithm);
  let size = 0;
  const handle = await open(
    temporary,
    constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW,
    0o644,
  ).catch((error: unknown) => {
    body.destroy();
    throw error;
  });
  try {
    if (ctx.workspaceUser) await handle.chown(ctx.workspaceUser.uid, ctx.workspaceUser.gid);
    // Checked while streaming too: a missing or lying content-length must not fill the disk.
    for await (const chunk of body) {
      const buffer = chunk as Buffer;
      size += buffer.length;
      if (size > maxSize) break;
      hash.update(buffer);
      await handle.write(buffer);
    }
    if (size <= maxSize) await handle.sync();
  } catch (error) {
    await handle.close();
    await rm(temporary, { force: true });
    throw new UnavailableError(`${field}.url: download interrupted: ${errorMessage(error)}`, { cause: error });
  } finally {
    body.destroy();
  }
  await handle.close();
  if (size > maxSize) {
    await rm(temporary, { force: true });
    throw tooLarge();
  }
  if (hash.digest('hex') !== expected) {
    await rm(temporary, { force: true });
    // Never the actual digest: it would tell the requester what a URL answers (a response read back by digest).
    throw new FailedPreconditionError(
      `${field}.digest: the downloaded content does not match the expected digest ${algorithm}:${expected}`,
    );
  }
  // rename replaces a symlink at the destination instead of following it.
  await rename(temporary, destination);
  return size;
}
