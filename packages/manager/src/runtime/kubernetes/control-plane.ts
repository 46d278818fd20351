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
import { NodeRoutingContentService } from '../../content/node-daemons.js';
import type { DaemonClientTls } from '../../content/daemon-content-service.js';
import { LeaseLeaderElector } from './leader.js';
import { NodeDaemons } from './node-daemons.js';
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
    maxWriteBacklog: plane.maxWriteBacklog,
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

export interface NodeContentOptions {
  readonly tls?: DaemonClientTls;
  readonly logger: Logger;
  /** The node of an instance as the records know it (after a restart, before any daemon was asked). */
  readonly nodeOf: (instanceId: string) => string | undefined;
  readonly kubeConfig?: KubeConfig;
}

/**
 * The content service of a manager on Kubernetes: every node runs its own daemon (the DaemonSet), found through
 * its pod; new content is placed on the least used node with a ready daemon, and the workspace's pod then runs
 * on that node (`RuntimeWorkspaceSpec.nodeName`).
 */
export async function startNodeRoutingContent(
  runtimeSection: unknown,
  options: NodeContentOptions,
): Promise<{ readonly content: NodeRoutingContentService; close(): Promise<void> }> {
  const config = parseKubernetesRuntimeConfig(runtimeSection);
  const kubeConfig = options.kubeConfig ?? kubeConfigFor(config);
  const daemons = await NodeDaemons.startFor(config, kubeConfig, options.logger.child({ component: 'node-daemons' }));
  const content = new NodeRoutingContentService({ daemons, tls: options.tls, nodeOf: options.nodeOf });
  return {
    content,
    close: async () => {
      content.close();
      await daemons.close();
    },
  };
}
