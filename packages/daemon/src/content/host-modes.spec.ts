/**
 * Host file modes between workspaces (daemon as root, real host uids): the working area lets a workspace's uid
 * reach its own content but list nothing, and a content root is its owner's alone, also when the snapshot it was
 * restored from carried a wider mode. Round 7 of the red team read a neighbour's repository through both.
 */
import { execFileSync } from 'node:child_process';
import { chmod, mkdir, mkdtemp, readFile, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { contentservice } from '@workbay/api';
import { startTestDaemon } from '../test-support/daemon-harness.js';
import type { TestDaemon } from '../test-support/daemon-harness.js';

const isRoot = process.getuid?.() === 0;
const empty: contentservice.WorkspaceInitializer = { spec: { $case: 'empty', value: {} } };

/** Runs `command` as `uid` (no groups); its stdout, or the error it failed with. */
function runAs(uid: number, command: string[]): { out?: string; error?: string } {
  try {
    const out = execFileSync('setpriv', [`--reuid=${uid}`, `--regid=${uid}`, '--clear-groups', '--', ...command], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    return { out };
  } catch (error) {
    return { error: String((error as { stderr?: string }).stderr ?? error) };
  }
}

describe.runIf(isRoot)('host modes of the working area and content roots (daemon as root)', () => {
  let root: string;
  let t: TestDaemon;
  const hostUid = async (id: string): Promise<number> =>
    (JSON.parse(await readFile(join(t.workingArea, `${id}.workspace.json`), 'utf8')) as { hostUser: { uid: number } })
      .hostUser.uid;

  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), 'workbay-host-modes-'));
    await chmod(root, 0o755);
    // As an older daemon left it.
    await mkdir(join(root, 'workspaces'), { mode: 0o755 });
    await chmod(join(root, 'workspaces'), 0o755);
    t = await startTestDaemon({
      root,
      config: { workspaceIds: { base: 330_000, count: 2, claimsDir: join(root, 'claims') } },
    });
  });
  afterAll(async () => {
    await t.cleanup();
  });

  it("lets a workspace's uid reach only its own content", async () => {
    expect((await stat(t.workingArea)).mode & 0o777).toBe(0o711);
    const metadata = { owner: 'alice', metaId: 'ws-modes' };
    const first = await t.client.initWorkspace({ id: 'modes-1', metadata, initializer: empty });
    expect((await stat(first.contentLocation)).mode & 0o777).toBe(0o700);
    // A snapshot of a root the workspace opened up (its own choice, in its own workspace) restores as 0700.
    await chmod(first.contentLocation, 0o755);
    await writeFile(join(first.contentLocation, 'secret'), 'alice\n', { mode: 0o644 });
    const snapshot = (await t.client.takeSnapshot({ id: 'modes-1' })).url;
    const second = await t.client.initWorkspace({
      id: 'modes-2',
      metadata: { owner: 'alice', metaId: 'ws-modes-2' },
      initializer: { spec: { $case: 'snapshot', value: { snapshot, fromVolumeSnapshot: false } } },
    });
    expect((await stat(second.contentLocation)).mode & 0o777).toBe(0o700);

    const attacker = await hostUid('modes-1');
    const victim = await hostUid('modes-2');
    expect(attacker).not.toBe(victim);
    // Its own content, through the working area.
    expect(runAs(attacker, ['cat', join(first.contentLocation, 'secret')]).out).toBe('alice\n');
    expect(runAs(victim, ['cat', join(second.contentLocation, 'secret')]).out).toBe('alice\n');
    // Not the neighbour's, and no list of the working area (instance ids, session files).
    expect(runAs(attacker, ['cat', join(second.contentLocation, 'secret')]).error).toMatch(/Permission denied/);
    expect(runAs(attacker, ['ls', second.contentLocation]).error).toMatch(/Permission denied/);
    expect(runAs(attacker, ['ls', t.workingArea]).error).toMatch(/Permission denied/);
  });
});
