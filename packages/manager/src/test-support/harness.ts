/**
 * TEST ONLY: a manager on 127.0.0.1:0 (gRPC, proxy, metrics) with the real local runtime, temporary state
 * directories and the real content daemon (a child process), plus a typed gRPC client and helpers to wait for phases.
 */
import { createHash } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createWorkspaceManagerClient, workspacePhase, wsman } from '@workbay/api';
import type { WorkspaceManagerClient, WorkspacePhase, contentservice } from '@workbay/api';
import { startManager } from '../app.js';
import type { RunningManager } from '../app.js';
import { resolveManagerConfig } from '../config.js';
import type { ManagerConfigInput } from '../config.js';
import { DaemonSupervisor } from '../embedded.js';
import { Writable } from 'node:stream';
import { createLogger, createSilentLogger } from '../logger.js';
import type { Logger } from '../logger.js';

export interface HarnessOptions {
  readonly config?: ManagerConfigInput;
}

export interface Harness {
  readonly dir: string;
  /** The real daemon (`@workbay/daemon`'s bin) as a child process, reached over gRPC. */
  readonly daemonProcess: DaemonSupervisor;
  running: RunningManager;
  client: WorkspaceManagerClient;
  /** Stops the manager (workspaces and the daemon keep running) and starts a new one on the same state. */
  restart(config?: ManagerConfigInput): Promise<void>;
  close(): Promise<void>;
}

/** The daemon config the real-daemon harness uses: no quotas or disk guard, quick Git retries. */
export const testDaemonConfig = [
  'quota: { mode: none }',
  'diskGuard: { minFree: 0 }',
  // Tests serve downloads and one-time secrets on 127.0.0.1, which the daemon refuses by default (SSRF).
  // 3 s of retries: a loaded CI machine once took over 1 s for two failing clones (init-progress.spec.ts gave up).
  'initializer: { gitRetryInitial: 100ms, gitRetryMax: 3s, download: { allowPrivateAddresses: true } }',
  // Their git servers listen on 127.0.0.1 too, which network git refuses by default like downloads.
  "git: { allowedNetworks: ['127.0.0.1/32'] }",
  'housekeeping: { interval: 0 }',
  'log: { level: silent }',
  '',
].join('\n');

/**
 * An HTTP server on the IDE port (PORT) and on ECHO_PORT that answers with what it received, as JSON, and
 * echoes raw bytes after a WebSocket-style upgrade.
 */
const echoServer = `
const http = require('node:http');
const serve = (port, name) => {
  const server = http.createServer((req, res) => {
    const body = [];
    req.on('data', (c) => body.push(c));
    req.on('end', () => {
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ server: name, method: req.method, url: req.url, headers: req.headers, body: Buffer.concat(body).toString() }));
    });
  });
  server.on('upgrade', (req, socket) => {
    socket.on('error', () => socket.destroy());
    socket.write('HTTP/1.1 101 Switching Protocols\\r\\nupgrade: websocket\\r\\nconnection: Upgrade\\r\\nx-echo-url: ' + req.url + '\\r\\n\\r\\n');
    socket.pipe(socket);
  });
  server.listen(Number(port), '127.0.0.1');
};
serve(process.env.PORT, 'ide');
if (process.env.ECHO_PORT) serve(process.env.ECHO_PORT, 'echo');
process.on('SIGTERM', () => process.exit(0));
`;

/** Images the tests use, mapped to commands for the local runtime. */
export const testImages = {
  'test/echo': { command: [process.execPath, '-e', echoServer] },
  // Never becomes ready (no listener) but runs until stopped.
  'test/sleeper': { command: ['sh', '-c', 'exec sleep 3600'], readiness: { kind: 'none' } },
  // Becomes ready, then exits with code 3 shortly after.
  'test/crasher': { command: ['sh', '-c', 'sleep 0.5; exit 3'], readiness: { kind: 'none' } },
  // A headless task that succeeds or fails.
  'test/task-ok': { command: ['sh', '-c', 'echo done > task.log; sleep 0.3; exit 0'], readiness: { kind: 'none' } },
  'test/task-fail': { command: ['sh', '-c', 'sleep 0.3; exit 7'], readiness: { kind: 'none' } },
  // Cannot be started at all.
  'test/missing': { command: ['/nonexistent/workspace-binary'], readiness: { kind: 'none' } },
  // Ignores SIGTERM: only SIGKILL after the grace period ends it.
  'test/stubborn': {
    command: ['sh', '-c', "trap '' TERM; while true; do sleep 0.1; done"],
    readiness: { kind: 'none' },
  },
} as const;

