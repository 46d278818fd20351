/**
 * What happens to a workspace's processes once they run, for the local runtime: readiness, the exit of an adopted
 * wrapper (no longer the manager's child), stop (SIGTERM, then SIGKILL to the group and the cgroup at the deadline)
 * and the verdict once the leader is gone. The runtime owns the instances; this acts on them.
 */
import { UnavailableError } from '@workbay/api';
import type { PluginLogger, RuntimeEvent } from '@workbay/api';
import type { LocalRuntimeConfig } from './config.js';
import { childExitCode, describeExit } from './exit.js';
import type { LocalIsolation } from './isolation.js';
import { releaseWorkspaceNet } from './network.js';
import type { WorkspaceNetworks } from './network.js';
import type { PortAllocator } from './ports.js';
import { cgroupOf, groupIsOurs, removeCgroup } from './instance.js';
import type { Instance } from './instance.js';
import type { LogCap } from './log-cap.js';
import { groupAlive, isSameProcessAlive, signal, sleep } from './proc.js';
import { waitReady } from './readiness.js';
import type { LocalWorkspaceState } from './state.js';
import type { InstanceStore } from './store.js';

export interface SupervisorDeps {
  readonly config: LocalRuntimeConfig;
  readonly isolation: LocalIsolation;
  readonly store: InstanceStore;
  readonly logCap: LogCap;
  readonly networks: WorkspaceNetworks | undefined;
  readonly ports: PortAllocator;
  readonly logger: PluginLogger;
  /** Whether the runtime is closed: nothing is reported or watched any more. */
  readonly closed: () => boolean;
  readonly emit: (event: RuntimeEvent) => void;
  readonly stateOf: (instance: Instance) => LocalWorkspaceState;
}

export class InstanceSupervisor {
  constructor(private readonly deps: SupervisorDeps) {}

  watchReadiness(instance: Instance): void {
    const r = instance.record;
    void waitReady(r.readiness, r.host, r.idePort, instance.readyAbort.signal).then(async (ok) => {
      if (
        !ok ||
        instance.finalizing ||
        instance.status === 'exited' ||
        instance.status === 'stopping' ||
        this.deps.closed()
      ) {
        return;
      }
      r.ready = true;
      instance.status = 'running';
      this.deps.logger.info({ instanceId: r.instanceId, port: r.idePort }, 'workspace ready');
      this.deps.emit({ type: 'ready', instanceId: r.instanceId, state: this.deps.stateOf(instance) });
      // Deliberate: saved after the event, off the start's critical path (a write and an fsync): an unsaved `ready`
      // only makes a restarted runtime check readiness again. Later saves of the record queue behind this one.
      await this.deps.store
        .save(r)
        .catch((error: unknown) => this.deps.logger.error({ error: String(error) }, 'save failed'));
    });
  }

  /** Polls an adopted (not our child) wrapper for exit; faster while it is being stopped. */
  watchAdopted(instance: Instance): void {
    const tick = async (): Promise<void> => {
      instance.pollTimer = undefined;
      if (this.deps.closed() || instance.finalizing) return;
      if (await isSameProcessAlive(instance.record.pid, instance.record.startTime)) {
        const delay = instance.status === 'stopping' ? 50 : this.deps.config.exitPollIntervalMs;
        instance.pollTimer = setTimeout(() => void tick(), delay);
        return;
      }
      await this.finalize(instance);
    };
    instance.pollTimer = setTimeout(() => void tick(), 0);
  }

