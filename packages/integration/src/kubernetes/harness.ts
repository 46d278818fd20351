/**
 * TEST ONLY: Workbay on Kubernetes, end to end. A real etcd + kube-apiserver with every manifest of
 * deploy/kubernetes applied; the `workbay-manager` ServiceAccount's token (TokenRequest) in the kubeconfig the
 * managers use, so a missing RBAC rule fails the tests; two simulated nodes, each with a real daemon (own working
 * area and state dir, one shared fs storage: the "remote" storage backups and snapshots go to); and N manager
 * replicas as child processes of the built `workbay up` (so SIGKILL is real) competing for the Lease.
 */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { createWorkspaceManagerClient } from '@workbay/api';
import type { WorkspaceManagerClient } from '@workbay/api';
import { DaemonSupervisor, createSilentLogger, resolveManagerConfig } from '@workbay/manager';
import { loadKustomization, startKubeletSimulator, startKubernetesCluster } from '@workbay/testing';
import type { KubeletSimulator, KubernetesObject, KubernetesTestCluster } from '@workbay/testing';
import { startPodLedger } from './pod-ledger.js';
import type { PodLedger } from './pod-ledger.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const repoRoot = path.resolve(here, '../../../..');
/** The built CLI of @workbay/manager. */
export const cliMain = path.join(repoRoot, 'packages/manager/dist/cli/main.js');
export const namespace = 'workbay';
export const leaseName = 'workbay-manager-leader';
/** The image every workspace pod runs (no node pulls anything here; the kubelet is simulated). */
export const workspaceImage = 'workbay/workspace:test';

export interface KubernetesHarnessOptions {
  /** The leader's controlPlane.maxWriteBacklog (default: the manager's). */
  readonly maxWriteBacklog?: number;
  /** Manager replicas started at once (more with {@link KubernetesHarness.startReplica}); default 1. */
  readonly replicas?: number;
  /** Simulated nodes; default `node-a`, `node-b`. */
  readonly nodes?: readonly string[];
  readonly leaseDurationSeconds?: number;
  readonly renewIntervalMs?: number;
  /** Serve HTTP on every workspace pod's ports (the proxy steps need it). */
  readonly serveWorkspaces?: boolean;
  /** How long the simulated kubelet keeps a bound pod Pending (an image pull); default 0. */
  readonly podStartDelayMs?: number;
  /**
   * Start a replica again (same identity) when it exits on its own, as its Deployment would; a SIGKILL from
   * {@link Replica.kill} is not restarted.
   */
  readonly restartReplicas?: boolean;
  /** Extra top-level manager config keys. */
  readonly manager?: Record<string, unknown>;
  /** Extra keys of the manager's `runtime` section. */
  readonly runtime?: Record<string, unknown>;
  readonly logLevel?: string;
}

export interface Replica {
  readonly identity: string;
  readonly process: ChildProcess;
  readonly managerAddress: string;
  readonly proxyAddress: string;
  readonly metricsAddress: string;
  readonly client: WorkspaceManagerClient;
  stderr(): string;
  alive(): boolean;
  /** Whether the harness killed it (with {@link Replica.kill}). */
  killed(): boolean;
  /** Resolves with the exit code (or signal) once the process ended. */
  readonly exited: Promise<number | string>;
  kill(signal?: NodeJS.Signals): Promise<number | string>;
}

export interface NodeDaemon {
  readonly node: string;
  readonly address: string;
  readonly workingArea: string;
  readonly supervisor: DaemonSupervisor;
}

export interface KubernetesHarness {
  readonly dir: string;
  readonly cluster: KubernetesTestCluster;
  /** The manager ServiceAccount's token (what the replicas use). */
  readonly managerToken: string;
  readonly kubeconfigPath: string;
  /** The daemon of each node (a node brought back by the simulator gets a new one). */
  readonly daemons: readonly NodeDaemon[];
  readonly kubelet: KubeletSimulator;
  /** Every workspace pod that ever existed (uids per name, whether each ran). */
  readonly pods: PodLedger;
  readonly replicas: Replica[];
  readonly storageRoot: string;
  startReplica(identity: string): Promise<Replica>;
  /** The Lease's holder, or undefined when nobody holds it. */
  leaseHolder(): Promise<string | undefined>;
  /** Waits until some live replica holds the Lease and returns it. */
  waitForLeader(timeoutMs?: number): Promise<Replica>;
  /** Every workspace pod in the namespace. */
  workspacePods(): Promise<WorkspacePod[]>;
  /** Any Kubernetes object by path (admin). */
  get<T = KubernetesObject>(apiPath: string): Promise<T | undefined>;
  close(): Promise<void>;
}

