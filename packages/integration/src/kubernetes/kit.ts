/**
 * TEST ONLY: what the Kubernetes specs share: waiting for phases on a replica, and a Subscribe client that keeps
 * every update it receives (with the time it arrived) for checks of order, completeness and delay.
 */
import type { Subscription } from 'rxjs';
import { workspacePhase, wsman } from '@workbay/api';
import type { WorkspaceManagerClient, WorkspacePhase } from '@workbay/api';

export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

export const phaseOf = (status: wsman.WorkspaceStatus | undefined): WorkspacePhase | undefined =>
  status ? workspacePhase.fromProto(status.phase) : undefined;

/** Polls DescribeWorkspace until the workspace is in `phase` (or STOPPED, which ends every wait). */
export async function waitForPhase(
  client: WorkspaceManagerClient,
  id: string,
  phase: WorkspacePhase,
  timeoutMs = 120_000,
): Promise<wsman.WorkspaceStatus> {
  const deadline = Date.now() + timeoutMs;
  let last: wsman.WorkspaceStatus | undefined;
  while (Date.now() < deadline) {
    last = (await client.describeWorkspace({ id }).catch(() => ({ status: undefined }))).status;
    const current = phaseOf(last);
    if (current === phase || current === 'stopped') return last!;
    await sleep(100);
  }
  throw new Error(`workspace ${id} did not reach ${phase}; last: ${phaseOf(last)} ${last?.conditions?.failed ?? ''}`);
}

/** Like {@link waitForPhase}, but anything other than `phase` fails with the workspace's own reason. */
export async function expectPhase(
  client: WorkspaceManagerClient,
  id: string,
  phase: WorkspacePhase,
  timeoutMs?: number,
): Promise<wsman.WorkspaceStatus> {
  const status = await waitForPhase(client, id, phase, timeoutMs);
  if (phaseOf(status) !== phase) {
    throw new Error(`workspace ${id} ended ${phaseOf(status)} instead of ${phase}: ${status.conditions?.failed}`);
  }
  return status;
}

export interface ReceivedUpdate {
  readonly status: wsman.WorkspaceStatus;
  /** Date.now() when the update arrived. */
  readonly at: number;
}

/** A Subscribe stream on one replica that records every status update. */
export class UpdateRecorder {
  readonly updates: ReceivedUpdate[] = [];
  error: unknown;
  /** `<id> <phase>` → when that phase of that workspace first arrived. */
  private readonly firstArrivals = new Map<string, number>();
  private readonly subscription: Subscription;

  constructor(client: WorkspaceManagerClient, request: Partial<wsman.SubscribeRequest> = {}) {
    this.subscription = client.subscribe$(request).subscribe({
      next: (update) => {
        if (!update.status) return;
        const at = Date.now();
        this.updates.push({ status: update.status, at });
        const key = `${update.status.id} ${phaseOf(update.status)}`;
        if (!this.firstArrivals.has(key)) this.firstArrivals.set(key, at);
      },
      error: (error: unknown) => (this.error = error),
    });
  }

  /** When `phase` of workspace `id` first arrived on this stream. */
  firstAt(id: string, phase: WorkspacePhase): number | undefined {
    return this.firstArrivals.get(`${id} ${phase}`);
  }

  /** The updates of one workspace, in arrival order. */
  of(id: string): wsman.WorkspaceStatus[] {
    return this.updates.filter((u) => u.status.id === id).map((u) => u.status);
  }

  /** The phases one workspace went through as this stream saw them (repeats of the same phase folded). */
  phases(id: string): WorkspacePhase[] {
    return this.of(id)
      .map((s) => phaseOf(s)!)
      .filter((p, i, all) => p !== all[i - 1]);
  }

  /** Resolves once the stream delivered an update for `id` that satisfies `until` (polls; the stream is live). */
  async waitFor(id: string, until: (s: wsman.WorkspaceStatus) => boolean, timeoutMs = 120_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!this.of(id).some(until)) {
      if (this.error) throw new Error(`the Subscribe stream failed: ${String(this.error)}`);
      if (Date.now() > deadline) {
        throw new Error(`the Subscribe stream saw no matching update of ${id}; phases: ${this.phases(id).join(',')}`);
      }
      await sleep(50);
    }
  }

  close(): void {
    this.subscription.unsubscribe();
  }
}

export const isPhase =
  (phase: WorkspacePhase) =>
  (s: wsman.WorkspaceStatus): boolean =>
    phaseOf(s) === phase;

export { wsman };
