/**
 * The attack suite's harness: boots the REAL `workbay up` (the built CLI, the real daemon as its child, the
 * filesystem storage, the local runtime) in a temp directory with every port on 127.0.0.1:0, and gives the specs
 * typed clients and workspace helpers. One boot per spec file; every attack runs against that live system.
 */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { contentservice, createWorkspaceContentClient, createWorkspaceManagerClient, wsman } from '@workbay/api';
import type { WorkspaceContentClient, WorkspaceManagerClient } from '@workbay/api';

const here = path.dirname(fileURLToPath(import.meta.url));
/** The built CLI of @workbay/manager (src/security and dist/security sit at the same depth). */
export const cliMain = path.resolve(here, '../../../manager/dist/cli/main.js');

/** The workspace user inside a workspace (the original's). */
export const workspaceUid = 33333;

export interface ImageSpec {
  readonly command: readonly string[];
  readonly readiness?: { readonly kind: 'tcp' | 'http' | 'none'; readonly path?: string };
}

export interface BootOptions {
  /** Extra daemon config (merged into daemon.yaml as JSON, which YAML accepts). */
  readonly daemon?: Record<string, unknown>;
  /** Let git initializers clone file:// and local paths (`git.allowLocalRemotes`), when the daemon knows the key. */
  readonly allowLocalRemotes?: boolean;
  /** Local runtime images by reference. */
  readonly images?: Readonly<Record<string, ImageSpec>>;
  /** Extra top-level manager config keys (JSON values). */
  readonly manager?: Record<string, unknown>;
  /** Reuse a directory (restart on the same state). */
  readonly dir?: string;
  /** Fixed addresses instead of 127.0.0.1:0 (the crash-hygiene attack needs the daemon on a known port). */
  readonly managerAddress?: string;
  readonly daemonAddress?: string;
}

export interface Addresses {
  readonly managerAddress: string;
  readonly proxyAddress: string;
  readonly metricsAddress: string;
  readonly daemonAddress: string;
}

export interface Workbay extends Addresses {
  readonly dir: string;
  readonly stateDir: string;
  readonly workingArea: string;
  readonly storageRoot: string;
  readonly runtimeStateDir: string;
  /** World-writable directory outside every content dir where a successful attack would leave a marker. */
  readonly markers: string;
  readonly manager: WorkspaceManagerClient;
  readonly daemon: WorkspaceContentClient;
  readonly process: ChildProcess;
  readonly options: BootOptions;
  /** Everything `workbay up` (and the daemon, output inherited) wrote to stderr. */
  stderr(): string;
  alive(): boolean;
  /** Whether `workbay up` died or its daemon crashed (the supervisor logs each unexpected daemon exit). */
  crashed(): boolean;
  /** SIGINT and wait; keeps `dir`. */
  stop(): Promise<void>;
  /** Stops (SIGKILL when it does not end) and removes the directory. */
  cleanup(): Promise<void>;
}

function yamlLine(key: string, value: unknown): string {
  return `${key}: ${JSON.stringify(value)}`;
}

async function writeConfigs(dir: string, options: BootOptions): Promise<string> {
  const daemon: Record<string, unknown> = {
    quota: { mode: 'none' },
    diskGuard: { minFree: 0 },
    log: { level: 'info' },
    backup: { period: 0 },
    // A refused clone must not keep the suite waiting through minutes of retries.
    initializer: { gitRetryInitial: '100ms', gitRetryMax: '1s' },
    ...options.daemon,
  };
  // The attacks' own servers and git remotes are on 127.0.0.1, which the daemon refuses by default for downloads
  // and network git alike (the refusals have their own specs in the daemon).
  daemon['initializer'] = {
    ...(daemon['initializer'] as object | undefined),
    download: { allowPrivateAddresses: true },
  };
  daemon['git'] = {
    ...(daemon['git'] as object | undefined),
    allowedNetworks: ['127.0.0.1/32'],
    ...(options.allowLocalRemotes ? { allowLocalRemotes: true } : {}),
  };
  await writeFile(
    path.join(dir, 'daemon.yaml'),
    Object.entries(daemon)
      .map(([k, v]) => yamlLine(k, v))
      .join('\n'),
  );
  const images = Object.fromEntries(
    Object.entries(options.images ?? {}).map(([ref, image]) => [
      ref,
      { command: image.command, ...(image.readiness ? { readiness: image.readiness } : {}) },
    ]),
  );
  const manager: Record<string, unknown> = {
    stateDir: path.join(dir, 'manager'),
    workingArea: path.join(dir, 'workspaces'),
    grpc: { address: options.managerAddress ?? '127.0.0.1:0' },
    proxy: { address: '127.0.0.1:0' },
    metrics: { address: '127.0.0.1:0', admin: true },
    daemon: {
      address: options.daemonAddress ?? '127.0.0.1:0',
      httpAddress: 'off',
      storageRoot: path.join(dir, 'storage'),
      configPath: path.join(dir, 'daemon.yaml'),
      output: 'inherit',
    },
    runtime: { kind: 'local', readiness: { intervalMs: 50 }, images },
    stopGrace: { normally: '2s', immediately: '1s', abort: '1s' },
    log: { level: 'info' },
    ...options.manager,
  };
  const file = path.join(dir, 'workbay.yaml');
  await writeFile(
    file,
    Object.entries(manager)
      .map(([k, v]) => yamlLine(k, v))
      .join('\n') + '\n',
  );
  return file;
}

