/**
 * InitWorkspace, WaitForInit and InitProgress of the content service: a workspace is registered before its
 * first await (so a concurrent start of the same id gets ALREADY_EXISTS and WaitForInit has something to wait
 * for), its state is on disk before any content is written, and the ready marker, the content's owner and the
 * lifecycle hook all come before the durable `ready` (so a restart never trusts content that was not finished:
 * an `initializing` session is marked failed, never backed up).
 */
import { chmod, lchown, mkdir, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import {
  AlreadyExistsError,
  DeadlineExceededError,
  FailedPreconditionError,
  PermissionDeniedError,
  ResourceExhaustedError,
  errorMessage,
  isWorkbayError,
} from '../errors.js';
import type { Git } from '../git/git.js';
import type { InitProgress } from '../initializer/progress.js';
import type { ContentSource } from '../initializer/types.js';
import { redactSpec } from '../initializer/types.js';
import type { HostIdAllocator } from '../session/host-ids.js';
import { ownTree } from '../util/own-tree.js';
import type { WorkspaceBackups } from './backups.js';
import { specGitLocations } from './content-checks.js';
import { contentRootMode } from './host-modes.js';
import { populateContent } from './populate.js';
import { writeReadyMarker } from './ready-marker.js';
import type { ContentPartDeps, Workspace } from './registry.js';
import type { ContentServiceOptions, InitWorkspaceResult } from './types.js';
import type { InitWorkspaceInput } from './validate.js';
import { validateInitWorkspace } from './validate.js';
import { removeTree } from '../util/remove-tree.js';

export interface WorkspaceInitializationDeps extends ContentPartDeps {
  readonly options: Pick<
    ContentServiceOptions,
    'layout' | 'diskGuard' | 'quota' | 'defaultQuotaBytes' | 'metrics' | 'initializer' | 'lifecycle' | 'backup'
  >;
  readonly backupRuns: WorkspaceBackups;
  readonly git: Git;
  readonly hostIds: HostIdAllocator | undefined;
  readonly contentLocation: (instanceId: string) => string;
}

export class WorkspaceInitialization {
  constructor(private readonly deps: WorkspaceInitializationDeps) {}

  /**
   * Content a failed final backup keeps stays on the node until a disposal succeeds, and a workspace can make its
   * backups fail (names that are not UTF-8, nesting past 1024): without a bound, one owner's stops would fill the
   * node's disk, and with it every other owner's final backups to a storage on that disk. Past
   * `backup.maxKeptPerOwner`, that owner's new workspaces are refused here; resuming a kept one (its id) still works.
   */
  private assertKeptBound(owner: string): void {
    const bound = this.deps.options.backup.maxKeptPerOwner ?? 0;
    if (bound <= 0) return;
    const kept = [...this.deps.registry.all()].filter((w) => w.state.owner === owner && w.state.keptSince);
    if (kept.length < bound) return;
    // With each one's workspace (meta) id: a resume needs both (red team round 18, L5c).
    const ids = kept
      .slice(0, 5)
      .map((w) => `'${w.state.instanceId}' of '${w.state.workspaceId}'`)
      .join(', ');
    throw new ResourceExhaustedError(
      `owner '${owner}' has ${kept.length} workspaces on this node whose final backup failed (${ids}${kept.length > 5 ? ', …' : ''}); resume one with its id and stop it once it can be backed up, before starting new ones`,
    );
  }

  /**
   * Its owner resumes kept content: writable again once the disk can back the rest of its quota (dormant content held
   * no promise), else RESOURCE_EXHAUSTED with the content as it was. Also when it is not recorded dormant: a read-only
   * remount whose record a crash lost is undone here.
   */
  private async resumeKept(ws: Workspace): Promise<void> {
    const { quota } = ws.state;
    // Disposed meanwhile (the lock was held by its disposal): nothing to resume.
    if (!quota || !this.deps.options.quota.wake || this.deps.registry.get(ws.state.instanceId) !== ws) return;
    await this.deps.options.quota.wake(ws.state.instanceId, ws.state.contentLocation, quota);
    if (ws.state.dormant) await this.deps.registry.persist(ws, { dormant: false });
  }

  async initWorkspace(input: InitWorkspaceInput): Promise<InitWorkspaceResult> {
    const { registry, options, hostIds } = this.deps;
    // Everything is checked before anything is registered or written: a refused request leaves no trace.
    validateInitWorkspace(input, {
      layout: options.layout,
      hasStorage: this.deps.backups !== undefined,
      git: this.deps.git.policy,
    });
    const existing = registry.get(input.instanceId);
    if (existing) {
      // Content kept under this id (a disposal whose final backup failed keeps it) belongs to the workspace that made
      // it: a start of another owner's or workspace's with the same id is refused, not resumed on it (ALREADY_EXISTS
      // tells the manager its own start is under way). Red team round 9 ran eve's workspace on mallory's kept content,
      // and its snapshots went to mallory's storage.
      const workspaceId = input.workspaceId || input.instanceId;
      if (existing.state.owner !== input.owner || existing.state.workspaceId !== workspaceId) {
        // PERMISSION_DENIED, so that the manager's failed start does not dispose this id (it would delete that
        // workspace's content, never backed up: red team round 9).
        // Its own owner is told which workspace it is, to resume it (red team round 18, L5c: the meta id a resume
        // needs was shown nowhere once the record was gone); another owner learns nothing about it.
        const whose = existing.state.owner === input.owner ? ` (your workspace '${existing.state.workspaceId}')` : '';
        throw new PermissionDeniedError(
          `instance id '${input.instanceId}' holds another workspace's content on this node${whose}; use a new instance id`,
        );
      }
      if (existing.state.keptSince) await registry.lock.run(input.instanceId, () => this.resumeKept(existing));
      throw new AlreadyExistsError(`workspace '${input.instanceId}' already exists on this node`);
    }
    this.assertKeptBound(input.owner);
    const now = new Date().toISOString();
    const contentLocation = this.deps.contentLocation(input.instanceId);
    const ws: Workspace = {
      state: {
        version: 1,
        instanceId: input.instanceId,
        owner: input.owner,
        workspaceId: input.workspaceId || input.instanceId,
        contentLocation,
        phase: 'initializing',
        createdAt: now,
        updatedAt: now,
        remoteStorageDisabled: input.remoteStorageDisabled,
        initializer: redactSpec(input.initializer),
        storageQuotaBytes: input.storageQuotaBytes,
        gitLocations: specGitLocations(input.initializer),
      },
      pending: new Set(),
    };
    // Registered before the first await: a concurrent InitWorkspace for the same id gets ALREADY_EXISTS, and a
    // concurrent WaitForInit waits on `ws.init` (settled in every outcome below).
    let settle!: () => void;
    ws.init = new Promise<void>((resolve) => (settle = resolve));
    ws.initAbort = new AbortController();
    registry.add(ws);
    let hostId: number | undefined;
    try {
      // Claimed node-wide (host-id-claims.ts), so after the registration: the claim is the first await. The three
      // steps are independent and each waits on the disk (a claim file, statfs, a tombstone): together, about 5 ms
      // of a start. All three settle before anything is judged, so a refusal never leaves a claim behind.
      const [claimed, space, tombstone] = await Promise.allSettled([
        hostIds?.allocate(),
        options.diskGuard.assertSpace(),
        registry.store.removeTombstone(input.instanceId),
      ]);
      if (claimed.status === 'fulfilled') hostId = claimed.value;
      for (const step of [claimed, space, tombstone]) if (step.status === 'rejected') throw step.reason;
      if (hostId !== undefined) ws.state = { ...ws.state, hostUser: { uid: hostId, gid: hostId } };
      await registry.store.save(ws.state);
    } catch (error) {
      registry.delete(input.instanceId);
      if (hostId !== undefined) await hostIds?.release(hostId).catch(() => undefined); // the first error is the one to report
      settle();
      throw error;
    }
    registry.publish();
    let result: InitWorkspaceResult | undefined;
    await registry
      .track(
        this.initialize(ws, input).then(
          (r) => {
            result = r;
          },
          (error: unknown) => {
            ws.initError = error;
          },
        ),
      )
      .finally(() => {
        // Progress describes a running initialization only.
        ws.progress = undefined;
        ws.initAbort = undefined;
        settle();
      });
    if (ws.initError !== undefined) throw ws.initError;
    return result as InitWorkspaceResult;
  }

  private async initialize(ws: Workspace, input: InitWorkspaceInput): Promise<InitWorkspaceResult> {
    const { registry, options } = this.deps;
    const started = performance.now();
    const root = ws.state.contentLocation;
    const logger = this.deps.logger.child({ instanceId: input.instanceId, workspaceId: ws.state.workspaceId });
    let source: ContentSource = 'from-other';
    const timeoutMs = options.initializer.timeoutMs ?? 0;
    const signals = [ws.initAbort?.signal, timeoutMs > 0 ? AbortSignal.timeout(timeoutMs) : undefined];
    const signal = AbortSignal.any(signals.filter((s): s is AbortSignal => s !== undefined));
    try {
      await mkdir(root, { recursive: true, mode: contentRootMode });
      const quotaBytes = input.storageQuotaBytes > 0 ? input.storageQuotaBytes : options.defaultQuotaBytes;
      if (quotaBytes > 0 && options.quota.mode !== 'none') {
        const handle = await options.quota.apply(input.instanceId, root, quotaBytes);
        await registry.persist(ws, { quota: handle });
      }
      // A clean slate: children only, the directory itself may carry the quota (mount point).
      for (const name of await readdir(root)) await removeTree(join(root, name));
      // The content directory's owner IS the workspace's host identity (isolation contract); after the quota,
      // which may have mounted an image here.
      const owner = ws.state.hostUser;
      if (owner) await lchown(root, owner.uid, owner.gid);
      // Also when the directory existed, or is an image the quota mounted here (host-modes.ts).
      await chmod(root, contentRootMode);

      const populated = await populateContent(
        {
          backups: input.remoteStorageDisabled ? undefined : this.deps.backups,
          git: this.deps.git,
          metrics: options.metrics,
          settings: options.initializer,
          logger,
          progress: (progress) => {
            ws.progress = progress;
          },
          signal,
        },
        ws.state,
        input.initializer,
      );
      // A step that took no signal (a restore) may have finished after the abort: the disposal waits for no content.
      if (signal.aborted) throw signal.reason;
      source = populated.source;
      const { metrics, gitLocations } = populated;
      const finishContent = async (): Promise<void> => {
        await writeReadyMarker(
          root,
          {
            source,
            metrics: metrics.map((m) => ({ type: m.type, durationMs: m.durationMs, bytes: m.bytes })),
            instanceId: input.instanceId,
            workspaceId: ws.state.workspaceId,
            readyAt: new Date().toISOString(),
          },
          owner,
          logger,
        );
        if (owner && !populated.contentOwned) {
          // Whatever the initializer wrote as root (or with the archive's owners) becomes the workspace's. An
          // initializer that wrote as the workspace's user (git) needs no walk.
          const owned = await ownTree(root, owner.uid, owner.gid);
          if (owned.changed > 0) logger.info({ ...owned, uid: owner.uid }, 'gave the content to the workspace user');
        }
        // A restored archive may carry its own mode for the root: the host's mode is not the content's to choose.
        await chmod(root, contentRootMode);
        // From here on, IO on the content is the workspace's (the restore above was the daemon's, unthrottled).
        if (ws.state.quota) await options.quota.limitIo?.(input.instanceId, root, ws.state.quota);
      };
      // The in-workspace service's socket is made beside the marker's fsyncs, not after them (about 6 ms of a
      // start): it lives outside the content and needs only the root's owner, set above. Nobody can reach it
      // before InitWorkspace answers (no workspace process runs yet), and a failure of either side fails the
      // start, whose disposal closes the service. The durable `ready` is written and synced beside them too, under
      // a temporary name: only its rename, after the marker is durable, makes it the session's state (an fsync less
      // on the way of every start). All settle before anything is judged, so no write of this start runs on once
      // its failure is seen.
      const [content, service, ready] = await Promise.allSettled([
        finishContent(),
        options.lifecycle?.contentReady({
          instanceId: input.instanceId,
          workspaceId: ws.state.workspaceId,
          contentLocation: root,
          ...(owner ? { hostUser: owner } : {}),
        }),
        registry.stagePersist(ws, {
          ...(populated.backupBase !== undefined ? { backupBase: populated.backupBase } : {}),
          phase: 'ready',
          init: { source, metrics, finishedAt: new Date().toISOString() },
          gitLocations,
        }),
      ]);
      const failure = [content, service, ready].find(
        (step): step is PromiseRejectedResult => step.status === 'rejected',
      );
      if (failure || ready.status === 'rejected') {
        // Deliberate: the start fails with the first error; a staged file left behind is only a stray `.tmp`.
        if (ready.status === 'fulfilled') await ready.value.discard().catch(() => undefined);
        throw failure?.reason;
      }
      await ready.value.apply();
      options.metrics.initializeSeconds.observe({ source, outcome: 'success' }, (performance.now() - started) / 1000);
      this.deps.emit({ type: 'initialized', instanceId: input.instanceId, source });
      this.deps.backupRuns.schedulePeriodic(ws);
      logger.info({ source, durationMs: Math.round(performance.now() - started) }, 'workspace content ready');
      return { contentLocation: root, source, metrics };
    } catch (thrown) {
      const error = signal.aborted ? abortedInitError(signal.reason, thrown, timeoutMs) : thrown;
      const message = errorMessage(error);
      options.metrics.initializeSeconds.observe({ source, outcome: 'failure' }, (performance.now() - started) / 1000);
      await registry
        .persist(ws, { phase: 'init-failed', failure: message })
        .catch((persistError: unknown) =>
          logger.error({ err: errorMessage(persistError) }, 'could not record the failed initialization'),
        );
      this.deps.emit({ type: 'init-failed', instanceId: input.instanceId, error: message });
      logger.warn({ err: message }, 'workspace initialization failed');
      throw error;
    }
  }

  /**
   * Resolves once initialization is done; rejects with its failure, or NOT_FOUND when the workspace is unknown
   * (or its registration failed while waiting).
   */
  async waitForInit(instanceId: string): Promise<void> {
    const { registry } = this.deps;
    let ws = registry.require(instanceId);
    while (ws.state.phase === 'initializing') {
      const waitedOn = ws;
      // Without a running init (loaded from disk; recovery marks those failed) there is nothing to wait for.
      if (ws.init) await ws.init;
      ws = registry.require(instanceId);
      if (ws === waitedOn && ws.state.phase === 'initializing') {
        throw new FailedPreconditionError(`initialization of workspace '${instanceId}' is not running on this node`);
      }
    }
    if (ws.state.phase === 'init-failed') {
      if (ws.initError !== undefined) throw ws.initError;
      throw new FailedPreconditionError(
        `initialization of workspace '${instanceId}' failed: ${ws.state.failure ?? 'unknown reason'}`,
      );
    }
  }

  /**
   * How the workspace's initialization is going: whether it still runs and what a retrying step last reported.
   * NOT_FOUND when the workspace is unknown.
   */
  initProgress(instanceId: string): { readonly initializing: boolean; readonly progress?: InitProgress } {
    const ws = this.deps.registry.require(instanceId);
    const initializing = ws.state.phase === 'initializing';
    return initializing && ws.progress ? { initializing, progress: ws.progress } : { initializing };
  }
}

/**
 * Why an aborted initialization failed, whatever its step threw on the way out (a killed git, an AbortError): a
 * disposal's own reason, or the deadline's.
 */
function abortedInitError(reason: unknown, thrown: unknown, timeoutMs: number): unknown {
  if (isWorkbayError(reason)) return reason;
  if (reason instanceof DOMException && reason.name === 'TimeoutError')
    return new DeadlineExceededError(
      `the initialization took longer than initializer.timeout (${Math.round(timeoutMs / 1000)} s) and was given up`,
      { cause: thrown },
    );
  return thrown;
}
