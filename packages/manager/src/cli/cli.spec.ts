/**
 * The `workbay` CLI against a gRPC server on 127.0.0.1:0 that is a small in-memory fake of wsman.WorkspaceManager
 * (it walks workspaces through the phases on a timer). Most cases run the CLI in-process through `runCli`; help,
 * `watch` with SIGINT and the unreachable-manager case run the built bin as a child process. The real manager
 * is exercised by manager.cli.spec.ts (real gRPC server and local runtime) and up.cli.spec.ts (`workbay up`).
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Server, ServerCredentials } from '@grpc/grpc-js';
import { Subject, map } from 'rxjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  AlreadyExistsError,
  FailedPreconditionError,
  NotFoundError,
  WorkspaceManagerService,
  serverStreamHandler,
  unaryHandler,
  wsman,
} from '@workbay/api';
import type { WorkspaceManagerServer } from '@workbay/api';
import { runCli } from './program.js';

const mainJs = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../dist/cli/main.js');

interface FakeWorkspace {
  status: wsman.WorkspaceStatus;
  timers: NodeJS.Timeout[];
}

/** An in-memory WorkspaceManager: enough behaviour to exercise every CLI command. */
class FakeManager {
  readonly workspaces = new Map<string, FakeWorkspace>();
  readonly updates = new Subject<wsman.WorkspaceStatus>();
  readonly calls: { method: string; request: unknown }[] = [];
  private version = 0;

  private publish(ws: FakeWorkspace, change: Partial<wsman.WorkspaceStatus>): void {
    ws.status = wsman.WorkspaceStatus.fromPartial({ ...ws.status, ...change, statusVersion: ++this.version });
    this.updates.next(ws.status);
  }

  private get(id: string): FakeWorkspace {
    const ws = this.workspaces.get(id);
    if (!ws) throw new NotFoundError(`workspace ${id} does not exist`);
    return ws;
  }