/** Starts `workbay --json up` on a temp directory and resolves once it printed its addresses. */
export async function bootWorkbay(options: BootOptions = {}): Promise<Workbay> {
  if (!existsSync(cliMain)) throw new Error(`build @workbay/manager first: ${cliMain} is missing`);
  const dir = options.dir ?? (await mkdtemp(path.join(os.tmpdir(), 'workbay-sec-')));
  // Workspace uids and git running as them must be able to reach the marker directory, or a successful
  // attack could not leave its marker and the suite would pass for the wrong reason.
  await chmod(dir, 0o755);
  const markers = path.join(dir, 'markers');
  await mkdir(markers, { recursive: true });
  await chmod(markers, 0o1777);
  const config = await writeConfigs(dir, options);
  const child = spawn(process.execPath, [cliMain, '--json', 'up', '--config', config], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, HOME: dir },
  });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => {
    stderr += d.toString();
    if (stderr.length > 4_000_000) stderr = stderr.slice(-2_000_000);
  });
  const addresses = await new Promise<Addresses>((resolve, reject) => {
    createInterface({ input: child.stdout! }).once('line', (line) => resolve(JSON.parse(line) as Addresses));
    child.once('exit', (code) => reject(new Error(`workbay up exited with ${code}: ${stderr.slice(-3000)}`)));
  });
  const manager = createWorkspaceManagerClient(addresses.managerAddress, { defaultTimeoutMs: 30_000 });
  const daemon = createWorkspaceContentClient(addresses.daemonAddress, { defaultTimeoutMs: 30_000 });
  const alive = (): boolean => child.exitCode === null && child.signalCode === null;
  const stopWorkspaces = async (): Promise<void> => {
    // `workbay up` leaves workspaces running on purpose (the next start re-adopts them): stop them first, or
    // every boot would leave namespaced processes behind whose state directory is about to be removed.
    const listed = await manager.getWorkspaces({}).catch(() => ({ status: [] as wsman.WorkspaceStatus[] }));
    const live = listed.status.filter((s) => s.phase !== wsman.WorkspacePhase.STOPPED).map((s) => s.id);
    await Promise.all(
      live.map((id) => manager.stopWorkspace({ id, policy: wsman.StopWorkspacePolicy.ABORT }).catch(() => undefined)),
    );
    const deadline = Date.now() + 60_000;
    while (Date.now() < deadline) {
      const { status } = await manager.getWorkspaces({}).catch(() => ({ status: [] as wsman.WorkspaceStatus[] }));
      if (status.every((s) => s.phase === wsman.WorkspacePhase.STOPPED)) return;
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
  };
  const stop = async (): Promise<void> => {
    if (alive()) await stopWorkspaces();
    manager.close();
    daemon.close();
    if (!alive()) return;
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGINT');
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
    await exited;
    clearTimeout(timer);
  };
  return {
    ...addresses,
    dir,
    stateDir: path.join(dir, 'manager'),
    workingArea: path.join(dir, 'workspaces'),
    storageRoot: path.join(dir, 'storage'),
    runtimeStateDir: path.join(dir, 'manager', 'runtime-local'),
    markers,
    manager,
    daemon,
    process: child,
    options,
    stderr: () => stderr,
    alive,
    crashed: () => !alive() || stderr.includes('the workspace daemon exited unexpectedly'),
    stop,
    cleanup: async () => {
      await stop();
      // Keep what `workbay up` logged: a red attack is diagnosed from it after the temp dir is gone.
      const logs = path.join(os.tmpdir(), 'workbay-security-logs');
      await mkdir(logs, { recursive: true });
      let workspaceLogs = '';
      const logsDir = path.join(dir, 'manager', 'runtime-local', 'logs');
      for (const name of await readdir(logsDir).catch(() => [] as string[])) {
        workspaceLogs += `\n--- workspace log ${name}\n${await readFile(path.join(logsDir, name), 'utf8').catch(() => '')}`;
      }
      await writeFile(path.join(logs, `${path.basename(dir)}.log`), stderr + workspaceLogs);
      await rm(dir, { recursive: true, force: true });
    },
  };
}

// ---------------------------------------------------------------------------------------------------------------
// Workspaces

export type Initializer = contentservice.WorkspaceInitializer;

export const emptyInit = (): Initializer =>
  contentservice.WorkspaceInitializer.fromPartial({ spec: { $case: 'empty', value: {} } });

