import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { findServerBinary, freePort } from '../launcher.js';
import { ResourceResolver, applyObjects } from './apply.js';
import type { KubernetesApplyOptions } from './apply.js';
import { KubernetesHttpClient } from './client.js';
import type {
  KubernetesObject,
  KubernetesRequestOptions,
  KubernetesResponse,
  KubernetesWatch,
  KubernetesWatchEvent,
  KubernetesWatchOptions,
} from './client.js';
import { ServerProcess, releaseTempDir, trackTempDir } from './process.js';

/** Options of {@link startKubernetesCluster}; every one is optional. */
export interface KubernetesClusterOptions {
  /** Create this namespace once the cluster is ready (see {@link KubernetesTestCluster.namespace}). */
  readonly namespace?: string;
  /** etcd binary; default ETCD_BIN, then the cache folder of `scripts/test-servers.mjs`, then PATH. */
  readonly etcdBinary?: string;
  /** kube-apiserver binary; default KUBE_APISERVER_BIN, then the cache folder, then PATH. */
  readonly apiServerBinary?: string;
  /** Extra kube-apiserver flags (`--name=value`), appended after the kit's own. */
  readonly apiServerArgs?: readonly string[];
  /** How long to wait for etcd and for the API server's `/readyz`; default 90 s each (2 shared cores are slow). */
  readonly readyTimeoutMs?: number;
}

/**
 * A real etcd + kube-apiserver on 127.0.0.1 for tests (no kubelet, scheduler or controller-manager). RBAC is on;
 * the `ServiceAccount` admission plugin is off (nothing creates `default` ServiceAccounts).
 */
export interface KubernetesTestCluster {
  /** `https://127.0.0.1:<port>`; the port survives {@link KubernetesTestCluster.restartApiServer}. */
  readonly url: string;
  /** The API server's self-signed serving certificate (PEM file) to trust. */
  readonly caFile: string;
  /** The same certificate as PEM text. */
  readonly caPem: string;
  /** A static token of a `system:masters` member (bypasses RBAC). */
  readonly adminToken: string;
  /** The namespace created from the `namespace` option, if any. */
  readonly namespace?: string;
  /** A kubeconfig (YAML) for this cluster with the given bearer token and the CA inline. */
  kubeConfigYaml(token?: string): string;
  /** Writes {@link KubernetesTestCluster.kubeConfigYaml} to a file (mode 0600, removed by `stop()`); returns its path. */
  writeKubeconfig(token?: string): Promise<string>;
  /** Raw JSON over https; a 4xx/5xx answer is returned, not thrown. Default token: the admin token. */
  request<T = unknown>(
    method: string,
    path: string,
    body?: unknown,
    options?: KubernetesRequestOptions,
  ): Promise<KubernetesResponse<T>>;
  /** Streams a watch of a collection path; see {@link KubernetesWatchOptions}. */
  watch<T = KubernetesObject>(
    path: string,
    onEvent: (event: KubernetesWatchEvent<T>) => void,
    options?: KubernetesWatchOptions,
  ): KubernetesWatch;
  /**
   * Creates or replaces objects (a YAML string or parsed objects) in order, resolving kinds through discovery;
   * waits for CRDs to be Established. Throws on the first refusal (e.g. 403 with a token lacking RBAC).
   */
  apply(manifests: readonly KubernetesObject[] | string, options?: KubernetesApplyOptions): Promise<KubernetesObject[]>;
  /** A ServiceAccount token from the TokenRequest API (the ServiceAccount must exist). Default 3600 s. */
  serviceAccountToken(namespace: string, name: string, expirationSeconds?: number): Promise<string>;
  /** SIGTERM the API server and start it again on the same port with the same certificates, keys and etcd. */
  restartApiServer(): Promise<void>;
  /** The last lines of the API server's and etcd's output, for a failing test's message. */
  logTail(): string;
  /** Kills both servers and removes every temporary file; safe to call twice. */
  stop(): Promise<void>;
}

/**
 * Starts etcd and kube-apiserver (built by `node scripts/test-servers.mjs`; a missing binary throws
 * `TestServerMissingError`) on free loopback ports with temporary directories, and waits for `/readyz`.
 *
 * ```ts
 * const cluster = await startKubernetesCluster({ namespace: 'workbay' });
 * await cluster.apply(await loadKustomization('deploy/kubernetes'));
 * const token = await cluster.serviceAccountToken('workbay', 'workbay-manager');
 * const kubeconfig = await cluster.writeKubeconfig(token);
 * await cluster.stop();
 * ```
 */
