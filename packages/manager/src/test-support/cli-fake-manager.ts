/**
 * TEST ONLY: the `workbay` CLI against a gRPC server on 127.0.0.1:0 that is a small in-memory fake of
 * wsman.WorkspaceManager (it walks workspaces through the phases on a timer). `workbay` runs the CLI in-process
 * through `runCli`; `workbayProcess` runs the built bin as a child process. Call `serveFakeManager()` at the top level
 * of a spec file (it registers the `beforeAll` that starts the server and the `afterAll` that stops it); `fake`,
 * `address` and `tmp` are set from its `beforeAll` on. The real manager is exercised by src/cli/manager.cli.spec.ts
 * (real gRPC server and local runtime) and src/cli/up.cli.spec.ts (`workbay up`).
 */
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Server, ServerCredentials } from '@grpc/grpc-js';
import { Subject, map } from 'rxjs';
import { runBin } from './run-bin.js';
import type { BinRun } from './run-bin.js';
import { afterAll, beforeAll } from 'vitest';
import {
  AlreadyExistsError,
  FailedPreconditionError,
  NotFoundError,
  UnavailableError,
  WorkspaceManagerService,
  serverStreamHandler,
  unaryHandler,
  wsman,
} from '@workbay/api';
import type { WorkspaceManagerServer } from '@workbay/api';
import { runCli } from '../cli/program.js';

export const mainJs = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../dist/cli/main.js');

interface FakeWorkspace {
  status: wsman.WorkspaceStatus;
  timers: NodeJS.Timeout[];
}

/** An in-memory WorkspaceManager: enough behaviour to exercise every CLI command. */
export class FakeManager {
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
      status:
        req.id === 'cli-c1'
          ? // A status carrying what a repository chose: a branch with C1 controls (CSI, OSC, ST), a message with ESC.
            wsman.WorkspaceStatus.fromPartial({
              id: 'cli-c1',
              phase: wsman.WorkspacePhase.RUNNING,
              message: 'ready \u001b]0;PWNED\u0007',
              repo: { branch: 'main\u009b31mRED\u009b0m\u009d0;PWNED\u009c', latestCommit: '5aa94e6a30e8' },
            })
          : this.get(req.id).status,
      lastActivity: '2026-01-01T00:00:00Z',
    })),
    backupWorkspace: unaryHandler(async (req) => {
      if (req.id === 'cli-escape') throw new FailedPreconditionError('a name \u001b]0;PWNED\u0007\u001b[31mRED\u009b');
      if (req.id === 'cli-storage-down')
        throw new UnavailableError("backup of workspace 'cli-storage-down' failed: storage down");
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

export type Run = BinRun;

let server: Server;
export let fake: FakeManager;
export let address: string;
export let tmp: string;

/** Runs the CLI in this process (fast); what it prints and returns is what the bin would. */
export async function workbay(args: string[], env: Record<string, string> = {}): Promise<Run> {
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
export function workbayProcess(args: string[]): Promise<Run> {
  return runBin(mainJs, args, { WORKBAY_ADDRESS: address, WORKBAY_OWNER: 'alice' });
}

/** Starts the fake server before the calling spec file's first test and stops it after its last. */
export function serveFakeManager(): void {
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
}