  readonly impl: WorkspaceManagerServer = {
    getWorkspaces: unaryHandler(async (req) => {
      this.calls.push({ method: 'getWorkspaces', request: req });
      return {
        status: [...this.workspaces.values()]
          .map((w) => w.status)
          .filter((s) => !req.mustMatch?.owner || s.metadata?.owner === req.mustMatch.owner),
      };
    }),
    startWorkspace: unaryHandler(async (req) => {
      this.calls.push({ method: 'startWorkspace', request: req });
      const image = req.spec?.workspaceImage ?? '';
      if (image === 'maintenance') throw new FailedPreconditionError('under maintenance');
      if (this.workspaces.has(req.id)) throw new AlreadyExistsError(`workspace ${req.id} already exists`);
      const ws: FakeWorkspace = {
        status: wsman.WorkspaceStatus.fromPartial({
          id: req.id,
          metadata: { ...req.metadata, startedAt: new Date() },
          spec: {
            workspaceImage: image,
            url: `http://proxy/ws/${req.id}/`,
            class: req.spec?.class || 'g1-standard',
            exposedPorts: req.spec?.ports ?? [],
            timeout: req.spec?.timeout ?? '',
          },
          auth: { ownerToken: '0123456789abcdef0123456789abcdef' },
          phase: wsman.WorkspacePhase.PENDING,
        }),
        timers: [],
      };
      this.workspaces.set(req.id, ws);
      this.publish(ws, {});
      const steps: [number, Partial<wsman.WorkspaceStatus>][] =
        image === 'fail/me'
          ? [
              [60, { phase: wsman.WorkspacePhase.CREATING }],
              [
                120,
                {
                  phase: wsman.WorkspacePhase.STOPPING,
                  conditions: wsman.WorkspaceConditions.fromPartial({ failed: 'image fail/me does not exist' }),
                },
              ],
              [180, { phase: wsman.WorkspacePhase.STOPPED }],
            ]
          : image === 'slow/forever'
            ? [[60, { phase: wsman.WorkspacePhase.CREATING }]]
            : [
                [60, { phase: wsman.WorkspacePhase.CREATING }],
                [120, { phase: wsman.WorkspacePhase.INITIALIZING }],
                [180, { phase: wsman.WorkspacePhase.RUNNING }],
              ];
      for (const [delay, change] of steps) ws.timers.push(setTimeout(() => this.publish(ws, change), delay));
      return { url: ws.status.spec!.url, ownerToken: ws.status.auth!.ownerToken };
    }),
    stopWorkspace: unaryHandler(async (req) => {
      this.calls.push({ method: 'stopWorkspace', request: req });
      const ws = this.get(req.id);
      ws.timers.forEach(clearTimeout);
      this.publish(ws, { phase: wsman.WorkspacePhase.STOPPING });
      ws.timers.push(setTimeout(() => this.publish(ws, { phase: wsman.WorkspacePhase.STOPPED }), 80));
      return {};
    }),
    describeWorkspace: unaryHandler(async (req) => ({
      status: this.get(req.id).status,
      lastActivity: '2026-01-01T00:00:00Z',
    })),
    backupWorkspace: unaryHandler(async (req) => {
      this.get(req.id);
      return { url: `workspaces/${req.id}/full.tar@workbay-user-x` };
    }),
    subscribe: serverStreamHandler((req) => {
      this.calls.push({ method: 'subscribe', request: req });
      return this.updates.pipe(map((status) => wsman.SubscribeResponse.fromPartial({ status })));
    }),
    markActive: unaryHandler(async () => ({})),
    setTimeout: unaryHandler(async (req) => {
      this.calls.push({ method: 'setTimeout', request: req });
      this.get(req.id);
      return {};
    }),
    controlPort: unaryHandler(async (req) => {
      this.calls.push({ method: 'controlPort', request: req });
      const ws = this.get(req.id);
      const ports = (ws.status.spec?.exposedPorts ?? []).filter((p) => p.port !== req.spec?.port);
      if (req.expose && req.spec) ports.push({ ...req.spec, url: `http://proxy/ws/${req.id}/port/${req.spec.port}/` });
      this.publish(ws, { spec: wsman.WorkspaceSpec.fromPartial({ ...ws.status.spec, exposedPorts: ports }) });
      return {};
    }),
    takeSnapshot: unaryHandler(async (req) => {
      this.calls.push({ method: 'takeSnapshot', request: req });
      this.get(req.id);
      return { url: `workspaces/${req.id}/snapshot-1700000000000000000.tar@workbay-user-x` };
    }),
    controlAdmission: unaryHandler(async (req) => {
      this.calls.push({ method: 'controlAdmission', request: req });
      this.get(req.id);
      return {};
    }),
    deleteVolumeSnapshot: unaryHandler(async () => ({ wasDeleted: false })),
    updateSshKey: unaryHandler(async (req) => {
      this.calls.push({ method: 'updateSshKey', request: req });
      this.get(req.id);
      return {};
    }),
    describeCluster: unaryHandler(async () => ({
      workspaceClasses: [
        { id: 'g1-large', displayName: 'Large', description: '4 vCPU, 8GB memory', creditsPerMinute: 0.3333 },
        { id: 'g1-standard', displayName: 'Standard', description: '2 vCPU, 4GB memory', creditsPerMinute: 0.1667 },
      ],
      preferredWorkspaceClass: 'g1-standard',
    })),
  };

  lastCall(method: string): unknown {
    return this.calls.filter((c) => c.method === method).at(-1)?.request;
  }
}

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

let server: Server;
let fake: FakeManager;
let address: string;
let tmp: string;

/** Runs the CLI in this process (fast); what it prints and returns is what the bin would. */
async function workbay(args: string[], env: Record<string, string> = {}): Promise<Run> {
  let stdout = '';
  let stderr = '';
  const code = await runCli(args, {
    stdout: { write: (text: string) => (stdout += text) },
    stderr: { write: (text: string) => (stderr += text) },
    env: { WORKBAY_ADDRESS: address, WORKBAY_OWNER: 'alice', ...env },
  });
  return { code, stdout, stderr };
}

/** Runs the built bin as a child process, for what only a real process shows (argv, exit status, signals). */
function workbayProcess(args: string[]): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [mainJs, ...args], {
      env: { ...process.env, WORKBAY_ADDRESS: address, WORKBAY_OWNER: 'alice' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

beforeAll(async () => {
  if (!existsSync(mainJs)) throw new Error(`build @workbay/manager first: ${mainJs} is missing`);
  tmp = await mkdtemp(path.join(os.tmpdir(), 'workbay-cli-'));
  fake = new FakeManager();
  server = new Server();
  server.addService(WorkspaceManagerService, fake.impl);
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p))),
  );
  address = `127.0.0.1:${port}`;
});