export interface WorkspacePod extends KubernetesObject {
  spec: { nodeName?: string };
  status?: { phase?: string; podIP?: string };
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** The daemon config for every simulated node: no quotas or disk guard, quick Git retries, no periodic backups. */
const daemonConfig = [
  'quota: { mode: none }',
  'diskGuard: { minFree: 0 }',
  // Tests serve downloads on 127.0.0.1, which the daemon refuses by default (SSRF).
  'initializer: { gitRetryInitial: 100ms, gitRetryMax: 1s, download: { allowPrivateAddresses: true } }',
  'housekeeping: { interval: 0 }',
  'backup: { period: 0 }',
  'log: { level: warn }',
  '',
].join('\n');

async function startNodeDaemon(dir: string, node: string, storageRoot: string): Promise<NodeDaemon> {
  const nodeDir = path.join(dir, 'nodes', node);
  await mkdir(nodeDir, { recursive: true });
  const configPath = path.join(nodeDir, 'daemon.yaml');
  await writeFile(configPath, daemonConfig);
  const workingArea = path.join(nodeDir, 'workspaces');
  const config = resolveManagerConfig(
    {
      stateDir: path.join(nodeDir, 'state'),
      workingArea,
      daemon: { address: '127.0.0.1:0', httpAddress: 'off', storageRoot, configPath, output: 'inherit' },
    },
    { source: `daemon of ${node}`, baseDir: nodeDir },
  );
  const supervisor = new DaemonSupervisor(config, createSilentLogger());
  const address = await supervisor.start();
  return { node, address, workingArea, supervisor };
}

export async function startKubernetesHarness(options: KubernetesHarnessOptions = {}): Promise<KubernetesHarness> {
  if (!existsSync(cliMain)) throw new Error(`build @workbay/manager first: ${cliMain} is missing`);
  const dir = await mkdtemp(path.join(os.tmpdir(), 'workbay-k8s-'));
  const storageRoot = path.join(dir, 'storage');
  const cleanups: Array<() => Promise<unknown>> = [async () => rm(dir, { recursive: true, force: true })];
  const runCleanups = async () => {
    for (const step of cleanups.splice(0).reverse()) await step().catch(() => undefined);
  };
  try {
    const cluster = await startKubernetesCluster();
    cleanups.push(() => cluster.stop());
    // Everything the operator applies; nothing runs the Deployment or DaemonSet (the simulator plays the nodes).
    await cluster.apply(await loadKustomization(path.join(repoRoot, 'deploy/kubernetes')));
    const managerToken = await cluster.serviceAccountToken(namespace, 'workbay-manager');
    const kubeconfigPath = await cluster.writeKubeconfig(managerToken);

    const pods = startPodLedger(cluster, namespace);
    cleanups.push(() => pods.stop());
    const daemons: NodeDaemon[] = [];
    const kubelet = await startKubeletSimulator({
      cluster,
      namespace,
      nodes: options.nodes ?? ['node-a', 'node-b'],
      serveWorkspaces: options.serveWorkspaces,
      readyDelayMs: options.podStartDelayMs,
      startDaemon: async (node) => {
        const daemon = await startNodeDaemon(dir, node, storageRoot);
        const known = daemons.findIndex((d) => d.node === node);
        if (known >= 0) daemons.splice(known, 1, daemon);
        else daemons.push(daemon);
        const port = Number(daemon.address.slice(daemon.address.lastIndexOf(':') + 1));
        return { host: '127.0.0.1', port, stop: () => daemon.supervisor.stop() };
      },
    });
    // Stops the daemons too.
    cleanups.push(() => kubelet.stop());

    const replicas: Replica[] = [];
    let closing = false;
    const startReplica = async (identity: string): Promise<Replica> => {
      const replica = await launchReplica({ dir, identity, kubeconfigPath, daemons, storageRoot, options });
      replicas.push(replica);
      if (options.restartReplicas) {
        void replica.exited.then(() => {
          if (!closing && !replica.killed()) void startReplica(identity).catch(() => undefined);
        });
      }
      return replica;
    };
    cleanups.push(async () => {
      closing = true;
      // Keep what the replicas logged: a red spec is diagnosed from it after the temp dir is gone.
      const logs = path.join(os.tmpdir(), 'workbay-k8s-logs');
      await mkdir(logs, { recursive: true });
      for (const [i, replica] of replicas.entries()) {
        await writeFile(path.join(logs, `${path.basename(dir)}-${replica.identity}-${i}.log`), replica.stderr());
      }
      for (const replica of replicas) replica.client.close();
      await Promise.all(replicas.map((r) => r.kill('SIGKILL')));
    });
    for (let i = 0; i < (options.replicas ?? 1); i++) await startReplica(`manager-${i}`);

    const leasePath = `/apis/coordination.k8s.io/v1/namespaces/${namespace}/leases/${leaseName}`;
    const get = async <T>(apiPath: string): Promise<T | undefined> => {
      const res = await cluster.request<T>('GET', apiPath);
      return res.status === 200 ? res.body : undefined;
    };
    const leaseHolder = async (): Promise<string | undefined> =>
      (await get<{ spec?: { holderIdentity?: string } }>(leasePath))?.spec?.holderIdentity || undefined;
    return {
      dir,
      cluster,
      managerToken,
      kubeconfigPath,
      daemons,
      kubelet,
      pods,
      replicas,
      storageRoot,
      startReplica,
      leaseHolder,
      waitForLeader: async (timeoutMs = 60_000) => {
        const deadline = Date.now() + timeoutMs;
        while (Date.now() < deadline) {
          const holder = await leaseHolder().catch(() => undefined);
          const replica = replicas.find((r) => r.identity === holder && r.alive());
          if (replica) return replica;
          await sleep(100);
        }
        throw new Error(`no live replica holds the lease (holder: ${await leaseHolder().catch(() => '?')})`);
      },
      workspacePods: async () =>
        (
          await cluster.request<{ items: WorkspacePod[] }>(
            'GET',
            `/api/v1/namespaces/${namespace}/pods?labelSelector=${encodeURIComponent('app.kubernetes.io/component=workspace')}`,
          )
        ).body.items,
      get,
      close: runCleanups,
    };
  } catch (error) {
    await runCleanups();
    throw error;
  }
}

interface LaunchOptions {
  readonly dir: string;
  readonly identity: string;
  readonly kubeconfigPath: string;
  readonly daemons: readonly NodeDaemon[];
  readonly storageRoot: string;
  readonly options: KubernetesHarnessOptions;
}

async function launchReplica(o: LaunchOptions): Promise<Replica> {
  const replicaDir = path.join(o.dir, 'replicas', o.identity);
  await mkdir(replicaDir, { recursive: true });
  const config = {
    stateDir: path.join(replicaDir, 'state'),
    workingArea: path.join(o.dir, 'workspaces'),
    grpc: { address: '127.0.0.1:0' },
    proxy: { address: '127.0.0.1:0' },
    metrics: { address: '127.0.0.1:0' },
    // The daemons run per node (found through their pods); this address is only the fallback of a manager that
    // does not route by node.
    daemon: { spawn: false, address: o.daemons[0]!.address, retryBackoff: '200ms', disposeAttempts: 7 },
    runtime: {
      kind: 'kubernetes',
      namespace,
      kubeconfigPath: o.kubeconfigPath,
      defaultImage: { image: workspaceImage },
      images: { 'test/echo': { image: workspaceImage } },
      pollIntervalMs: 200,
      stopTimeoutMs: 20_000,
      watchRetryMs: 200,
      podRejectionBackoffMs: 200,
      controlPlane: {
        identity: o.identity,
        leaseName,
        leaseDurationSeconds: o.options.leaseDurationSeconds ?? 3,
        renewIntervalMs: o.options.renewIntervalMs ?? 500,
        leaderWaitMs: 30_000,
        ...(o.options.maxWriteBacklog ? { maxWriteBacklog: o.options.maxWriteBacklog } : {}),
      },
      ...o.options.runtime,
    },
    // The manager still hands out IDE ports from one host range on Kubernetes (each pod has its own IP, so any
    // port would do): the default 1,000 would cap the bench at 1,000 workspaces.
    idePorts: { from: 20_000, to: 29_999 },
    timeouts: { checkInterval: '200ms' },
    stopGrace: { normally: '2s', immediately: '1s', abort: '1s' },
    log: { level: o.options.logLevel ?? 'info' },
    ...o.options.manager,
  };
  const file = path.join(replicaDir, 'workbay.yaml');
  // JSON is YAML.
  await writeFile(file, JSON.stringify(config, null, 2));
  const child = spawn(process.execPath, [cliMain, '--json', 'up', '--config', file], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, HOME: replicaDir },
  });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => {
    stderr += d.toString();
    if (stderr.length > 4_000_000) stderr = stderr.slice(-2_000_000);
  });
  const exited = new Promise<number | string>((resolve) =>
    child.once('exit', (code, signal) => resolve(code ?? signal ?? -1)),
  );
  const addresses = await new Promise<{ managerAddress: string; proxyAddress: string; metricsAddress: string }>(
    (resolve, reject) => {
      createInterface({ input: child.stdout! }).once('line', (line) => resolve(JSON.parse(line)));
      void exited.then((code) => reject(new Error(`workbay up exited with ${code}: ${stderr.slice(-3000)}`)));
    },
  );
  const alive = () => child.exitCode === null && child.signalCode === null;
  let killed = false;
  return {
    identity: o.identity,
    process: child,
    ...addresses,
    client: createWorkspaceManagerClient(addresses.managerAddress, { defaultTimeoutMs: 60_000 }),
    stderr: () => stderr,
    alive,
    killed: () => killed,
    exited,
    kill: async (signal = 'SIGKILL') => {
      killed = true;
      if (alive()) child.kill(signal);
      return exited;
    },
  };
}
