/**
 * The manager's control plane on Kubernetes: the Workspace-object repository and the Lease that decides which
 * replica leads. `startManager` uses it when `runtime.kind` is `kubernetes` and `runtime.controlPlane.store` is
 * `kubernetes` (the default there).
 *
 * @module
 */
import os from 'node:os';
import type { KubeConfig } from '@kubernetes/client-node';
import type { WorkspaceRecord } from '../../domain/types.js';
import type { Logger } from '../../logger.js';
import { parseKubernetesRuntimeConfig } from './config.js';
import { kubeConfigFor } from './kubernetes-runtime.js';
import { LeaseLeaderElector } from './leader.js';
import { KubernetesWorkspaceRepository } from './workspace-repository.js';

export interface KubernetesControlPlane {
  readonly repository: KubernetesWorkspaceRepository;
  readonly elector: LeaseLeaderElector;
  /** Starts competing for the lease (after the core subscribed to `elector.isLeader$`). */
  startElection(): void;
  /** Gives the lease up (another replica takes over at once). Call after the core closed. */
  stop(): Promise<void>;
}

export interface ControlPlaneOptions {
  readonly historySize: number;
  readonly logger: Logger;
  readonly onChange?: (previous: WorkspaceRecord, next: WorkspaceRecord) => void;
  /** A ready-made connection (tests); by default the one the runtime section describes. */
  readonly kubeConfig?: KubeConfig;
}

/** The control plane for a `kubernetes` runtime section, or undefined when it keeps its state in files. */
export function createKubernetesControlPlane(
  runtimeSection: unknown,
  options: ControlPlaneOptions,
): KubernetesControlPlane | undefined {
  const config = parseKubernetesRuntimeConfig(runtimeSection);
  const plane = config.controlPlane;
  if (plane.store !== 'kubernetes') return undefined;
  const kubeConfig = options.kubeConfig ?? kubeConfigFor(config);
  const repository = new KubernetesWorkspaceRepository({
    kubeConfig,
    namespace: config.namespace,
    historySize: options.historySize,
    logger: options.logger.child({ component: 'workspace-objects' }),
    onChange: options.onChange,
    leaderWaitMs: plane.leaderWaitMs,
  });
  const elector = new LeaseLeaderElector({
    kubeConfig,
    namespace: config.namespace,
    leaseName: plane.leaseName,
    identity: plane.identity ?? process.env['POD_NAME'] ?? os.hostname(),
    leaseDurationSeconds: plane.leaseDurationSeconds,
    retryPeriodMs: plane.renewIntervalMs,
    logger: options.logger.child({ component: 'leader-election' }),
  });
  return {
    repository,
    elector,
    startElection: () => elector.start(),
    stop: () => elector.stop(),
  };
}