export async function startKubernetesCluster(options: KubernetesClusterOptions = {}): Promise<KubernetesTestCluster> {
  const etcdBinary = options.etcdBinary ?? findServerBinary('etcd');
  const apiServerBinary = options.apiServerBinary ?? findServerBinary('kube-apiserver');
  const readyTimeoutMs = options.readyTimeoutMs ?? 90_000;
  const dir = mkdtempSync(join(tmpdir(), 'workbay-kube-'));
  trackTempDir(dir);
  let etcd: { process: ServerProcess; url: string } | undefined;
  let apiServer: ServerProcess | undefined;
  try {
    etcd = await startEtcd(etcdBinary, join(dir, 'etcd'), readyTimeoutMs);
    const files = writeClusterFiles(dir, etcd.url);
    const started = await startApiServerOnFreePort(apiServerBinary, files, options, readyTimeoutMs);
    apiServer = started.process;
    const parts = { dir, etcd: etcd.process, apiServer, port: started.port, files, binary: apiServerBinary };
    return await makeCluster({ ...parts, options, readyTimeoutMs });
  } catch (error) {
    await apiServer?.stop();
    await etcd?.process.stop();
    releaseTempDir(dir);
    throw error;
  }
}

interface ClusterFiles {
  readonly dir: string;
  readonly certDir: string;
  readonly adminToken: string;
  readonly tokenFile: string;
  readonly saPublicKey: string;
  readonly saPrivateKey: string;
  readonly etcdUrl: string;
}

function writeClusterFiles(dir: string, etcdUrl: string): ClusterFiles {
  const certDir = join(dir, 'certs');
  mkdirSync(certDir, { recursive: true });
  const adminToken = randomBytes(24).toString('hex');
  const tokenFile = join(dir, 'tokens.csv');
  writeFileSync(tokenFile, `${adminToken},workbay-test-admin,workbay-test-admin,"system:masters"\n`, { mode: 0o600 });
  // The service-account signing key; EC keeps generation instant.
  const { publicKey, privateKey } = generateKeyPairSync('ec', {
    namedCurve: 'prime256v1',
    publicKeyEncoding: { type: 'spki', format: 'pem' },
    privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
  });
  const saPublicKey = join(dir, 'sa.pub');
  const saPrivateKey = join(dir, 'sa.key');
  writeFileSync(saPublicKey, publicKey);
  writeFileSync(saPrivateKey, privateKey, { mode: 0o600 });
  return { dir, certDir, adminToken, tokenFile, saPublicKey, saPrivateKey, etcdUrl };
}

async function startEtcd(
  binary: string,
  dataDir: string,
  readyTimeoutMs: number,
): Promise<{ process: ServerProcess; url: string }> {
  let lastError: Error | undefined;
  for (let attempt = 0; attempt < 5; attempt++) {
    const [clientPort, peerPort] = [await freePort(), await freePort()];
    const client = `http://127.0.0.1:${clientPort}`;
    const peer = `http://127.0.0.1:${peerPort}`;
    const etcd = new ServerProcess('etcd', binary, [
      '--name=workbay-test',
      `--data-dir=${dataDir}`,
      `--listen-client-urls=${client}`,
      `--advertise-client-urls=${client}`,
      `--listen-peer-urls=${peer}`,
      `--initial-advertise-peer-urls=${peer}`,
      `--initial-cluster=workbay-test=${peer}`,
      '--unsafe-no-fsync',
      '--log-level=warn',
    ]);
    try {
      await waitFor(etcd, readyTimeoutMs, () => probeHttp(`${client}/health`));
      return { process: etcd, url: client };
    } catch (error) {
      lastError = error as Error;
      await etcd.stop();
      if (!/address already in use/i.test(etcd.logTail())) break;
    }
  }
  throw lastError;
}

function apiServerArgs(files: ClusterFiles, port: number, extra: readonly string[]): string[] {
  return [
    `--etcd-servers=${files.etcdUrl}`,
    '--bind-address=127.0.0.1',
    '--advertise-address=127.0.0.1',
    `--secure-port=${port}`,
    `--cert-dir=${files.certDir}`,
    `--token-auth-file=${files.tokenFile}`,
    '--authorization-mode=RBAC',
    '--service-account-issuer=https://kubernetes.default.svc',
    `--service-account-key-file=${files.saPublicKey}`,
    `--service-account-signing-key-file=${files.saPrivateKey}`,
    '--service-cluster-ip-range=10.0.0.0/24',
    '--allow-privileged=true',
    // 1.37 refuses a loopback advertise address for the kubernetes Service endpoints otherwise.
    '--endpoint-reconciler-type=none',
    // No controller-manager creates `default` ServiceAccounts, so pods would be Forbidden.
    '--disable-admission-plugins=ServiceAccount',
    '--profiling=false',
    // On SIGTERM, end open watches within a second (as a restarting server does for its clients) rather than
    // waiting for them to time out.
    '--shutdown-watch-termination-grace-period=1s',
    ...extra,
  ];
}

async function startApiServerOnFreePort(
  binary: string,
  files: ClusterFiles,
  options: KubernetesClusterOptions,
  readyTimeoutMs: number,
): Promise<{ process: ServerProcess; port: number }> {
  let lastError: Error | undefined;
  for (let attempt = 0; attempt < 5; attempt++) {
    const port = await freePort();
    try {
      return { process: await startApiServer(binary, files, port, options, readyTimeoutMs), port };
    } catch (error) {
      lastError = error as Error;
      if (!(error instanceof PortTakenError)) break;
    }
  }
  throw lastError;
}

class PortTakenError extends Error {}

