import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createWorkspaceManagerClient, workspaceConditionBool, workspacePhase, wsman } from '@workbay/api';
import { resolveManagerConfig } from '../config.js';
import { DaemonSupervisor } from '../embedded.js';
import { createSilentLogger } from '../logger.js';
import {
  phaseOf,
  startHarness,
  startRequest,
  startSlowFileServer,
  testDaemonConfig,
  testImages,
  waitForPhase,
} from '../test-support/harness.js';
import type { Harness } from '../test-support/harness.js';
import { alive } from '../test-support/local-runtime.js';

describe('restart: re-adoption from the persisted state (manager restarted in-process)', () => {
  let h: Harness;
  beforeAll(async () => {
    h = await startHarness();
  });
  afterAll(async () => {
    await h?.close();
  });

  it('re-adopts running workspaces, keeps stopped ones stopped and fails those that died meanwhile', async () => {
    const keep = startRequest({ spec: { timeout: '1h' } });
    const dies = startRequest();
    const stopped = startRequest();
    for (const r of [keep, dies, stopped]) await h.client.startWorkspace(r);
    for (const r of [keep, dies, stopped]) await waitForPhase(h.client, r.id, 'running');
    await h.client.stopWorkspace({ id: stopped.id, policy: wsman.StopWorkspacePolicy.ABORT });
    await waitForPhase(h.client, stopped.id, 'stopped');
    await h.client.markActive({ id: keep.id });
    const before = (await h.client.describeWorkspace({ id: keep.id })).status!;
    const lastActivity = (await h.client.describeWorkspace({ id: keep.id })).lastActivity;
    const keepPid = (await h.running.runtime.inspect(keep.id))!.pid!;
    const diesPid = (await h.running.runtime.inspect(dies.id))!.pid!;
    const token = (await h.client.describeWorkspace({ id: keep.id })).status!.auth!.ownerToken;

    await h.running.stop();
    // While the manager is down, one workspace process dies.
    process.kill(diesPid, 'SIGKILL');
    await h.restart();

    // Still running, same process, same status; activity time survived.
    expect(await phaseOf(h.client, keep.id)).toBe('running');
    expect(await alive(keepPid)).toBe(true);
    const described = await h.client.describeWorkspace({ id: keep.id });
    expect(described.lastActivity).toBe(lastActivity);
    expect(described.status!.auth!.ownerToken).toBe(before.auth!.ownerToken);
    // The proxy routes to it again.
    const res = await fetch(`http://${h.running.proxyAddress}/ws/${keep.id}/`, {
      headers: { 'x-workbay-owner-token': token },
    });
    expect(res.status).toBe(200);
    // status_version keeps increasing across the restart.
    await h.client.controlAdmission({ id: keep.id, level: wsman.AdmissionLevel.ADMIT_EVERYONE });
    const after = (await h.client.describeWorkspace({ id: keep.id })).status!;
    expect(after.statusVersion).toBeGreaterThan(before.statusVersion);

    // Stopped stays stopped; nothing runs for it.
    expect(await phaseOf(h.client, stopped.id)).toBe('stopped');
    expect(await h.running.runtime.inspect(stopped.id)).toBeUndefined();

    // The one that died goes through the failure path, with a final backup.
    const died = await waitForPhase(h.client, dies.id, 'stopped');
    expect(died.conditions!.failed).toMatch(/workspace process is gone|exited/);
    expect(workspaceConditionBool.fromProto(died.conditions!.finalBackupComplete)).toBe(true);

    await h.client.stopWorkspace({ id: keep.id, policy: wsman.StopWorkspacePolicy.ABORT });
    await waitForPhase(h.client, keep.id, 'stopped');
    // Gone, or a zombie: its parent, the first manager's spawner, is gone, and init reaps it in its own time.
    expect(await alive(keepPid)).toBe(false);
  });

  it('timeouts continue from the persisted activity time', async () => {
    const r = startRequest({ spec: { timeout: '2s' } });
    await h.client.startWorkspace(r);
    await waitForPhase(h.client, r.id, 'running');
    await h.client.markActive({ id: r.id });
    const activity = Date.now();
    await h.restart();
    const stopped = await waitForPhase(h.client, r.id, 'stopped');
    expect(stopped.conditions!.timeout).toMatch(/\(inactivity\)/);
    // It fired 2 s after the activity before the restart, not 2 s after the restart (generous bound).
    expect(Date.now() - activity).toBeLessThan(15_000);
  });

  it('resumes a stop that was under way', async () => {
    const r = startRequest({ image: 'test/stubborn' });
    await h.client.startWorkspace(r);
    await waitForPhase(h.client, r.id, 'running');
    await h.client.stopWorkspace({ id: r.id, policy: wsman.StopWorkspacePolicy.NORMALLY });
    expect(await phaseOf(h.client, r.id)).toBe('stopping');
    await h.restart();
    const stopped = await waitForPhase(h.client, r.id, 'stopped', 20_000);
    expect(stopped.conditions!.failed).toBe('');
    expect(workspaceConditionBool.fromProto(stopped.conditions!.finalBackupComplete)).toBe(true);
  });

  it('resumes a start that was under way', async () => {
    const slow = await startSlowFileServer(1000);
    const r = startRequest({ initializer: slow.initializer });
    await h.client.startWorkspace(r);
    await waitForPhase(h.client, r.id, 'initializing');
    await h.restart();
    await waitForPhase(h.client, r.id, 'running');
    await slow.close();
    await h.client.stopWorkspace({ id: r.id, policy: wsman.StopWorkspacePolicy.ABORT });
    await waitForPhase(h.client, r.id, 'stopped');
  });
});