/**
 * The managers' recent log lines (debug level, all harnesses of this test file), kept in memory so that a wait that
 * times out can say what the manager did with the workspace: a flake on a loaded CI machine is diagnosed from its
 * report alone.
 */
const recentLogLines: string[] = [];
const recentLogLimit = 4000;

function capturingLogger(): Logger {
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const line of chunk.toString().split('\n')) if (line) recentLogLines.push(line);
      if (recentLogLines.length > recentLogLimit) recentLogLines.splice(0, recentLogLines.length - recentLogLimit);
      done();
    },
  });
  return createLogger({ level: 'debug', destination: sink });
}

/** The last log lines that name `id`, for a timeout's report. */
function logLinesOf(id: string, count = 40): string {
  const lines = recentLogLines.filter((line) => line.includes(id)).slice(-count);
  return lines.length ? `\nmanager log lines naming it:\n${lines.join('\n')}` : '';
}

export async function startHarness(options: HarnessOptions = {}): Promise<Harness> {
  const dir = await mkdtemp(join(tmpdir(), 'workbay-manager-'));
  const workingArea = join(dir, 'workspaces');
  const storageRoot = join(dir, 'storage');
  // A port range per harness, so parallel test files do not hand out the same IDE ports.
  const portBase = 24000 + Math.floor(Math.random() * 80) * 100;
  const base = (extra: ManagerConfigInput = {}): ManagerConfigInput => ({
    stateDir: join(dir, 'manager'),
    workingArea,
    grpc: { address: '127.0.0.1:0' },
    proxy: { address: '127.0.0.1:0' },
    metrics: { address: '127.0.0.1:0' },
    idePorts: { from: portBase, to: portBase + 99 },
    runtime: {
      kind: 'local',
      isolation: 'none',
      cgroups: 'off',
      readiness: { intervalMs: 50 },
      exitPollIntervalMs: 100,
      images: testImages,
    },
    timeouts: { checkInterval: '100ms' },
    stopGrace: { normally: '2s', immediately: '500ms', abort: '500ms' },
    log: { level: 'silent' },
    ...options.config,
    daemon: {
      address: '127.0.0.1:0',
      retryBackoff: '100ms',
      disposeAttempts: 3,
      httpAddress: 'off',
      storageRoot,
      configPath: join(dir, 'daemon.yaml'),
      output: 'ignore',
      ...options.config?.daemon,
    },
    ...extra,
  });
  await writeFile(join(dir, 'daemon.yaml'), testDaemonConfig);
  const daemonProcess = new DaemonSupervisor(
    resolveManagerConfig(base(), { source: 'test', baseDir: dir }),
    createSilentLogger(),
  );
  await daemonProcess.start();
  const launch = async (extra?: ManagerConfigInput): Promise<RunningManager> => {
    const resolved = resolveManagerConfig(base(extra), { source: 'test', baseDir: dir });
    const config = { ...resolved, daemon: { ...resolved.daemon, address: daemonProcess.address } };
    // No `storage`: snapshots are deleted through the daemon, as in the embedded default.
    return startManager({ config, logger: capturingLogger() });
  };
  const running = await launch();
  const harness: Harness = {
    dir,
    daemonProcess,
    running,
    client: createWorkspaceManagerClient(running.grpcAddress, { defaultTimeoutMs: 20_000 }),
    async restart(config?: ManagerConfigInput): Promise<void> {
      harness.client.close();
      await harness.running.stop();
      harness.running = await launch(config);
      harness.client = createWorkspaceManagerClient(harness.running.grpcAddress, { defaultTimeoutMs: 20_000 });
    },
    async close(): Promise<void> {
      harness.client.close();
      // Stop every workspace still running so that no process outlives the test.
      for (const record of harness.running.core.listWorkspaces()) {
        await harness.running.runtime.stop(record.id, { gracePeriodMs: 0 }).catch(() => undefined);
      }
      await harness.running.stop();
      await daemonProcess.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
  return harness;
}

/** TEST ONLY: an HTTP server whose answers take a while; the download initializer fetches from it (slow init). */
export async function startSlowFileServer(delayMs: number): Promise<{
  readonly initializer: contentservice.WorkspaceInitializer;
  setDelay(ms: number): void;
  close(): Promise<void>;
}> {
  const body = Buffer.from('slowly downloaded\n');
  const digest = `sha256:${createHash('sha256').update(body).digest('hex')}`;
  let delay = delayMs;
  const server = createServer((_req, res) => {
    setTimeout(() => res.end(body), delay);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address() as { port: number };
  return {
    initializer: {
      spec: {
        $case: 'download',
        value: {
          files: [{ url: `http://127.0.0.1:${address.port}/file.txt`, filePath: 'file.txt', digest }],
          targetLocation: 'download',
        },
      },
    },
    setDelay: (ms) => (delay = ms),
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

export interface StartOptions {
  readonly id?: string;
  readonly metaId?: string;
  readonly owner?: string;
  readonly image?: string;
  readonly type?: wsman.WorkspaceType;
  readonly initializer?: contentservice.WorkspaceInitializer;
  readonly spec?: Partial<wsman.StartWorkspaceSpec>;
  readonly annotations?: Record<string, string>;
}

let counter = 0;

/** A valid StartWorkspaceRequest (the default image runs the runtime's built-in HTTP workspace). */
export function startRequest(options: StartOptions = {}): wsman.StartWorkspaceRequest {
  counter += 1;
  const id = options.id ?? `ws-${process.pid}-${counter}`;
  return wsman.StartWorkspaceRequest.fromPartial({
    id,
    servicePrefix: id,
    metadata: {
      owner: options.owner ?? 'alice',
      metaId: options.metaId ?? `meta-${id}`,
      annotations: options.annotations ?? {},
    },
    type: options.type ?? wsman.WorkspaceType.REGULAR,
    spec: {
      workspaceImage: options.image ?? 'workbay/default',
      workspaceLocation: 'project',
      initializer: options.initializer ?? { spec: { $case: 'empty', value: {} } },
      ...options.spec,
    },
  });
}

export async function phaseOf(client: WorkspaceManagerClient, id: string): Promise<WorkspacePhase> {
  const { status } = await client.describeWorkspace({ id });
  return workspacePhase.fromProto(status!.phase);
}

/** Polls DescribeWorkspace until `predicate` holds; returns that status. */
export async function waitForStatus(
  client: WorkspaceManagerClient,
  id: string,
  predicate: (status: wsman.WorkspaceStatus) => boolean,
  // Generous: on a CI machine whose disks the daemon's loop-image tests keep busy, a start's fsyncs can take seconds
  // each (a resumed start was still INITIALIZING after 20 s once); a hang still fails, only later, and within a test's
  // 60 s, so that this report (with the log lines) is what it fails with.
  timeoutMs = 45_000,
): Promise<wsman.WorkspaceStatus> {
  const deadline = Date.now() + timeoutMs;
  let last: wsman.WorkspaceStatus | undefined;
  while (Date.now() < deadline) {
    last = (await client.describeWorkspace({ id })).status!;
    if (predicate(last)) return last;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(
    `timed out waiting for workspace ${id}; last status: phase ${last ? workspacePhase.fromProto(last.phase) : '?'}, failed '${last?.conditions?.failed ?? ''}', timeout '${last?.conditions?.timeout ?? ''}', message '${last?.message ?? ''}'${logLinesOf(id)}`,
  );
}

export function waitForPhase(
  client: WorkspaceManagerClient,
  id: string,
  phase: WorkspacePhase,
  timeoutMs?: number,
): Promise<wsman.WorkspaceStatus> {
  return waitForStatus(client, id, (s) => workspacePhase.fromProto(s.phase) === phase, timeoutMs);
}
