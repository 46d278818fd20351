/**
 * A cgroup kill reports what it could not check (issue 9): processes it cannot list are not counted as gone, while
 * a cgroup that no longer exists has nothing left to kill.
 */
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CgroupController } from './cgroup.js';

describe('cgroup kill failures (fixture tree)', () => {
  let root: string;
  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), 'cgroup-kill-fixture-'));
    await writeFile(join(root, 'cgroup.controllers'), 'cpu memory pids\n');
  });
  afterAll(async () => {
    await rm(root, { recursive: true, force: true });
  });

  it('fails when the processes of the cgroup cannot be listed', async () => {
    // cgroup.procs as a directory: reading it fails with EISDIR, which is not "no processes".
    await mkdir(join(root, 'ws-unlistable', 'cgroup.procs'), { recursive: true });
    const cg = new CgroupController({ version: 'v2', root }).cgroup('ws-unlistable');
    await expect(cg.kill()).rejects.toMatchObject({ name: 'CgroupError', code: 'EISDIR' });
  });

  it('succeeds for a cgroup that is already gone', async () => {
    const cg = new CgroupController({ version: 'v2', root }).cgroup('ws-gone');
    await expect(cg.kill()).resolves.toBeUndefined();
  });
});