afterAll(async () => {
  for (const ws of fake.workspaces.values()) ws.timers.forEach(clearTimeout);
  server.forceShutdown();
  await rm(tmp, { recursive: true, force: true });
});

describe('workbay CLI against a WorkspaceManager server', () => {
  it('prints help with the exit codes, and fails usage errors with 1', async () => {
    const help = await workbayProcess(['--help']);
    expect(help.code).toBe(0);
    for (const command of [
      'up',
      'list',
      'start',
      'stop',
      'describe',
      'watch',
      'snapshot',
      'backup',
      'timeout',
      'port',
      'admission',
      'ssh-key',
      'classes',
    ]) {
      expect(help.stdout).toMatch(new RegExp(`^  ${command}\\b`, 'm'));
    }
    expect(help.stdout).toContain('Exit codes: 0 ok, 1 usage');
    expect((await workbayProcess(['frobnicate'])).code).toBe(1);
    const bad = await workbay(['stop', 'x', '--policy', 'gently']);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toContain('Allowed choices are normally, immediately, abort');
  });

  it('start --wait follows the phases to RUNNING with progress on stderr', async () => {
    const run = await workbay([
      '--json',
      'start',
      '--id',
      'cli-1',
      '--meta-id',
      'meta-1',
      '--port',
      '3000:public',
      '--env',
      'A=1',
      '--wait',
    ]);
    expect(run.code, run.stderr).toBe(0);
    const out = JSON.parse(run.stdout) as { id: string; url: string; ownerToken: string; phase: string };
    expect(out).toMatchObject({ id: 'cli-1', metaId: 'meta-1', url: 'http://proxy/ws/cli-1/', phase: 'running' });
    expect(out.ownerToken).toHaveLength(32);
    expect(run.stderr).toMatch(/cli-1: pending after \d+\.\ds/);
    expect(run.stderr).toMatch(/cli-1: running after \d+\.\ds/);
    const request = fake.lastCall('startWorkspace') as wsman.StartWorkspaceRequest;
    expect(request.metadata?.owner).toBe('alice');
    expect(request.spec?.envvars).toEqual([{ name: 'A', value: '1' }]);
    expect(request.spec?.ports[0]).toMatchObject({
      port: 3000,
      visibility: wsman.PortVisibility.PORT_VISIBILITY_PUBLIC,
    });
    expect(request.spec?.initializer?.spec?.$case).toBe('empty');
  });

  it('start prints URL and owner token for people, and maps a duplicate to exit 3', async () => {
    const run = await workbay([
      'start',
      '--id',
      'cli-2',
      '--git',
      'https://example.com/acme/app.git',
      '--branch',
      'dev',
    ]);
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toMatch(
      /^cli-2\n {2}workspace {4}ws-[0-9a-f]{10}\n {2}url {10}http:\/\/proxy\/ws\/cli-2\/\n {2}owner token {2}\S{32}\n {2}open {9}http:\/\/proxy\/ws\/cli-2\/\?workbayOwnerToken=\S{32}\n$/,
    );
    const request = fake.lastCall('startWorkspace') as wsman.StartWorkspaceRequest;
    expect(request.spec?.workspaceLocation).toBe('app');
    expect(request.spec?.initializer?.spec).toMatchObject({
      $case: 'git',
      value: { remoteUri: 'https://example.com/acme/app.git', cloneTaget: 'dev', checkoutLocation: 'app' },
    });
    const dup = await workbay(['start', '--id', 'cli-2']);
    expect(dup.code).toBe(3);
    expect(dup.stderr).toBe('workbay: workspace cli-2 already exists\n');
  });

  it('start --wait exits 6 when the workspace fails, 5 when it takes too long, 3 in maintenance', async () => {
    const failed = await workbay(['start', '--id', 'cli-fail', '--image', 'fail/me', '--wait']);
    expect(failed.code).toBe(6);
    expect(failed.stderr).toContain('workbay: workspace cli-fail failed: image fail/me does not exist');
    const slow = await workbay([
      '--timeout',
      '500ms',
      'start',
      '--id',
      'cli-slow',
      '--image',
      'slow/forever',
      '--wait',
    ]);
    expect(slow.code).toBe(5);
    expect(slow.stderr).toContain('timed out after 0.5s waiting for cli-slow');
    const maintenance = await workbay(['start', '--image', 'maintenance']);
    expect(maintenance.code).toBe(3);
    expect(maintenance.stderr).toContain('under maintenance');
  });

  it('rejects bad input before calling the manager (exit 1)', async () => {
    const before = fake.calls.length;
    for (const args of [
      ['start', '--port', '70000'],
      ['start', '--port', '3000', '--port', '3000'],
      ['start', '--env', '1BAD=x'],
      ['start', '--snapshot', 'no-bucket'],
      ['start', '--git', 'https://x/y', '--snapshot', 'a@b'],
      ['start', '--inactivity-timeout', '5 minutes'],
      ['timeout', 'cli-1', 'soon'],
      ['--timeout', 'forever', 'list'],
    ]) {
      const run = await workbay(args);
      expect(run.code, `${args.join(' ')}: ${run.stderr}`).toBe(1);
      expect(run.stderr).toMatch(/^workbay: /);
    }
    expect(fake.calls.length).toBe(before);
  });

  it('list shows a table, or JSON, filtered by owner and phase', async () => {
    const table = await workbay(['list']);
    expect(table.code).toBe(0);
    const lines = table.stdout.trimEnd().split('\n');
    expect(lines[0]).toMatch(/^INSTANCE\s+WORKSPACE\s+OWNER\s+PHASE\s+CLASS\s+AGE\s+URL$/);
    expect(table.stdout).toMatch(/cli-1\s+meta-1\s+alice\s+running\s+g1-standard\s+\d+s\s+http:\/\/proxy\/ws\/cli-1\//);
    const json = await workbay(['--json', 'list', '--phase', 'running']);
    const items = JSON.parse(json.stdout) as { id: string; phase: string }[];
    expect(items.length).toBeGreaterThan(0);
    expect(items.every((s) => s.phase === 'running')).toBe(true);
    const none = await workbay(['list', '--owner', 'nobody']);
    expect(none.stdout).toBe('');
    expect(none.stderr).toBe('No workspaces.\n');
    expect((fake.lastCall('getWorkspaces') as wsman.GetWorkspacesRequest).mustMatch?.owner).toBe('nobody');
  });

  it('describe shows one workspace, hides the owner token, and exits 2 for an unknown one', async () => {
    const run = await workbay(['describe', 'cli-1']);
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(/^Instance\s+cli-1$/m);
    expect(run.stdout).toMatch(/^Phase\s+running$/m);
    expect(run.stdout).toMatch(/^Ports\s+3000 public http$/m);
    expect(run.stdout).toContain('(hidden; use --show-token)');
    expect((await workbay(['describe', 'cli-1', '--show-token'])).stdout).toContain('0123456789abcdef0123456789abcdef');
    const missing = await workbay(['describe', 'nope']);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toBe('workbay: workspace nope does not exist\n');
  });

  it('timeout, port, admission, ssh-key, snapshot, backup and classes', async () => {
    expect((await workbay(['timeout', 'cli-1', '45m', '--type', 'closed'])).code).toBe(0);
    expect(fake.lastCall('setTimeout')).toMatchObject({
      id: 'cli-1',
      duration: '45m',
      type: wsman.TimeoutType.CLOSED_TIMEOUT,
    });

    const exposed = await workbay(['port', 'expose', 'cli-1', '8080', '--public', '--protocol', 'https']);
    expect(exposed.code, exposed.stderr).toBe(0);
    expect(exposed.stdout).toBe('cli-1: 8080 public https http://proxy/ws/cli-1/port/8080/\n');
    expect((await workbay(['port', 'unexpose', 'cli-1', '8080'])).code).toBe(0);
    expect(fake.lastCall('controlPort')).toMatchObject({ expose: false, spec: { port: 8080 } });

    expect((await workbay(['admission', 'cli-1', 'everyone'])).code).toBe(0);
    expect(fake.lastCall('controlAdmission')).toMatchObject({ level: wsman.AdmissionLevel.ADMIT_EVERYONE });
    expect((await workbay(['admission', 'cli-1', 'all'])).code).toBe(1);

    const keyFile = path.join(tmp, 'id.pub');
    await writeFile(keyFile, '# mine\nssh-ed25519 AAAAC3Nza alice@laptop\n\nssh-rsa AAAAB3 alice@desk\n');
    const keys = await workbay(['ssh-key', 'cli-1', keyFile]);
    expect(keys.stdout).toBe('cli-1: 2 SSH keys installed\n');
    expect((fake.lastCall('updateSshKey') as wsman.UpdateSSHKeyRequest).keys).toEqual([
      'ssh-ed25519 AAAAC3Nza alice@laptop',
      'ssh-rsa AAAAB3 alice@desk',
    ]);

    const snap = await workbay(['snapshot', 'cli-1']);
    expect(snap.stdout).toBe('workspaces/cli-1/snapshot-1700000000000000000.tar@workbay-user-x\n');
    expect(fake.lastCall('takeSnapshot')).toMatchObject({ returnImmediately: false });
    expect((await workbay(['snapshot', 'cli-1', '--no-wait'])).code).toBe(0);
    expect(fake.lastCall('takeSnapshot')).toMatchObject({ returnImmediately: true });
    expect((await workbay(['backup', 'cli-1'])).stdout).toBe('workspaces/cli-1/full.tar@workbay-user-x\n');

    const classes = await workbay(['classes']);
    expect(classes.stdout).toMatch(/^ID\s+NAME\s+DESCRIPTION\s+CREDITS\/MIN$/m);
    expect(classes.stdout).toMatch(/^g1-standard \*\s+Standard\s+2 vCPU, 4GB memory\s+0\.1667$/m);
    const json = JSON.parse((await workbay(['--json', 'classes'])).stdout) as { preferredWorkspaceClass: string };
    expect(json.preferredWorkspaceClass).toBe('g1-standard');
  });

  it('stop --wait follows the workspace to STOPPED with the chosen policy', async () => {
    const run = await workbay(['stop', 'cli-1', '--policy', 'immediately', '--wait']);
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toBe('cli-1 stopped\n');
    expect(run.stderr).toMatch(/cli-1: stopped after/);
    expect(fake.lastCall('stopWorkspace')).toMatchObject({
      id: 'cli-1',
      policy: wsman.StopWorkspacePolicy.IMMEDIATELY,
    });
    expect((await workbay(['stop', 'nope'])).code).toBe(2);
  });

  it('watch streams live updates as JSON lines until interrupted', async () => {
    const subscribes = (): number => fake.calls.filter((c) => c.method === 'subscribe').length;
    const before = subscribes();
    const child = spawn(process.execPath, [mainJs, '--json', 'watch', '--id', 'cli-w'], {
      env: { ...process.env, WORKBAY_ADDRESS: address },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    const sawRunning = new Promise<void>((resolve) =>
      child.stdout.on('data', (d: Buffer) => {
        stdout += d.toString();
        if (stdout.includes('"running"')) resolve();
      }),
    );
    const exited = new Promise<number | null>((resolve) => child.on('close', resolve));
    // Once the watch's stream is open (the server saw the call), start a workspace through the CLI.
    while (subscribes() === before) await new Promise((r) => setTimeout(r, 20));
    await new Promise((r) => setTimeout(r, 50));
    expect((await workbay(['start', '--id', 'cli-w'])).code).toBe(0);
    expect((await workbay(['start', '--id', 'cli-other'])).code).toBe(0);
    await sawRunning;
    child.kill('SIGINT');
    expect(await exited).toBe(0);
    const phases = stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { id: string; phase?: string });
    expect(phases.every((p) => p.id === 'cli-w')).toBe(true);
    expect(phases.map((p) => p.phase)).toEqual(['pending', 'creating', 'initializing', 'running']);
  });

  it('exits 4 with a hint when the manager is unreachable', async () => {
    const run = await workbayProcess(['--address', '127.0.0.1:1', 'list']);
    expect(run.code).toBe(4);
    expect(run.stderr).toContain('workbay: cannot reach the manager at 127.0.0.1:1');
    expect(run.stderr).toContain("start one with 'workbay up'");
  });
});
