/**
 * The `kubernetes` workspace runtime: one pod per workspace, daemons found per node, leader election over a Lease.
 * Proven against a real API server (kube-apiserver, see deploy/kubernetes/README.md).
 *
 * @module
 */
export { KubernetesRuntime, apiError, kubeConfigFor } from './kubernetes-runtime.js';
export type { KubernetesWorkspaceState, KubernetesRuntimeOptions } from './kubernetes-runtime.js';
export { kubernetesRuntimePlugin, kubernetesRuntimeFactory } from './plugin.js';
export {
  defaultProxyPodLabels,
  defaultWorkspaceUid,
  kubernetesRuntimeConfigSchema,
  parseKubernetesRuntimeConfig,
} from './config.js';
export type { KubernetesRuntimeConfig, KubernetesRuntimeConfigInput } from './config.js';
export {
  buildPod,
  builtInDefaultImage,
  containerEnv,
  containerSecurityContext,
  podSecurityContext,
  imageFor,
  podName,
  labels as workspacePodLabels,
  managedBySelector,
} from './pods.js';
export {
  blockedByDefault,
  ensureNetworkPolicies,
  networkPolicyLabels,
  networkPolicyNames,
  networkPolicySelector,
  workspaceNetworkPolicies,
} from './network-policies.js';
export type { NetworkPolicyChanges } from './network-policies.js';
export { assessPod, podState } from './pod-state.js';
export type { PodAssessment, PodStateOptions } from './pod-state.js';
export { ObjectWatch } from './object-watch.js';
export type { ObjectWatchOptions, WatchEventType } from './object-watch.js';
export { LeaseLeaderElector } from './leader.js';
export type { LeaderElectionOptions } from './leader.js';
export { createKubernetesControlPlane, startNodeRoutingContent } from './control-plane.js';
export type { ControlPlaneOptions, KubernetesControlPlane, NodeContentOptions } from './control-plane.js';
export { KubernetesWorkspaceRepository } from './workspace-repository.js';
export type { KubernetesRepositoryOptions } from './workspace-repository.js';
export {
  objectNameOf,
  secretNameFor,
  workspaceResource,
  finalBackupFinalizer,
  instanceIdAnnotation,
} from './workspace-objects.js';
export type { WorkspaceObject, WorkspaceSecrets } from './workspace-objects.js';
export { Informer } from './informer.js';
export type { InformerOptions } from './informer.js';
export type { DesiredChange, ReplicatedRepository, WorkspaceRepository } from '../../core/repository.js';
export { NodeDaemons, daemonEndpointOf, daemonLabelSelector, daemonPortName } from './node-daemons.js';
export type { DaemonEndpoint, NodeDaemonsOptions } from './node-daemons.js';
