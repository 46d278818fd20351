/**
 * The built `workbay` CLI as a child process against the real manager: its gRPC server, lifecycle core, port
 * proxy and the real local runtime (processes on this machine), with the test content daemon of
 * src/test-support.
 */
import { existsSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { runBin } from '../test-support/run-bin.js';
import type { BinRun as Run } from '../test-support/run-bin.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startHarness } from '../test-support/harness.js';
import type { Harness } from '../test-support/harness.js';

const mainJs = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../dist/cli/main.js');
let h: Harness;

function workbay(args: string[]): Promise<Run> {
  return runBin(mainJs, args, { WORKBAY_ADDRESS: h.running.grpcAddress, WORKBAY_OWNER: 'carol' });
}

beforeAll(async () => {
  if (!existsSync(mainJs)) throw new Error(`build @workbay/manager first: ${mainJs} is missing`);
  h = await startHarness();
});

afterAll(async () => {
  await h?.close();
});

describe('workbay CLI against the real manager', () => {
  it('starts the default workspace, which serves its page through the port proxy', async () => {
    const run = await workbay(['--json', 'start', '--id', 'real-1', '--meta-id', 'real-meta-1', '--wait']);
    expect(run.code, run.stderr).toBe(0);
    const out = JSON.parse(run.stdout) as { url: string; ownerToken: string; phase: string };
    expect(out.phase).toBe('running');
    expect(run.stderr).toMatch(/real-1: pending after/);
    expect(run.stderr).toMatch(/real-1: running after/);
    const page = await fetch(out.url, { headers: { 'x-workbay-owner-token': out.ownerToken } });
    expect(page.status).toBe(200);
    expect(await page.text()).toContain('real-meta-1');
    expect((await fetch(out.url)).status).not.toBe(200);
  });

  it('lists, describes and controls the running workspace', async () => {
    const list = await workbay(['list', '--owner', 'carol']);
    expect(list.code, list.stderr).toBe(0);
    expect(list.stdout).toMatch(/^real-1\s+real-meta-1\s+carol\s+running\s/m);
    const describe = await workbay(['describe', 'real-1']);
    expect(describe.stdout).toMatch(/^Phase\s+running$/m);
    expect(describe.stdout).toMatch(/^Image\s+workbay\/default$/m);

    expect((await workbay(['timeout', 'real-1', '45m'])).code).toBe(0);
    expect((await workbay(['describe', 'real-1'])).stdout).toMatch(/^Inactivity timeout\s+45m0s$/m);
    const exposed = await workbay(['port', 'expose', 'real-1', '8080', '--public']);
    expect(exposed.code, exposed.stderr).toBe(0);
    expect(exposed.stdout).toMatch(/^real-1: 8080 public http http:\/\//);
    expect((await workbay(['port', 'unexpose', 'real-1', '8080'])).code).toBe(0);
    expect((await workbay(['admission', 'real-1', 'everyone'])).code).toBe(0);
    expect((await workbay(['describe', 'real-1'])).stdout).toMatch(/^Admission\s+everyone$/m);
    const keyFile = path.join(h.dir, 'key.pub');
    await writeFile(keyFile, 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBm carol@laptop\n');
    const keys = await workbay(['ssh-key', 'real-1', keyFile]);
    expect(keys.code, keys.stderr).toBe(0);
    const classes = await workbay(['classes']);
    expect(classes.stdout).toMatch(/^g1-standard \*/m);
  });

  it('maps the manager’s errors to exit codes', async () => {
    const dup = await workbay(['start', '--id', 'real-1']);
    expect(dup.code).toBe(3);
    expect((await workbay(['describe', 'no-such-workspace'])).code).toBe(2);
    const bad = await workbay(['start', '--class', 'no-such-class']);
    expect(bad.code, bad.stderr).toBe(1);
    expect(bad.stderr).toMatch(/class/);
  });

  it('start --wait reports a workspace that fails with exit 6 and the reason', async () => {
    const run = await workbay(['start', '--image', 'test/missing', '--wait']);
    expect(run.code, run.stderr).toBe(6);
    expect(run.stderr).toMatch(/failed: .*could not be run/);
  });

  it('stop --wait ends in STOPPED', async () => {
    const run = await workbay(['stop', 'real-1', '--policy', 'immediately', '--wait']);
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toBe('real-1 stopped\n');
  });
});
