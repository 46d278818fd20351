/**
 * The vocabulary of the lifecycle state machine: the events that reach a workspace (requests, timeouts and the
 * outcomes of effects) and the effects a transition asks for. Plain data, so the transition function stays pure
 * and a table of tests can enumerate them.
 *
 * @module
 */
import type { RuntimeWorkspaceState } from '@workbay/api';
import type { TimeoutRule } from '../../domain/timeouts.js';
import type { GitStatusInfo, InitializerMetricsInfo, StopPolicy, StopReason } from '../../domain/types.js';

/** What the lifecycle reads of a runtime instance. */
export type RuntimeState = Pick<
  RuntimeWorkspaceState,
  'status' | 'ready' | 'host' | 'nodeName' | 'exitCode' | 'failure' | 'pid' | 'notice' | 'podName' | 'nodeIp'
> & { readonly portMap?: Readonly<Record<string, number>> };

export type LifecycleEvent =
  /** A new record was accepted, or the manager restarted: continue from wherever the record is. */
  | { readonly type: 'resume' }
  /** PENDING ends: a start slot is free (at most maxConcurrentStarts run at once). */
  | { readonly type: 'slot-acquired' }
  | { readonly type: 'port-allocated'; readonly port: number }
  | { readonly type: 'port-failed'; readonly reason: string }
  | {
      readonly type: 'content-ready';
      readonly contentDir: string;
      /** The node whose daemon holds the content (daemons per node): the workspace must run there. */
      readonly nodeName?: string;
      readonly metrics?: InitializerMetricsInfo;
    }
  | {
      readonly type: 'content-failed';
      readonly reason: string;
      /**
       * The daemon holds another workspace's content under this instance id (kept after its disposal failed) and
       * refused to hand it over: nothing of this workspace's is there to dispose, and disposing would delete the
       * other workspace's content (red team round 9).
       */
      readonly foreign?: boolean;
    }
  /** The daemon reports how initialization goes (a step retrying): shown as the status message meanwhile. */
  | { readonly type: 'content-progress'; readonly message: string }
  | { readonly type: 'ssh-keys-written' }
  | { readonly type: 'ssh-keys-failed'; readonly reason: string }
  | { readonly type: 'process-started'; readonly state: RuntimeState }
  | { readonly type: 'process-failed'; readonly reason: string }
  | { readonly type: 'runtime-ready'; readonly state: RuntimeState }
  | { readonly type: 'runtime-exited'; readonly state: RuntimeState }
  /** Recovery after a restart: the runtime still has the instance. */
  | { readonly type: 'runtime-found'; readonly state: RuntimeState }
  /** Recovery after a restart: the runtime no longer has a live instance. */
  | { readonly type: 'runtime-gone'; readonly reason: string }
  /** Recovery after a restart: the runtime could not be asked; the workspace may still run. */
  | { readonly type: 'runtime-unknown'; readonly reason: string }
  | {
      readonly type: 'stop-requested';
      readonly policy: StopPolicy;
      readonly byRequest: boolean;
      readonly reason: StopReason;
    }
  | { readonly type: 'timed-out'; readonly rule: TimeoutRule; readonly message: string }
  | { readonly type: 'process-stopped' }
  /** The process could not be stopped or killed: it may still run. */
  | { readonly type: 'kill-failed'; readonly reason: string }
  | { readonly type: 'snapshot-taken'; readonly url: string }
  | { readonly type: 'snapshot-failed'; readonly reason: string }
  | {
      readonly type: 'content-disposed';
      readonly finalBackupComplete: boolean;
      readonly gitStatus?: GitStatusInfo;
    }
  | {
      readonly type: 'dispose-failed';
      readonly backup: boolean;
      readonly notFound: boolean;
      readonly reason: string;
    }
  /** An effect failed in a way nobody foresaw (a bug): the workspace fails loudly. */
  | { readonly type: 'internal-error'; readonly reason: string };

export type LifecycleEventType = LifecycleEvent['type'];

export type LifecycleEffect =
  | { readonly type: 'acquire-slot' }
  /** Gives the start slot back, or stops waiting for one. Idempotent. */
  | { readonly type: 'release-slot' }
  | { readonly type: 'allocate-port' }
  | { readonly type: 'release-port'; readonly port: number }
  | { readonly type: 'init-content' }
  | { readonly type: 'write-ssh-keys' }
  | { readonly type: 'start-process' }
  /** Ends the start effects still running, then stops the process within the grace period (killing it if needed). */
  | { readonly type: 'stop-process'; readonly graceMs: number }
  /** A more urgent stop while stopping: passes the shorter grace period on to the runtime. */
  | { readonly type: 'escalate-stop'; readonly graceMs: number }
  /** Stopping was given up (timeout): cancel every effect in flight and kill the process. */
  | { readonly type: 'force-kill' }
  | { readonly type: 'take-snapshot' }
  | {
      readonly type: 'dispose-content';
      readonly backup: boolean;
      /** An interrupted start may have left an InitWorkspace running on the daemon: wait for it first. */
      readonly mayBeInitializing: boolean;
      /** Whether the stop's final result is complete once disposal succeeds (backup taken, or prebuild snapshot). */
      readonly finalBackup: boolean;
    };

export type LifecycleEffectType = LifecycleEffect['type'];

/** What a transition needs besides the record and the event: the clock and the stop grace periods. */
export interface TransitionContext {
  readonly now: number;
  readonly graceMs: Readonly<Record<StopPolicy, number>>;
}

export interface TransitionResult<R> {
  readonly record: R;
  readonly effects: readonly LifecycleEffect[];
}
