import { spawn, spawnSync } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { accessSync, constants, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { createServer } from 'node:net';
import { homedir, tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

/**
 * The server versions `scripts/test-servers.mjs` builds and caches. Kept in step with that script by a test
 * (launcher.spec.ts), so a bump there without a bump here fails loudly instead of silently using PATH.
 */
export const testServerVersions = Object.freeze({
  minio: 'v0.0.0-20260212201848-7aac2a2c5b7c',
  'fake-gcs-server': 'v1.56.1',
  etcd: 'v3.6.16',
  'kube-apiserver': 'v1.37.2',
});

export type TestServerName = keyof typeof testServerVersions;

/** A real server process started for tests; `stop()` kills it and removes its data directory. */
export interface TestServer {
  readonly name: TestServerName;
  /** `http://127.0.0.1:<port>` */
  readonly endpoint: string;
  readonly host: string;
  readonly port: number;
  /** The server's data directory (temporary, removed by `stop()`). */
  readonly dir: string;
  readonly pid: number;
  /** The last lines the server wrote, for diagnosing a failed test. */
  logTail(): string;
  stop(): Promise<void>;
}

export interface MinioServer extends TestServer {
  readonly accessKey: string;
  readonly secretKey: string;
  readonly region: string;
  /** With `tls`: the self-signed certificate to trust (PEM file), valid for 127.0.0.1 and localhost. */
  readonly caFile?: string;
}

export interface FakeGcsServer extends TestServer {
  /** Any project id works with the emulator; this is the one tests should pass. */
  readonly projectId: string;
}

export interface LaunchOptions {
  /** Binary to run; default: env (MINIO_BIN / FAKE_GCS_BIN), then the cache folder, then PATH. */
  readonly binary?: string;
  /** Data directory; default a fresh temporary directory, removed on stop. A given directory is kept. */
  readonly dir?: string;
  /** How long to wait for readiness. Default 30 s. */
  readonly readyTimeoutMs?: number;
}

export interface MinioLaunchOptions extends LaunchOptions {
  readonly accessKey?: string;
  readonly secretKey?: string;
  readonly region?: string;
  /** Serve HTTPS with a fresh self-signed certificate (made with the `openssl` CLI); see `caFile`. */
  readonly tls?: boolean;
}

/** A required test server binary is not installed. Tests fail with this; they never skip. */
export class TestServerMissingError extends Error {
  constructor(
    readonly server: TestServerName,
    readonly searched: readonly string[],
  ) {
    super(
      `${server} ${testServerVersions[server]} is not installed (looked in: ${searched.join(', ')}). ` +
        `Build it once with \`node scripts/test-servers.mjs\` from the repository root (needs Go; it caches the binary in ` +
        `${toolsDir()}), or point ${envVarFor(server)} at a binary.` +
        (process.env['CI'] === 'true' ? ' Under CI a missing test server is a failure, not a skip.' : ''),
    );
    this.name = 'TestServerMissingError';
  }
}

function envVarFor(server: TestServerName): string {
  return server === 'fake-gcs-server' ? 'FAKE_GCS_BIN' : `${server.toUpperCase().replace('-', '_')}_BIN`;
}

/** Where `scripts/test-servers.mjs` caches binaries: WORKBAY_TOOLS_DIR or `~/.cache/workbay/bin`. */
export function toolsDir(): string {
  return process.env['WORKBAY_TOOLS_DIR'] ?? join(homedir(), '.cache', 'workbay', 'bin');
}

function isExecutable(path: string): boolean {
  try {
    accessSync(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/**
 * Finds the binary for a test server: the env override, then the pinned version in the cache folder, then the
 * bare name on PATH. Throws {@link TestServerMissingError} when none exists.
 */
export function findServerBinary(server: TestServerName): string {
  const searched: string[] = [];
  const fromEnv = process.env[envVarFor(server)];
  if (fromEnv) {
    searched.push(`${envVarFor(server)}=${fromEnv}`);
    if (isExecutable(fromEnv)) return fromEnv;
  }
  const cached = join(toolsDir(), `${server}-${testServerVersions[server]}`);
  searched.push(cached);
  if (isExecutable(cached)) return cached;
  searched.push(`PATH (${server})`);
  for (const dir of (process.env['PATH'] ?? '').split(delimiter)) {
    if (!dir) continue;
    const candidate = join(dir, server);
    if (isExecutable(candidate)) return candidate;
  }
  throw new TestServerMissingError(server, searched);
}

/** Asks the kernel for a free loopback port. Another process may take it before we use it; callers retry. */
export async function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.once('error', reject);
    server.listen(0, host, () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

// Children still running when this process exits are killed, and their temporary directories removed.
const live = new Set<{ child: ChildProcess; cleanupDirs: readonly string[] }>();

function removeAll(dirs: readonly string[]): void {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
}
let exitHookInstalled = false;
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.once('exit', () => {
    for (const entry of live) {
      try {
        entry.child.kill('SIGKILL');
      } catch {
        // already gone
      }
      removeAll(entry.cleanupDirs);
    }
  });
}

// With setpriv, the kernel kills the server if this process dies without running its exit hook (SIGKILL,
// crash), so a killed test run leaves no server behind.
let setprivPath: string | null | undefined;
function findSetpriv(): string | null {
  if (setprivPath !== undefined) return setprivPath;
  const probe = spawnSync('setpriv', ['--pdeathsig', 'KILL', '--', 'true'], { stdio: 'ignore' });
  setprivPath = probe.status === 0 ? 'setpriv' : null;
  return setprivPath;
}

interface SpawnSpec {
  readonly name: TestServerName;
  readonly scheme?: 'http' | 'https';
  /** CA to trust when polling an HTTPS server for readiness. */
  readonly ca?: Buffer;
  readonly binary: string;
  readonly args: (port: number) => string[];
  readonly env?: Record<string, string>;
  readonly readyPath: string;
  readonly dir: string;
  /** Temporary directories to remove on stop, on failure and at process exit. */
  readonly removeDirs: readonly string[];
  readonly readyTimeoutMs: number;
}

const logLimit = 64 * 1024;

async function launch(spec: SpawnSpec): Promise<TestServer> {
  installExitHook();
  let lastError: unknown;
  for (let attempt = 0; attempt < 5; attempt++) {
    const port = await freePort();
    try {
      return await launchOnce(spec, port);
    } catch (error) {
      lastError = error;
      // Only a lost port race is worth another try; anything else is a real failure.
      if (!(error instanceof PortTakenError)) break;
    }
  }
  removeAll(spec.removeDirs);
  throw lastError;
}

class PortTakenError extends Error {}

async function launchOnce(spec: SpawnSpec, port: number): Promise<TestServer> {
  const host = '127.0.0.1';
  const setpriv = findSetpriv();
  const [command, args] = setpriv
    ? [setpriv, ['--pdeathsig', 'KILL', '--', spec.binary, ...spec.args(port)]]
    : [spec.binary, spec.args(port)];
  const child = spawn(command, args, {
    env: { ...process.env, ...spec.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let log = '';
  const append = (chunk: Buffer): void => {
    log = (log + chunk.toString('utf8')).slice(-logLimit);
  };
  child.stdout?.on('data', append);
  child.stderr?.on('data', append);
  const entry = { child, cleanupDirs: spec.removeDirs };
  live.add(entry);

  let exited: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  const exitPromise = new Promise<void>((resolve) => {
    child.once('exit', (code, signal) => {
      exited = { code, signal };
      live.delete(entry);
      resolve();
    });
  });
  const spawnError = new Promise<Error>((resolve) => child.once('error', resolve));

  const endpoint = `${spec.scheme ?? 'http'}://${host}:${port}`;
  const deadline = Date.now() + spec.readyTimeoutMs;
  let ready = false;
  let failure: Error | undefined;
  void spawnError.then((e) => {
    failure = e;
  });
  while (!ready && !failure && !exited && Date.now() < deadline) {
    ready = await probe(`${endpoint}${spec.readyPath}`, spec.ca);
    if (!ready) await sleep(100);
  }
  if (!ready) {
    child.kill('SIGKILL');
    // A child that never started emits 'error' and no 'exit'.
    await Promise.race([exitPromise, spawnError]);
    live.delete(entry);
    if (failure) throw new Error(`${spec.name}: could not start ${spec.binary}: ${failure.message}`);
    if (/address already in use|bind:/i.test(log)) throw new PortTakenError(`${spec.name}: port ${port} was taken`);
    const why = exited
      ? `exited early (code ${exited.code}, signal ${exited.signal})`
      : `not ready after ${spec.readyTimeoutMs} ms`;
    throw new Error(`${spec.name} on ${endpoint} ${why}; its output:\n${log.slice(-4000)}`);
  }

  let stopping: Promise<void> | undefined;
  return {
    name: spec.name,
    endpoint,
    host,
    port,
    dir: spec.dir,
    pid: child.pid ?? -1,
    logTail: () => log.slice(-4000),
    stop: () => {
      stopping ??= (async () => {
        if (!exited) {
          child.kill('SIGTERM');
          const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
          await exitPromise;
          clearTimeout(timer);
        }
        removeAll(spec.removeDirs);
      })();
      return stopping;
    },
  };
}

/** One readiness probe: true on a 2xx answer. node:http(s) rather than fetch, so that a test CA can be trusted. */
function probe(url: string, ca?: Buffer): Promise<boolean> {
  return new Promise((resolve) => {
    const request = url.startsWith('https:') ? httpsRequest : httpRequest;
    const req = request(url, { method: 'GET', timeout: 2_000, ca }, (res) => {
      res.resume();
      resolve((res.statusCode ?? 0) >= 200 && (res.statusCode ?? 0) < 300);
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', () => resolve(false));
    req.end();
  });
}

/** A self-signed certificate for 127.0.0.1 / localhost, made with the openssl CLI. */
function makeSelfSignedCert(certsDir: string): { certFile: string; keyFile: string } {
  mkdirSync(certsDir, { recursive: true });
  const certFile = join(certsDir, 'public.crt');
  const keyFile = join(certsDir, 'private.key');
  const result = spawnSync(
    'openssl',
    [
      'req',
      '-x509',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-days',
      '2',
      '-subj',
      '/CN=127.0.0.1',
      '-addext',
      'subjectAltName=IP:127.0.0.1,DNS:localhost',
      '-keyout',
      keyFile,
      '-out',
      certFile,
    ],
    { encoding: 'utf8' },
  );
  if (result.status !== 0) {
    throw new Error(`openssl could not make a test certificate: ${result.error?.message ?? result.stderr}`);
  }
  return { certFile, keyFile };
}

function tempDir(prefix: string, given?: string): { dir: string; removeDir: boolean } {
  if (given) return { dir: given, removeDir: false };
  return { dir: mkdtempSync(join(tmpdir(), prefix)), removeDir: true };
}

/**
 * Starts a real MinIO server on 127.0.0.1 with a free port and a temporary data directory, and waits until
 * `/minio/health/ready` answers. Throws {@link TestServerMissingError} when the binary is not installed.
 */
export async function startMinio(options: MinioLaunchOptions = {}): Promise<MinioServer> {
  const binary = options.binary ?? findServerBinary('minio');
  const accessKey = options.accessKey ?? 'workbay-test';
  const secretKey = options.secretKey ?? 'workbay-test-secret';
  const region = options.region ?? 'us-east-1';
  const { dir, removeDir } = tempDir('workbay-minio-', options.dir);
  // Certificates live beside the data, not in it, so that MinIO does not take them for a bucket.
  const certsDir = options.tls ? mkdtempSync(join(tmpdir(), 'workbay-minio-certs-')) : undefined;
  const removeDirs = [...(removeDir ? [dir] : []), ...(certsDir ? [certsDir] : [])];
  let caFile: string | undefined;
  try {
    if (certsDir) caFile = makeSelfSignedCert(certsDir).certFile;
  } catch (error) {
    removeAll(removeDirs);
    throw error;
  }
  const server = await launch({
    name: 'minio',
    binary,
    dir,
    removeDirs,
    scheme: certsDir ? 'https' : 'http',
    ca: caFile ? readFileSync(caFile) : undefined,
    readyPath: '/minio/health/ready',
    readyTimeoutMs: options.readyTimeoutMs ?? 30_000,
    // The console is off so that only one port is needed.
    args: (port) => [
      'server',
      '--quiet',
      '--address',
      `127.0.0.1:${port}`,
      ...(certsDir ? ['--certs-dir', certsDir] : []),
      dir,
    ],
    env: {
      MINIO_ROOT_USER: accessKey,
      MINIO_ROOT_PASSWORD: secretKey,
      MINIO_REGION: region,
      MINIO_BROWSER: 'off',
      MINIO_UPDATE: 'off',
      MINIO_CI_CD: '1',
    },
  });
  return Object.assign(server, { accessKey, secretKey, region, caFile });
}

/**
 * Starts fake-gcs-server (a GCS JSON-API emulator) on 127.0.0.1 with a free port and a filesystem backend in a
 * temporary directory, and waits until `/storage/v1/b` answers.
 */
export async function startFakeGcs(options: LaunchOptions = {}): Promise<FakeGcsServer> {
  const binary = options.binary ?? findServerBinary('fake-gcs-server');
  const { dir, removeDir } = tempDir('workbay-fake-gcs-', options.dir);
  const server = await launch({
    name: 'fake-gcs-server',
    binary,
    dir,
    removeDirs: removeDir ? [dir] : [],
    readyPath: '/storage/v1/b',
    readyTimeoutMs: options.readyTimeoutMs ?? 30_000,
    args: (port) => [
      '-scheme',
      'http',
      '-host',
      '127.0.0.1',
      '-port',
      String(port),
      '-backend',
      'filesystem',
      '-filesystem-root',
      join(dir, 'data'),
      '-public-host',
      `127.0.0.1:${port}`,
      '-external-url',
      `http://127.0.0.1:${port}`,
      '-log-level',
      'warn',
    ],
  });
  return Object.assign(server, { projectId: 'workbay-test' });
}
