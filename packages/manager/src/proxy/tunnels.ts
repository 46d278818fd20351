/**
 * Open connections through the proxy and what admitted them. A request is admitted once, but its connection can
 * outlive the admission: a keep-alive connection, a long response, a WebSocket tunnel. Each such connection is
 * registered here with the grant it was admitted under, and every status change of its workspace re-checks the
 * grant: when the workspace stops, the port is removed or made private, admission goes back to owner-only (for
 * connections that came in without the owner token) or the workspace moves to another host, the connection is
 * closed.
 *
 * @module
 */
import type { Observable, Subscription } from 'rxjs';
import { filter } from 'rxjs';
import type { WorkspaceRecord } from '../domain/types.js';
import type { Logger } from '../logger.js';

export interface Grant {
  readonly workspaceId: string;
  /** Undefined for the IDE. */
  readonly port?: number;
  /** Admitted by the owner token; otherwise because the port or the workspace was open to everybody. */
  readonly byOwner: boolean;
  /** The runtime host it was sent to. */
  readonly host: string;
}

/** Whether a connection admitted under `grant` may stay open, given the workspace's current record. */
export function grantHolds(grant: Grant, record: WorkspaceRecord | undefined): boolean {
  if (!record || record.phase !== 'running') return false;
  if (record.progress.runtimeHost !== grant.host) return false;
  let open = record.spec.admission === 'everyone';
  if (grant.port !== undefined) {
    const exposed = record.spec.ports.find((p) => p.port === grant.port);
    if (!exposed) return false;
    open ||= exposed.visibility === 'public';
  }
  return grant.byOwner || open;
}

interface Entry {
  readonly grant: Grant;
  readonly close: () => void;
}

export class TunnelRegistry {
  private readonly byWorkspace = new Map<string, Set<Entry>>();
  private subscription: Subscription | undefined;

  constructor(
    private readonly lookup: (id: string) => WorkspaceRecord | undefined,
    private readonly logger: Logger,
  ) {}

  /** Open connections (for tests and metrics). */
  count(workspaceId?: string): number {
    if (workspaceId !== undefined) return this.byWorkspace.get(workspaceId)?.size ?? 0;
    let n = 0;
    for (const set of this.byWorkspace.values()) n += set.size;
    return n;
  }

  /**
   * Registers a connection; `close` ends it. Returns the function that unregisters it (call it when the
   * connection closes by itself).
   */
  track(grant: Grant, close: () => void): () => void {
    const entry: Entry = { grant, close };
    let set = this.byWorkspace.get(grant.workspaceId);
    if (!set) this.byWorkspace.set(grant.workspaceId, (set = new Set()));
    set.add(entry);
    return () => this.remove(entry);
  }

  /** Re-checks the status changes of workspaces with open connections, until {@link unfollow}. */
  follow(status$: Observable<WorkspaceRecord>): void {
    this.unfollow();
    this.subscription = status$
      .pipe(filter((record) => this.byWorkspace.has(record.id)))
      .subscribe((record) => this.revalidate(record.id, record));
  }

  unfollow(): void {
    this.subscription?.unsubscribe();
    this.subscription = undefined;
  }

  /** Closes every connection of `workspaceId` whose grant no longer holds. Never throws (it runs on the bus). */
  revalidate(workspaceId: string, record = this.lookup(workspaceId)): void {
    const set = this.byWorkspace.get(workspaceId);
    if (!set) return;
    let closed = 0;
    for (const entry of [...set]) {
      if (grantHolds(entry.grant, record)) continue;
      this.remove(entry);
      closed += 1;
      try {
        entry.close();
      } catch (error) {
        this.logger.warn({ err: error, workspace: workspaceId }, 'cannot close a revoked proxy connection');
      }
    }
    if (closed > 0) {
      this.logger.info({ workspace: workspaceId, closed }, 'closed proxy connections whose admission was revoked');
    }
  }

  /** Closes everything (proxy shutdown). */
  closeAll(): void {
    for (const id of [...this.byWorkspace.keys()]) this.revalidate(id, undefined);
  }

  private remove(entry: Entry): void {
    const set = this.byWorkspace.get(entry.grant.workspaceId);
    if (!set) return;
    set.delete(entry);
    if (set.size === 0) this.byWorkspace.delete(entry.grant.workspaceId);
  }
}
