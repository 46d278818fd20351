/**
 * @module
 * The public test kit for Workbay and its plugins: real-server launchers (MinIO, fake-gcs-server, a Kubernetes
 * API server with etcd, and a kubelet simulator for it), the storage conformance suite every `RemoteStorage` backend must pass, git fixtures (bare
 * repos over file:// and smart HTTP), and assertions for status streams.
 *
 * ```ts
 * import { startMinio, runStorageConformance } from '@workbay/testing';
 * import { MinioStorage } from '@workbay/storage-minio';
 *
 * runStorageConformance('minio', async () => {
 *   const server = await startMinio();
 *   const storage = new MinioStorage({ endpoint: server.endpoint, accessKey: server.accessKey, secretKey: server.secretKey });
 *   return { storage, cleanup: () => server.stop() };
 * });
 * ```
 */
export type {
  TestServer,
  TestServerName,
  MinioServer,
  FakeGcsServer,
  LaunchOptions,
  MinioLaunchOptions,
} from './launcher.js';
export {
  testServerVersions,
  TestServerMissingError,
  toolsDir,
  findServerBinary,
  freePort,
  startMinio,
  startFakeGcs,
} from './launcher.js';
export type {
  GitFileContent,
  GitFiles,
  GitCommitSpec,
  GitBranchSpec,
  GitFixtureOptions,
  GitFixture,
  GitHttpServerOptions,
  GitHttpServer,
} from './git-fixtures.js';
export { isolatedGitEnv, createGitFixture, startGitHttpServer } from './git-fixtures.js';
export type { SubscribableLike, StreamSource, ExpectPhasesOptions } from './streams.js';
export { StreamExpectationError, collectUntil, defaultPhaseOf, expectPhases } from './streams.js';
export type {
  ConformanceBackend,
  ConformanceFactory,
  ConformanceCapabilities,
  StorageConformanceOptions,
} from './conformance.js';
export { runStorageConformance, conformanceLargeObjectMiB } from './conformance.js';
export type { GeneratedStream, GenerateOptions } from './data.js';
export { MiB, generateStream, digestStream, sha256Of, readAll } from './data.js';
export type { TestEnvironmentOptions } from './environment.js';
export { TestEnvironment } from './environment.js';
export type {
  KubernetesClusterOptions,
  KubernetesTestCluster,
  KubernetesApplyOptions,
  KubernetesContentType,
  KubernetesObject,
  KubernetesRequestOptions,
  KubernetesResponse,
  KubernetesWatch,
  KubernetesWatchEvent,
  KubernetesWatchOptions,
  KubeletSimulator,
  KubeletSimulatorOptions,
  KubeletPodFailure,
  SimulatedDaemon,
  SimulatedPod,
} from './kubernetes/index.js';
export {
  startKubernetesCluster,
  startKubeletSimulator,
  loadKustomization,
  parseManifests,
  KubernetesApiError,
} from './kubernetes/index.js';
