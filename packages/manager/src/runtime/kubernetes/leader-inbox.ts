/**
 * The leader's inbox on the Workspace objects: the stops and record changes other replicas (or `kubectl delete`)
 * wrote as desired state, each handed out once, and the answers to write back with the workspace's status.
 * Requests an earlier leader already answered (their answer is in the status) are not made twice.
 *
 * @module
 */
import type { DesiredChange, RecordRequest } from '../../core/repository.js';
import type { StopPolicy } from '../../domain/types.js';
import { refusalOf } from './follower-requests.js';
import type { RequestAcks, WorkspaceObject } from './workspace-objects.js';

const knownKinds: ReadonlySet<string> = new Set<RecordRequest['kind']>([
  'markActive',
  'setTimeout',
  'controlPort',
  'controlAdmission',
  'takeSnapshot',
  'backupWorkspace',
  'updateSshKeys',
]);

export class LeaderInbox {
  private readonly stopsSeen = new Set<string>();
  /** Per `<id>:<kind>`, the newest request handed out. */
  private readonly requestsSeen = new Map<string, string>();
  private readonly acks = new Map<string, RequestAcks>();

  /** The stop and requests of the object not handed out yet. */
  pending(id: string, object: WorkspaceObject): DesiredChange[] {
    const changes: DesiredChange[] = [];
    const stop = object.spec.stopRequested ?? (object.metadata.deletionTimestamp ? { policy: 'normally' } : undefined);
    if (stop && !this.stopsSeen.has(id)) {
      this.stopsSeen.add(id);
      changes.push({ id, type: 'stop', policy: stop.policy as StopPolicy });
    }
    for (const [kind, entry] of Object.entries(object.spec.requests ?? {})) {
      const key = `${id}:${kind}`;
      // Anyone allowed to write Workspace objects can write here: only well-formed requests of a known kind, filed
      // under their own kind, go to the leader (whose operations validate the arguments as for any RPC).
      if (!entry || typeof entry.id !== 'string' || !knownKinds.has(kind) || entry.request?.kind !== kind) continue;
      if (this.requestsSeen.get(key) === entry.id) continue;
      this.requestsSeen.set(key, entry.id);
      if (object.status?.acks?.[kind as RecordRequest['kind']]?.id === entry.id) continue;
      changes.push({ id, type: 'request', requestId: entry.id, request: entry.request });
    }
    return changes;
  }

  /** Records the answer to a request (written with the next status of the workspace). */
  answer(id: string, requestId: string, kind: RecordRequest['kind'], error?: unknown, result?: string): void {
    const answer =
      error === undefined
        ? { id: requestId, ...(result === undefined ? {} : { result }) }
        : { id: requestId, error: refusalOf(error) };
    this.acks.set(id, { ...this.acks.get(id), [kind]: answer });
  }

  /** The answers an object already carries (kept when this replica writes its status later). */
  seen(id: string, acks: RequestAcks | undefined): void {
    if (acks) this.acks.set(id, acks);
  }

  acksOf(id: string): RequestAcks | undefined {
    return this.acks.get(id);
  }

  forget(id: string): void {
    this.stopsSeen.delete(id);
    this.acks.delete(id);
    for (const key of this.requestsSeen.keys()) if (key.startsWith(`${id}:`)) this.requestsSeen.delete(key);
  }
}