type GitInitializerInput = NonNullable<Parameters<typeof contentservice.GitInitializer.fromPartial>[0]>;

export function gitInit(remoteUri: string, extra: GitInitializerInput = {}): Initializer {
  return contentservice.WorkspaceInitializer.fromPartial({
    spec: {
      $case: 'git',
      value: {
        remoteUri,
        targetMode: contentservice.CloneTargetMode.REMOTE_HEAD,
        checkoutLocation: 'repo',
        ...extra,
      },
    },
  });
}

export function snapshotInit(snapshot: string): Initializer {
  return contentservice.WorkspaceInitializer.fromPartial({ spec: { $case: 'snapshot', value: { snapshot } } });
}

export interface StartOptions {
  readonly id: string;
  readonly owner?: string;
  readonly metaId?: string;
  readonly image?: string;
  readonly initializer?: Initializer;
  readonly ports?: readonly number[];
  readonly env?: Readonly<Record<string, string>>;
  readonly sshKeys?: readonly string[];
  readonly admission?: 'owner' | 'everyone';
  readonly type?: wsman.WorkspaceType;
}

export function startRequest(o: StartOptions): wsman.StartWorkspaceRequest {
  return wsman.StartWorkspaceRequest.fromPartial({
    id: o.id,
    servicePrefix: o.id,
    type: o.type ?? wsman.WorkspaceType.REGULAR,
    metadata: { owner: o.owner ?? 'alice', metaId: o.metaId ?? `meta-${o.id}` },
    spec: {
      workspaceImage: o.image ?? 'workbay/default',
      initializer: o.initializer ?? emptyInit(),
      ports: (o.ports ?? []).map((port) => ({ port, visibility: wsman.PortVisibility.PORT_VISIBILITY_PRIVATE })),
      envvars: Object.entries(o.env ?? {}).map(([name, value]) => ({ name, value })),
      workspaceLocation: 'repo',
      admission:
        o.admission === 'everyone' ? wsman.AdmissionLevel.ADMIT_EVERYONE : wsman.AdmissionLevel.ADMIT_OWNER_ONLY,
      sshPublicKeys: [...(o.sshKeys ?? [])],
    },
  });
}

export async function startWorkspace(wb: Workbay, o: StartOptions): Promise<wsman.StartWorkspaceResponse> {
  return wb.manager.startWorkspace(startRequest(o));
}

const phaseName = (phase: number): string => wsman.WorkspacePhase[phase] ?? String(phase);

/** Polls DescribeWorkspace until the phase is one of `phases` (or STOPPED); returns the status. */
export async function waitForPhase(
  wb: Workbay,
  id: string,
  phases: readonly wsman.WorkspacePhase[],
  timeoutMs = 90_000,
): Promise<wsman.WorkspaceStatus> {
  const deadline = Date.now() + timeoutMs;
  let last: wsman.WorkspaceStatus | undefined;
  while (Date.now() < deadline) {
    const { status } = await wb.manager.describeWorkspace({ id });
    last = status;
    if (status && (phases.includes(status.phase) || status.phase === wsman.WorkspacePhase.STOPPED)) return status;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`workspace ${id} did not reach ${phases.map(phaseName).join('/')}: ${phaseName(last?.phase ?? -1)}`);
}

/** Starts a workspace and waits for RUNNING; fails with the workspace's own failure message otherwise. */
export async function startRunning(wb: Workbay, o: StartOptions): Promise<wsman.StartWorkspaceResponse> {
  const started = await startWorkspace(wb, o);
  const status = await waitForPhase(wb, o.id, [wsman.WorkspacePhase.RUNNING]);
  if (status.phase !== wsman.WorkspacePhase.RUNNING) {
    throw new Error(`workspace ${o.id} ended ${phaseName(status.phase)}: ${status.conditions?.failed ?? ''}`);
  }
  return started;
}

export async function stopWorkspace(wb: Workbay, id: string, policy = wsman.StopWorkspacePolicy.NORMALLY) {
  await wb.manager.stopWorkspace({ id, policy });
  return waitForPhase(wb, id, [wsman.WorkspacePhase.STOPPED]);
}

/** The content directory the daemon uses for an instance (`<workingArea>/<instanceId>`). */
export const contentDir = (wb: Workbay, id: string): string => path.join(wb.workingArea, id);

/** Every file under `root`, relative, sorted (the storage listing and state-dir greps use it). */
export async function listTree(root: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (dir: string, rel: string): Promise<void> => {
    let entries;
    try {
      entries = await readdir(dir, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) {
      const r = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory()) await walk(path.join(dir, e.name), r);
      else out.push(r);
    }
  };
  await walk(root, '');
  return out.sort();
}

/** Ids and phases of every workspace the manager lists (the "GetWorkspaces unchanged" check). */
export async function workspaceSnapshot(wb: Workbay): Promise<string[]> {
  const { status } = await wb.manager.getWorkspaces({});
  return status.map((s) => `${s.id}:${phaseName(s.phase)}`).sort();
}
