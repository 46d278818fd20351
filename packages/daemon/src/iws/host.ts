import { chmod, lchown, lstat, mkdir, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { assertWorkspaceId, FailedPreconditionError, silentLogger } from '@workbay/api';
import type { PluginLogger } from '@workbay/api';
import type { NamespaceOps } from '@workbay/nsinsider';
import type { DaemonMetrics } from '../health/metrics.js';
import { KeyedMutex } from '../util/concurrency.js';
import type { CgroupAccess, IwsConfig } from './context.js';
import { defaultIwsConfig } from './context.js';
import { InWorkspaceOperations } from './operations.js';
import type { IwsServerHandle } from './server.js';
import { listenIws } from './server.js';
import { createInWorkspaceService, createWorkspaceInfoService } from './service.js';
import { Trash } from './trash.js';
import type { WorkspaceProcessSource } from './workspace-process.js';
import { WorkspaceProcessLocator } from './workspace-process.js';

/** The folder of the working area that holds one socket directory per workspace (never a workspace itself). */
export const IWS_DIR = '.iws';
export const IWS_SOCKET = 'daemon.sock';
/** The root-only folder in {@link IWS_DIR} where what is taken from workspaces waits to be removed (see trash.ts). */
export const IWS_TRASH = '.trash';

/** A workspace as the in-workspace service host needs it. */
export interface IwsWorkspace {
  readonly instanceId: string;
  readonly workspaceId: string;
  readonly contentLocation: string;
}

export interface IwsHostOptions {
  readonly workingArea: string;
  /** Namespace work; the daemon passes `createNsinsiderOps()`. */
  readonly ops: NamespaceOps;
  /** Cgroup access (nsinsider's `CgroupController`); without it the cgroup RPCs answer FAILED_PRECONDITION. */
  readonly cgroups?: CgroupAccess & { readonly version?: 'v1' | 'v2' };
  readonly config?: Partial<IwsConfig>;
  readonly logger?: PluginLogger;
  /** Where a workspace's processes are (default: {@link WorkspaceProcessLocator} by its host uid). */
  readonly processes?: (workspace: IwsWorkspace, owner: { uid: number; gid: number }) => WorkspaceProcessSource;
  /** How long closing a workspace's server waits for running calls (default 2 s). */
  readonly closeGraceMs?: number;
  /** Clock of the rate limits and flood penalties (default Date.now). */
  readonly now?: () => number;
  /** Where flood penalties are counted (the daemon's `workbay_daemon_iws_penalties_total`). */
  readonly metrics?: Pick<DaemonMetrics, 'iwsPenalties'>;
}

interface Served {
  readonly handle: IwsServerHandle;
  readonly operations: InWorkspaceOperations;
}

/**
 * Serves the in-workspace service of every live workspace on a unix socket of its own,
 * `<workingArea>/.iws/<instanceId>/daemon.sock`: the directory 0700 and the socket 0600, both owned by the
 * workspace's host uid/gid (the owner of its content directory), which the runtime bind-mounts into the
 * workspace at `/.workbay`.
 *
 * Who may connect: grpc-js cannot read SO_PEERCRED, so the file modes are the peer check. Only the workspace's
 * uid (and root) can enter the directory and open the socket, and that uid belongs to that one workspace. The
 * socket lives outside the content (which the workspace can rewrite) in a root-only `.iws` folder, so a
 * workspace cannot replace another's socket or directory; inside its own directory it can only harm itself.
 *
 * Root never removes anything by path inside a workspace's directory but the one socket name (`unlink`): a
 * recursive removal there races with a workspace swapping directories for links (and deletes host files). Anything
 * else is renamed into the root-only trash beside it and removed there through held descriptors (see trash.ts).
 *
 * One grpc-js server per workspace, not one server with several unix addresses: grpc-js cannot tell a handler
 * which address a call came in on, so a shared server could not bind a call to its workspace, and it would serve
 * every service on every address (the content service on a workspace's socket). A server of its own binds the
 * service to one workspace by construction (no request field names a workspace), keeps rate limits per
 * workspace, and is closed on its own at dispose.
 */
export class IwsHost {
  private readonly servers = new Map<string, Served>();
  private readonly lock = new KeyedMutex();
  private readonly logger: PluginLogger;
  private readonly trash: Trash;
  private emptying: Promise<void> = Promise.resolve();
  private stopped = false;

  constructor(private readonly options: IwsHostOptions) {
    this.logger = (options.logger ?? silentLogger).child({ component: 'iws-host' });
    this.trash = new Trash(join(this.root, IWS_TRASH));
  }

  get root(): string {
    return join(this.options.workingArea, IWS_DIR);
  }

  socketDir(instanceId: string): string {
    return join(this.root, instanceId);
  }

  socketPath(instanceId: string): string {
    return join(this.socketDir(instanceId), IWS_SOCKET);
  }

  /** Instance ids whose socket is being served. */
  get served(): readonly string[] {
    return [...this.servers.keys()];
  }

  /**
   * Serves the workspace's socket; does nothing when it is served already. Called once the content is ready:
   * only then does the content directory carry the workspace's final owner, and the workspace's process (the
   * only client) starts after InitWorkspace answered, which waits for this.
   */
  async open(workspace: IwsWorkspace): Promise<void> {
    assertWorkspaceId(workspace.instanceId, 'id');
    await this.lock.run(workspace.instanceId, async () => {
      if (this.stopped) throw new FailedPreconditionError('the in-workspace service host is stopped');
      if (this.servers.has(workspace.instanceId)) return;
      const content = await lstat(workspace.contentLocation);
      if (!content.isDirectory()) {
        throw new FailedPreconditionError(`the content of workspace '${workspace.instanceId}' is not a directory`);
      }
      // Content owned by root or by the daemon's own user means "no identity of its own": the socket stays the
      // daemon's (a root daemon then serves nobody but root; a non-root daemon's workspaces are its trusted user).
      const selfUid = process.getuid?.() ?? 0;
      const owner = content.uid !== 0 && content.uid !== selfUid ? { uid: content.uid, gid: content.gid } : undefined;
      const dir = await this.prepareDir(workspace.instanceId, owner);
      const config = { ...defaultIwsConfig, ...this.options.config };
      const operations = new InWorkspaceOperations({
        ops: this.options.ops,
        ...(this.options.cgroups ? { cgroups: this.options.cgroups } : {}),
        workspace: this.context(workspace, owner ?? { uid: content.uid, gid: content.gid }),
        ...(this.options.config ? { config: this.options.config } : {}),
        ...(this.options.now ? { now: this.options.now } : {}),
        logger: this.logger,
        onFloodPenalty: (penalty) => this.options.metrics?.iwsPenalties.inc({ reason: penalty.reason }),
      });
      const socketPath = join(dir, IWS_SOCKET);
      const listen = () =>
        listenIws(createInWorkspaceService(operations), {
          socketPath,
          socketMode: 0o600,
          stagingDir: this.root,
          workspaceInfo: createWorkspaceInfoService(operations),
          maxConnections: config.maxConnections,
          connectionIdleMs: config.connectionIdleMs,
          flood: operations.flood,
          // Binding again after a penalty meets what the workspace may have put at the name meanwhile (see below).
          clearSocketPath: () => this.trash.removeName(socketPath),
          ...(owner ? { owner } : {}),
        });
      let handle: IwsServerHandle;
      try {
        handle = await listen();
      } catch (error) {
        // The socket is renamed over its name, which fails on a directory the workspace made there since
        // prepareDir cleared it: cleared once more (never recursively), then it is the workspace's own doing.
        const code = (error as NodeJS.ErrnoException).code;
        if (code !== 'EISDIR' && code !== 'ENOTEMPTY' && code !== 'EEXIST') throw error;
        await this.trash.removeName(socketPath);
        handle = await listen();
      }
      try {
        // Last: a fresh directory stays the daemon's alone until the socket is in place. (A kept one is the
        // workspace's already; the socket was renamed into it, which follows no link the workspace planted.)
        if (owner) await lchown(dir, owner.uid, owner.gid);
      } catch (error) {
        await handle.close(0);
        throw error;
      }
      this.servers.set(workspace.instanceId, { handle, operations });
      this.logger.info(
        { instanceId: workspace.instanceId, socket: socketPath, uid: owner?.uid ?? selfUid },
        'serving the in-workspace service',
      );
    });
  }

  /** Stops serving the workspace and removes its socket directory (dispose). */
  async remove(instanceId: string): Promise<void> {
    assertWorkspaceId(instanceId, 'id');
    await this.lock.run(instanceId, async () => {
      const served = this.servers.get(instanceId);
      this.servers.delete(instanceId);
      await served?.handle.close(this.options.closeGraceMs ?? 2000);
      // The workspace may still run with the directory mounted: it goes into root's trash whole (a rename in
      // root's `.iws`, following nothing), and is emptied there through held descriptors, never by path.
      await this.ensureRoot();
      await this.trash.moveIn(this.socketDir(instanceId));
      if (served) this.logger.info({ instanceId }, 'stopped serving the in-workspace service');
    });
    await this.emptyTrash();
  }

  /**
   * After a (re)start: serves the live workspaces again and removes the socket directories of all others (and
   * binding leftovers). A live workspace keeps its directory, so the runtime's bind mount of it stays valid and
   * the new socket appears inside the running workspace. Failures are logged per workspace.
   */
  async resume(live: readonly IwsWorkspace[]): Promise<void> {
    await this.ensureRoot();
    const ids = new Set(live.map((w) => w.instanceId));
    for (const name of await readdir(this.root)) {
      if (ids.has(name) || name === IWS_TRASH) continue;
      // Such a workspace's process may still be running with the directory mounted: into the trash, not rm -r.
      await this.trash
        .moveIn(join(this.root, name))
        .catch((error: unknown) =>
          this.logger.warn({ name, err: String(error) }, 'could not remove a stale in-workspace socket directory'),
        );
    }
    for (const workspace of live) {
      try {
        await this.open(workspace);
      } catch (error) {
        this.logger.error(
          { instanceId: workspace.instanceId, err: error instanceof Error ? error.message : String(error) },
          'could not serve the in-workspace service',
        );
      }
    }
    await this.emptyTrash();
  }

  /** Empties the trash (one run at a time); what cannot go now stays for the next run. Never throws. */
  emptyTrash(): Promise<void> {
    this.emptying = this.emptying.then(async () => {
      try {
        if (!(await this.trash.empty())) {
          this.logger.warn({ trash: this.trash.dir }, 'the in-workspace trash is not empty yet; retried later');
        }
      } catch (error) {
        this.logger.warn({ trash: this.trash.dir, err: String(error) }, 'could not empty the in-workspace trash');
      }
    });
    return this.emptying;
  }

  /** Closes every server; the directories stay (with no socket) for the next daemon to serve again. */
  async stop(): Promise<void> {
    this.stopped = true;
    await Promise.all(
      [...this.servers.keys()].map((id) =>
        this.lock.run(id, async () => {
          const served = this.servers.get(id);
          this.servers.delete(id);
          await served?.handle.close(this.options.closeGraceMs ?? 2000);
        }),
      ),
    );
  }

  private context(workspace: IwsWorkspace, owner: { uid: number; gid: number }) {
    const source =
      this.options.processes?.(workspace, owner) ??
      new WorkspaceProcessLocator({
        uid: owner.uid,
        instanceId: workspace.instanceId,
        ...(this.options.cgroups?.version ? { cgroupVersion: this.options.cgroups.version } : {}),
      });
    return {
      workspaceId: workspace.workspaceId,
      instanceId: workspace.instanceId,
      initPid: () => source.initPid(),
      cgroupPath: () => source.cgroupPath(),
      uid: owner.uid,
    };
  }

  /** `.iws` itself: root's alone (0700), so no other user reaches a socket but through its workspace's mount. */
  private async ensureRoot(): Promise<void> {
    await mkdir(this.root, { recursive: true, mode: 0o700 });
    const info = await lstat(this.root);
    if (!info.isDirectory() || info.uid !== (process.getuid?.() ?? info.uid)) {
      throw new FailedPreconditionError(`${this.root} is not a directory of the daemon's`);
    }
    await chmod(this.root, 0o700);
    await this.trash.ensure();
  }

  /**
   * The workspace's socket directory, 0700. An existing one is kept when it is a real directory with the expected
   * owner: a running workspace has it bind-mounted, and a new directory would not appear there. Anything else is
   * replaced by a fresh empty directory of the daemon's.
   */
  private async prepareDir(instanceId: string, owner: { uid: number; gid: number } | undefined): Promise<string> {
    await this.ensureRoot();
    const dir = this.socketDir(instanceId);
    const expectedUid = owner?.uid ?? process.getuid?.() ?? 0;
    // A probe: any failure means "no usable directory" and the move/mkdir below replace it (or report their own
    // error). Whatever is there goes into the trash whole: a rename in root's `.iws`, following nothing.
    const existing = await lstat(dir).catch(() => undefined);
    if (existing && !(existing.isDirectory() && existing.uid === expectedUid)) {
      await this.trash.moveIn(dir);
    }
    if (!existing || !(existing.isDirectory() && existing.uid === expectedUid)) {
      await mkdir(dir, { mode: 0o700 });
    }
    // A real directory (lstat above) inside root's own `.iws`: it cannot have been swapped for a link.
    await chmod(dir, 0o700);
    // Whatever sits at the socket's name (a stale socket, or something the workspace put there) goes: a
    // non-directory by unlink, a directory moved whole into the trash. The directory itself stays, so a running
    // workspace keeps seeing it at its mount. Never a recursive removal here: the workspace owns this directory
    // and races a path-based walk with link swaps.
    await this.trash.removeName(join(dir, IWS_SOCKET));
    return dir;
  }
}
