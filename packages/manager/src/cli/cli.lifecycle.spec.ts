// Workspaces through the CLI: start, list, describe, the control commands, stop --wait and watch.
import { spawn } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { wsman } from '@workbay/api';
import { address, fake, mainJs, serveFakeManager, tmp, workbay } from '../test-support/cli-fake-manager.js';

serveFakeManager();

describe('workbay CLI against a WorkspaceManager server', () => {
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
});
