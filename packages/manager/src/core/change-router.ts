/**
 * Where a change to a workspace is made. On the leader (or a manager alone) it is made here, through the record and
 * content operations. On a follower of a replicated store it is recorded on the workspace's object and answered
 * once the leader made it; the leader's side turns those desired changes (and adoptions and stops) into lifecycle
 * events and answers.
 *
 * @module
 */
import { FailedPreconditionError } from '@workbay/api';
import type { StopPolicy, StopReason } from '../domain/types.js';
import { validateInstanceId } from '../domain/validation.js';
import type { ContentOperations } from './content-operations.js';
import type { LifecycleEvent } from './lifecycle/events.js';
import type { RecordOperations } from './record-operations.js';
import type { DesiredChange, RecordRequest, ReplicatedRepository } from './repository.js';

export interface ChangeRouterDeps {
  readonly recordOps: RecordOperations;
  readonly contentOps: ContentOperations;
  /** The shared store, when there are replicas. */
  readonly replicated?: ReplicatedRepository;
  /** Whether leadership decides who acts (several replicas) or this manager always does. */
  readonly elected: boolean;
  readonly isLeading: () => boolean;
  readonly dispatch: (id: string, event: LifecycleEvent) => void;
}

export class ChangeRouter {
  constructor(private readonly deps: ChangeRouterDeps) {}

  /** Makes the change here when this replica leads, else hands it to the leader; resolves with its result. */
  async applyOrForward(id: string, request: RecordRequest): Promise<string | undefined> {
    const { replicated, isLeading, elected } = this.deps;
    if (!isLeading() && replicated) {
      validateInstanceId(id, 'id');
      return replicated.request(id, request);
    }
    // With leadership but no shared store, a follower has nobody to hand the change to.
    if (!isLeading() && elected) {
      throw new FailedPreconditionError(
        `${request.kind}: this manager replica is not leading; send it to the leading replica`,
      );
    }
    return (await this.apply(id, request)) ?? undefined;
  }

  /** The leader's side: a desired change another replica (or `kubectl`) wrote, acted on and answered. */
  act(change: DesiredChange): void {
    const { dispatch, replicated } = this.deps;
    if (change.type === 'adopt') return dispatch(change.id, { type: 'resume' });
    if (change.type === 'stop') {
      const reason = stopReasonOf(change.policy);
      return dispatch(change.id, { type: 'stop-requested', policy: change.policy, byRequest: true, reason });
    }
    const { id, requestId, request } = change;
    Promise.resolve()
      .then(() => this.apply(id, request))
      .then(
        (result) => replicated?.acknowledge(id, requestId, request.kind, undefined, result ?? undefined),
        // Deliberate: the refusal is the answer; the follower that asked returns it to its client.
        (error: unknown) => replicated?.acknowledge(id, requestId, request.kind, error),
      );
  }

  private apply(id: string, request: RecordRequest): void | Promise<string | void> {
    const { recordOps, contentOps } = this.deps;
    switch (request.kind) {
      case 'markActive':
        return recordOps.markActive(id, request);
      case 'setTimeout':
        return recordOps.setTimeout(id, request.timeout, request.duration);
      case 'controlPort':
        return recordOps.controlPort(id, request.expose, request.port);
      case 'controlAdmission':
        return recordOps.controlAdmission(id, request.level);
      case 'takeSnapshot':
        return contentOps.takeSnapshot(id, request.returnImmediately);
      case 'backupWorkspace':
        return contentOps.backupWorkspace(id);
      case 'updateSshKeys':
        return contentOps.updateSshKeys(id, request.keys);
    }
  }
}

export function stopReasonOf(policy: StopPolicy): StopReason {
  return policy === 'abort' ? 'aborted' : 'regular-stop';
}
