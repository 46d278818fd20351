// The Kubernetes part of the kit: a real API server for tests (cluster.ts) and a simulated kubelet (kubelet.ts).
export type { KubernetesClusterOptions, KubernetesTestCluster } from './cluster.js';
export { startKubernetesCluster } from './cluster.js';
export type { KubernetesApplyOptions } from './apply.js';
export { loadKustomization, parseManifests } from './apply.js';
export type {
  KubernetesContentType,
  KubernetesObject,
  KubernetesRequestOptions,
  KubernetesResponse,
  KubernetesWatch,
  KubernetesWatchEvent,
  KubernetesWatchOptions,
} from './client.js';
export { KubernetesApiError } from './client.js';
export type {
  KubeletSimulator,
  KubeletSimulatorOptions,
  KubeletPodFailure,
  SimulatedDaemon,
  SimulatedPod,
} from './kubelet.js';
export { startKubeletSimulator } from './kubelet.js';
