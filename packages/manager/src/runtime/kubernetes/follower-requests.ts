/**
 * A follower's side of the replicated repository: it records a change as desired state on the workspace's object
 * and waits until the leader's status shows it acted (the stop under way, the request answered), bounded; the
 * leader's refusal comes back as the same Workbay error.
 *
 * @module
 */
import { randomUUID } from 'node:crypto';
import { NotFoundError, UnavailableError, createWorkbayError, isWorkbayError } from '@workbay/api';
import { Subject } from 'rxjs';
import type { RecordRequest } from '../../core/repository.js';
import type { StopPolicy, WorkspaceRecord } from '../../domain/types.js';
import type { WorkspaceObjectsApi } from './workspace-api.js';
import type { RequestAcks, WorkspaceObject } from './workspace-objects.js';

type Status = NonNullable<WorkspaceObject['status']>;

export interface FollowerRequestsOptions {
  readonly api: WorkspaceObjectsApi;
  /** What this replica knows of a workspace: its record and the newest object's status. */
  readonly lookup: (id: string) => { readonly record?: WorkspaceRecord; readonly status?: Status };
  readonly leaderWaitMs: number;
}

/** Requests whose answer takes as long as a content operation (an upload), not a record change. */
const contentKinds: ReadonlySet<RecordRequest['kind']> = new Set(['takeSnapshot', 'backupWorkspace', 'updateSshKeys']);

export class FollowerRequests {
  private readonly changed = new Subject<void>();

  constructor(private readonly options: FollowerRequestsOptions) {}

  /** Something this replica knows changed: waits check again. */
  notify(): void {
    this.changed.next();
  }

  close(): void {
    this.changed.complete();
  }

  /** Asks the leader to stop a workspace; resolves once it is stopping. */
  async requestStop(id: string, policy: StopPolicy): Promise<void> {
    try {
      const stopRequested = { policy, at: new Date().toISOString() };
      await this.options.api.patchSpec(id, { stopRequested }, 'requesting a stop');
    } catch (error) {
      if (isWorkbayError(error, 'not-found')) return;
      throw error;
    }
    await this.awaitLeader(id, (status) => status.phase === 'stopping' || status.phase === 'stopped', 'stop it');
  }

  /** Asks the leader to make a change; resolves with its result, rejects with its refusal. */
  async request(id: string, request: RecordRequest): Promise<string | undefined> {
    const requestId = randomUUID();
    try {
      await this.options.api.patchSpec(id, { requests: { [request.kind]: { id: requestId, request } } }, request.kind);
    } catch (error) {
      if (isWorkbayError(error, 'not-found')) throw new NotFoundError(`workspace ${id} not found`);
      throw error;
    }
    // Snapshots and backups take as long as the upload: the wait is the content operations' own bound.
    const waitMs = contentKinds.has(request.kind) ? 30 * 60_000 : undefined;
    const acked = (status: Status): boolean => status.acks?.[request.kind]?.id === requestId;
    await this.awaitLeader(id, acked, `answer ${request.kind}`, waitMs);
    const answer = this.options.lookup(id).status?.acks?.[request.kind];
    if (answer?.error) throw createWorkbayError(answer.error.code, answer.error.message, { field: answer.error.field });
    return answer?.result;
  }

  /** Resolves once the object's status satisfies `done`; UNAVAILABLE when no leader acted in time. */
  awaitLeader(id: string, done: (status: Status) => boolean, what: string, waitFor?: number): Promise<WorkspaceRecord> {
    const waitMs = waitFor ?? this.options.leaderWaitMs;
    return new Promise<WorkspaceRecord>((resolve, reject) => {
      const check = (): void => {
        const { record, status } = this.options.lookup(id);
        if (record && status && done(status)) {
          cleanup();
          resolve(record);
        }
      };
      const subscription = this.changed.subscribe(check);
      const timer = setTimeout(() => {
        cleanup();
        const message = `no leading manager acted on workspace ${id} within ${waitMs} ms; it will ${what} once elected`;
        reject(new UnavailableError(message));
      }, waitMs);
      const cleanup = (): void => {
        clearTimeout(timer);
        subscription.unsubscribe();
      };
      check();
    });
  }
}

/** A refusal as the follower re-creates it: the code and message of a Workbay error, bounded; others are internal. */
export function refusalOf(error: unknown): NonNullable<RequestAcks['markActive']>['error'] {
  if (isWorkbayError(error)) {
    const field = (error as { field?: string }).field;
    const reason = (error as { reason?: string }).reason;
    return { code: error.code, message: (reason ?? error.message).slice(0, 1024), ...(field ? { field } : {}) };
  }
  return { code: 'internal', message: 'the leading manager failed to apply the change' };
}