// A manager in a child process, killed with SIGKILL: nothing gets to shut down cleanly.
const distEntry = fileURLToPath(new URL('../../dist/index.js', import.meta.url));

describe('restart after SIGKILL (manager in a child process)', () => {
  let dir: string;
  let daemon: DaemonSupervisor;
  let child: ChildProcess | undefined;

  beforeAll(async () => {
    if (!existsSync(distEntry))
      throw new Error(`${distEntry} is missing: build the package first (npx nx run manager:build)`);
    dir = await mkdtemp(join(tmpdir(), 'workbay-kill-'));
    await writeFile(join(dir, 'daemon.yaml'), testDaemonConfig);
    daemon = new DaemonSupervisor(
      resolveManagerConfig({
        workingArea: join(dir, 'workspaces'),
        daemon: {
          address: '127.0.0.1:0',
          httpAddress: 'off',
          storageRoot: join(dir, 'storage'),
          configPath: join(dir, 'daemon.yaml'),
          output: 'ignore',
        },
      }),
      createSilentLogger(),
    );
    await daemon.start();
  });
  afterAll(async () => {
    child?.kill('SIGKILL');
    await daemon?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  async function launch(): Promise<string> {
    const config = join(dir, 'manager.json');
    await writeFile(
      config,
      JSON.stringify({
        stateDir: join(dir, 'manager'),
        workingArea: join(dir, 'workspaces'),
        grpc: { address: '127.0.0.1:0' },
        proxy: { address: '127.0.0.1:0' },
        metrics: { enabled: false },
        daemon: { address: daemon.address },
        idePorts: { from: 31000, to: 31999 },
        runtime: { kind: 'local', isolation: 'none', cgroups: 'off', exitPollIntervalMs: 100, images: testImages },
        log: { level: 'silent' },
      }),
    );
    const script = `
      import { loadManagerConfig, startManager } from ${JSON.stringify(distEntry)};
      const running = await startManager({ config: await loadManagerConfig(${JSON.stringify(config)}) });
      console.log('GRPC ' + running.grpcAddress);
    `;
    const proc = spawn(process.execPath, ['--input-type=module', '-e', script], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    child = proc;
    return new Promise((resolve, reject) => {
      let out = '';
      proc.stdout!.on('data', (chunk: Buffer) => {
        out += chunk.toString();
        const match = /GRPC (\S+)/.exec(out);
        if (match) resolve(match[1]!);
      });
      proc.once('exit', (code) => reject(new Error(`manager exited with ${code}`)));
    });
  }

  it('re-adopts the running workspace, and status_version keeps increasing', async () => {
    let client = createWorkspaceManagerClient(await launch(), { defaultTimeoutMs: 20_000 });
    const r = startRequest();
    await client.startWorkspace(r);
    const running = await waitForPhase(client, r.id, 'running');
    const killed = child!;
    killed.kill('SIGKILL');
    await new Promise((resolve) => killed.once('exit', resolve));
    client.close();

    client = createWorkspaceManagerClient(await launch(), { defaultTimeoutMs: 20_000 });
    const adopted = (await client.describeWorkspace({ id: r.id })).status!;
    expect(workspacePhase.fromProto(adopted.phase)).toBe('running');
    await client.stopWorkspace({ id: r.id, policy: wsman.StopWorkspacePolicy.NORMALLY });
    const stopped = await waitForPhase(client, r.id, 'stopped');
    expect(stopped.statusVersion).toBeGreaterThan(running.statusVersion);
    expect(stopped.conditions!.failed).toBe('');
    expect(workspaceConditionBool.fromProto(stopped.conditions!.finalBackupComplete)).toBe(true);
    client.close();
  });
});