  /** SIGTERM to the group now; SIGKILL to the group and cgroup at the deadline (a later, shorter stop wins). */
  async terminate(instance: Instance, gracePeriodMs: number): Promise<void> {
    const r = instance.record;
    if (!r.stopRequested) {
      r.stopRequested = true;
      instance.status = 'stopping';
      instance.readyAbort.abort();
      await this.deps.store.save(r);
      this.deps.logger.info({ instanceId: r.instanceId, gracePeriodMs }, 'stopping workspace');
      if (await groupIsOurs(r)) signal(-r.pgid, 'SIGTERM');
    }
    const deadline = Date.now() + gracePeriodMs;
    if (!instance.killed && (instance.killDeadline === undefined || deadline < instance.killDeadline)) {
      instance.killDeadline = deadline;
      if (instance.killTimer) clearTimeout(instance.killTimer);
      instance.killTimer = setTimeout(() => void this.kill(instance), gracePeriodMs);
    }
    await instance.exited;
  }

  private async kill(instance: Instance): Promise<void> {
    if (instance.finalizing || instance.killed) return;
    instance.killed = true;
    const r = instance.record;
    this.deps.logger.warn({ instanceId: r.instanceId }, 'grace period over; killing workspace');
    if (await groupIsOurs(r)) signal(-r.pgid, 'SIGKILL');
    await cgroupOf(r, this.deps.isolation)
      ?.kill()
      .catch((error: unknown) =>
        this.deps.logger.warn({ instanceId: r.instanceId, error: String(error) }, 'cgroup kill'),
      );
    // A process stuck in uninterruptible sleep can outlive SIGKILL; do not wait forever for it.
    instance.killTimer = setTimeout(() => {
      if (instance.status === 'exited') return;
      this.deps.logger.error({ instanceId: r.instanceId }, 'workspace did not exit after SIGKILL');
      void this.finalize(instance, new UnavailableError(`workspace '${r.instanceId}' did not exit after SIGKILL`));
    }, this.deps.config.killTimeoutMs);
  }

  /** The leader is gone: take the rest of the tree down, collect the verdict, clean up, tell everyone. Idempotent. */
  finalize(instance: Instance, stuck?: Error): Promise<void> {
    instance.finalizing ??= (async () => {
      const r = instance.record;
      instance.readyAbort.abort();
      if (instance.pollTimer) clearTimeout(instance.pollTimer);
      if (instance.killTimer) clearTimeout(instance.killTimer);
      if (!stuck && (await groupIsOurs(r))) {
        signal(-r.pgid, 'SIGKILL');
        const until = Date.now() + this.deps.config.killTimeoutMs;
        while ((await groupAlive(r.pgid)) && Date.now() < until) await sleep(20);
      }
      // Every writer is gone: one last check brings the log under its cap, and nothing grows it any more.
      await this.deps.logCap.unwatch(r.instanceId);
      const oomKills = await removeCgroup(r, this.deps.isolation, this.deps.logger);
      if (r.net) {
        await (this.deps.networks ? this.deps.networks.release(r.net) : releaseWorkspaceNet(r.net)).catch(
          (error: unknown) =>
            this.deps.logger.warn({ instanceId: r.instanceId, error: String(error) }, 'could not remove the network'),
        );
      }
      const exitCode = (await this.deps.store.readExitCode(r.instanceId)) ?? childExitCode(instance.childExit);
      const lastLogLine = exitCode ? await this.deps.store.lastLogLine(r.instanceId) : undefined;
      const failure = r.stopRequested
        ? undefined
        : (stuck?.message ?? describeExit({ ...r, exitCode, oomKills, lastLogLine }));
      r.exit = { exitCode, failure, at: new Date().toISOString() };
      instance.status = 'exited';
      this.deps.ports.release(r.instanceId);
      // Deliberate: the verdict reaches the manager through the event below; a record that could not be saved only
      // means a restarted runtime re-reads the exit from the wrapper's exit file instead.
      await this.deps.store
        .save(r)
        .catch((error: unknown) => this.deps.logger.error({ error: String(error) }, 'save failed'));
      this.deps.logger.info({ instanceId: r.instanceId, exitCode, failure }, 'workspace process exited');
      instance.markExited();
      this.deps.emit({ type: 'exited', instanceId: r.instanceId, state: this.deps.stateOf(instance) });
    })();
    return instance.finalizing;
  }
}
