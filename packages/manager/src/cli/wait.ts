import type { Subscription } from 'rxjs';
import type { wsman } from '@workbay/api';
import type { CliContext } from './context.js';
import { CliError, ExitCode } from './exit-codes.js';
import { phaseOf, seconds } from './format.js';
import { PhaseProgress } from './progress.js';

/** What a wait makes of one status: keep waiting, done, or failed with a reason. */
export type Verdict = { readonly done: true } | { readonly failed: string } | undefined;

/** RUNNING is the goal; STOPPING/STOPPED on the way means the start failed. */
export function untilRunning(status: wsman.WorkspaceStatus): Verdict {
  const phase = phaseOf(status);
  if (phase === 'running') return { done: true };
  if (phase === 'stopping' || phase === 'stopped') {
    return { failed: status.conditions?.failed || status.conditions?.timeout || `the workspace went to ${phase}` };
  }
  return undefined;
}

export function untilStopped(status: wsman.WorkspaceStatus): Verdict {
  return phaseOf(status) === 'stopped' ? { done: true } : undefined;
}

/**
 * Follows the workspace's updates on Subscribe until `verdict` decides, showing progress on stderr.
 * Subscribe is opened first, then `kick` runs (the call that sets things in motion), and its result (a fresh
 * status, when it has one) is fed in too, so an update that raced the subscription is never missed.
 */
export async function follow(
  ctx: CliContext,
  target: { readonly id: string; readonly metaId?: string },
  verdict: (status: wsman.WorkspaceStatus) => Verdict,
  kick: () => Promise<wsman.WorkspaceStatus | undefined>,
): Promise<wsman.WorkspaceStatus> {
  const progress = new PhaseProgress(ctx.io.stderr, target.id);
  let subscription: Subscription | undefined;
  let timer: NodeJS.Timeout | undefined;
  let onAbort: (() => void) | undefined;
  let lastVersion = -1;
  try {
    return await new Promise<wsman.WorkspaceStatus>((resolve, reject) => {
      const consider = (status: wsman.WorkspaceStatus | undefined): void => {
        if (!status || status.id !== target.id || status.statusVersion < lastVersion) return;
        lastVersion = status.statusVersion;
        progress.update(phaseOf(status));
        progress.note(status.message);
        const v = verdict(status);
        if (v && 'done' in v) resolve(status);
        else if (v) reject(new CliError(`workspace ${target.id} failed: ${v.failed}`, ExitCode.workspaceFailed));
      };
      subscription = ctx.client
        .subscribe$({ mustMatch: target.metaId ? { metaId: target.metaId } : undefined })
        .subscribe({
          next: (response) => consider(response.status),
          error: (error: unknown) => reject(error),
          complete: () => reject(new CliError('the manager ended the status stream', ExitCode.unavailable)),
        });
      timer = setTimeout(
        () =>
          reject(
            new CliError(`timed out after ${seconds(ctx.waitTimeoutMs)} waiting for ${target.id}`, ExitCode.timedOut),
          ),
        ctx.waitTimeoutMs,
      );
      onAbort = () => reject(new CliError('interrupted', ExitCode.interrupted));
      ctx.io.signal?.addEventListener('abort', onAbort, { once: true });
      kick().then(consider, reject);
    }).then(
      (status) => {
        progress.done();
        return status;
      },
      (error: unknown) => {
        progress.done('gave up');
        throw error;
      },
    );
  } finally {
    subscription?.unsubscribe();
    if (timer) clearTimeout(timer);
    if (onAbort) ctx.io.signal?.removeEventListener('abort', onAbort);
  }
}
