/**
 * The `kubernetes` workspace runtime: one pod per workspace. Tested against a fake API server only; see
 * deploy/kubernetes/README.md for the manifests and what has (not) been tried on a real cluster.
 *
 * @module
 */
export { KubernetesRuntime, apiError } from './kubernetes-runtime.js';
export type { KubernetesWorkspaceState, KubernetesRuntimeOptions } from './kubernetes-runtime.js';
export { kubernetesRuntimePlugin, kubernetesRuntimeFactory } from './plugin.js';
export { kubernetesRuntimeConfigSchema, parseKubernetesRuntimeConfig } from './config.js';
export type { KubernetesRuntimeConfig, KubernetesRuntimeConfigInput } from './config.js';
export { buildPod, podState, podName, labels as workspacePodLabels, managedBySelector } from './pods.js';
export { LeaseLeaderElector } from './leader.js';
export type { LeaderElectionOptions } from './leader.js';
export { createKubernetesControlPlane } from './control-plane.js';
export type { ControlPlaneOptions, KubernetesControlPlane } from './control-plane.js';
export { KubernetesWorkspaceRepository } from './workspace-repository.js';
export type { KubernetesRepositoryOptions } from './workspace-repository.js';
export {
  objectNameOf,
  secretNameOf,
  workspaceResource,
  finalBackupFinalizer,
  instanceIdAnnotation,
} from './workspace-objects.js';
export type { WorkspaceObject, WorkspaceSecrets } from './workspace-objects.js';
export { Informer } from './informer.js';
export type { InformerOptions } from './informer.js';
export type { DesiredChange, ReplicatedRepository, WorkspaceRepository } from '../../core/repository.js';