async function startApiServer(
  binary: string,
  files: ClusterFiles,
  port: number,
  options: KubernetesClusterOptions,
  readyTimeoutMs: number,
): Promise<ServerProcess> {
  const server = new ServerProcess('kube-apiserver', binary, apiServerArgs(files, port, options.apiServerArgs ?? []));
  const caFile = join(files.certDir, 'apiserver.crt');
  const client = () => new KubernetesHttpClient(`https://127.0.0.1:${port}`, readFileSync(caFile), files.adminToken);
  try {
    await waitFor(server, readyTimeoutMs, async () => {
      if (!existsSync(caFile)) return false;
      try {
        const res = await client().request('GET', '/readyz', undefined, { timeoutMs: 5_000 });
        return res.status === 200;
      } catch {
        return false;
      }
    });
    return server;
  } catch (error) {
    await server.stop();
    if (/address already in use/i.test(server.logTail())) throw new PortTakenError(`port ${port} was taken`);
    throw error;
  }
}

/** Polls `ready` until it answers true; fails early when the process dies, late with its log tail. */
async function waitFor(server: ServerProcess, timeoutMs: number, ready: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const died = server.deathReason();
    if (died) throw new Error(`${server.name} ${died}; its output:\n${server.logTail()}`);
    if (await ready()) return;
    await sleep(100);
  }
  throw new Error(`${server.name} not ready after ${timeoutMs} ms; its output:\n${server.logTail()}`);
}

function probeHttp(url: string): Promise<boolean> {
  return new Promise((resolve) => {
    const req = httpRequest(url, { timeout: 2_000 }, (res) => {
      res.resume();
      resolve(res.statusCode === 200);
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', () => resolve(false));
    req.end();
  });
}

interface ClusterParts {
  readonly dir: string;
  readonly etcd: ServerProcess;
  apiServer: ServerProcess;
  readonly port: number;
  readonly files: ClusterFiles;
  readonly binary: string;
  readonly options: KubernetesClusterOptions;
  readonly readyTimeoutMs: number;
}

async function makeCluster(parts: ClusterParts): Promise<KubernetesTestCluster> {
  const url = `https://127.0.0.1:${parts.port}`;
  const caFile = join(parts.files.certDir, 'apiserver.crt');
  const caPem = readFileSync(caFile, 'utf8');
  const adminToken = parts.files.adminToken;
  const client = new KubernetesHttpClient(url, Buffer.from(caPem), adminToken);
  const resolver = new ResourceResolver(client);
  let kubeconfigs = 0;
  let stopping: Promise<void> | undefined;

  const kubeConfigYaml = (token: string = adminToken): string =>
    [
      'apiVersion: v1',
      'kind: Config',
      'clusters:',
      '  - name: workbay-test',
      '    cluster:',
      `      server: ${url}`,
      `      certificate-authority-data: ${Buffer.from(caPem).toString('base64')}`,
      'users:',
      '  - name: workbay-test',
      '    user:',
      // JSON string syntax is valid YAML and quotes whatever the token holds.
      `      token: ${JSON.stringify(token)}`,
      'contexts:',
      '  - name: workbay-test',
      '    context: { cluster: workbay-test, user: workbay-test }',
      'current-context: workbay-test',
      '',
    ].join('\n');

  const cluster: KubernetesTestCluster = {
    url,
    caFile,
    caPem,
    adminToken,
    namespace: parts.options.namespace,
    kubeConfigYaml,
    writeKubeconfig: async (token) => {
      const path = join(parts.dir, `kubeconfig-${++kubeconfigs}.yaml`);
      writeFileSync(path, kubeConfigYaml(token), { mode: 0o600 });
      return path;
    },
    request: (method, path, body, options) => client.request(method, path, body, options),
    watch: (path, onEvent, options) => client.watch(path, onEvent, options),
    apply: (manifests, options) => applyObjects(client, resolver, manifests, options),
    serviceAccountToken: async (namespace, name, expirationSeconds = 3600) => {
      const path = `/api/v1/namespaces/${encodeURIComponent(namespace)}/serviceaccounts/${encodeURIComponent(name)}/token`;
      const answer = await client.must<{ status: { token: string } }>('POST', path, {
        apiVersion: 'authentication.k8s.io/v1',
        kind: 'TokenRequest',
        spec: { expirationSeconds },
      });
      return answer.status.token;
    },
    restartApiServer: async () => {
      await parts.apiServer.stop();
      parts.apiServer = await startApiServer(
        parts.binary,
        parts.files,
        parts.port,
        parts.options,
        parts.readyTimeoutMs,
      );
    },
    logTail: () => `--- kube-apiserver ---\n${parts.apiServer.logTail()}\n--- etcd ---\n${parts.etcd.logTail(1000)}`,
    stop: () => {
      stopping ??= (async () => {
        await parts.apiServer.stop();
        await parts.etcd.stop();
        releaseTempDir(parts.dir);
      })();
      return stopping;
    },
  };
  if (parts.options.namespace) {
    await client.must('POST', '/api/v1/namespaces', {
      apiVersion: 'v1',
      kind: 'Namespace',
      metadata: { name: parts.options.namespace },
    });
  }
  return cluster;
}
