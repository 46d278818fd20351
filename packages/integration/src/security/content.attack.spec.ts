/**
 * Attacks through content (issue 8, items 3 and 8; invariants 6 and 10): links in content that the manager or
 * daemon would write through (`.ssh`, `.ssh/authorized_keys`, `.workbay/ready`), crafted snapshot and backup
 * archives (symlink escapes, absolute and `..` names, hard links to host files, device nodes, FIFOs, set-id files).
 */
import { existsSync } from 'node:fs';
import { readFile, stat, symlink } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { wsman } from '@workbay/api';
import { execFileAsync, outcome, show } from './attack-kit.js';
import {
  createVictims,
  escapeArchive,
  hardlinkArchive,
  plantLinks,
  pristine,
  requestWith,
  specialArchive,
  uploadArchive,
  victimState,
  walk,
} from './content-kit.js';
import type { Victims } from './content-kit.js';
import { bootWorkbay, contentDir, snapshotInit, startRunning, stopWorkspace, waitForPhase } from './harness.js';
import type { Workbay } from './harness.js';

let wb: Workbay;
let v: Victims;
let sshKey: string;

beforeAll(async () => {
  wb = await bootWorkbay();
  v = await createVictims(wb);
  await execFileAsync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', path.join(wb.dir, 'key')]);
  sshKey = (await readFile(path.join(wb.dir, 'key.pub'), 'utf8')).trim();
}, 180_000);

afterAll(async () => {
  await wb?.cleanup();
});

describe('SSH keys are never written through links in content', () => {
  const cases: readonly [string, () => Record<string, string>][] = [
    ['.ssh is a symlink to a host directory', () => ({ '.ssh': v.victim })],
    [
      '.ssh is a relative symlink out of content',
      () => ({ '.ssh': path.relative(wb.workingArea, v.victim).replace(/^/, '../../') }),
    ],
    ['.ssh/authorized_keys is a symlink to a host file', () => ({ '.ssh/authorized_keys': v.victimFile })],
    [
      '.ssh/authorized_keys is a dangling symlink to a host path',
      () => ({ '.ssh/authorized_keys': path.join(v.victim, 'new') }),
    ],
  ];
  for (const [i, [name, links]] of cases.entries()) {
    it(`UpdateSSHKey: ${name}`, async () => {
      const id = `ssh-update-${i}`;
      await startRunning(wb, { id });
      const before = await victimState(v);
      await plantLinks(wb, id, links());
      const result = await outcome(wb.manager.updateSshKey({ id, keys: [sshKey] }));
      expect(await victimState(v), show(result)).toBe(before);
      expect(result.ok ? '' : result.codeName).not.toMatch(/UNKNOWN|INTERNAL/);
      await stopWorkspace(wb, id, wsman.StopWorkspacePolicy.IMMEDIATELY);
    });
  }

  it('StartWorkspace with SSH keys into content restored with a .ssh symlink', async () => {
    const name = await uploadArchive(wb, 'ssh-link', 'alice', async (stage) => {
      await symlink(v.victim, path.join(stage, '.ssh'));
    });
    const before = await victimState(v);
    await wb.manager.startWorkspace(requestWith('ssh-start', snapshotInit(name), [sshKey]));
    await waitForPhase(wb, 'ssh-start', [wsman.WorkspacePhase.RUNNING]);
    expect(await victimState(v)).toBe(before);
    await stopWorkspace(wb, 'ssh-start', wsman.StopWorkspacePolicy.IMMEDIATELY);
  });
});

describe('a crafted snapshot restores nothing outside content, no devices, no set-id files', () => {
  let content = '';
  let escape = { ok: false } as Awaited<ReturnType<typeof outcome>>;
  let special = { ok: false } as Awaited<ReturnType<typeof outcome>>;
  beforeAll(async () => {
    escape = await outcome(
      wb.daemon.initWorkspace({
        id: 'crafted-escape',
        metadata: { owner: 'alice', metaId: 'crafted' },
        initializer: snapshotInit(await escapeArchive(v, 'crafted-escape', 'alice')),
      }),
    );
    special = await outcome(
      wb.daemon.initWorkspace({
        id: 'crafted-special',
        metadata: { owner: 'alice', metaId: 'crafted' },
        initializer: snapshotInit(await specialArchive(v, 'crafted-special', 'alice')),
      }),
    );
    content = contentDir(wb, 'crafted-special');
  });
  afterAll(async () => {
    for (const id of ['crafted-escape', 'crafted-special']) {
      await wb.daemon.disposeWorkspace({ id, backup: false }).catch(() => undefined);
    }
  });

  it('writes nothing through a symlink, an absolute path or ..', async () => {
    expect(await victimState(v), show(escape)).toBe(pristine);
    expect(existsSync(path.join(wb.dir, 'dotdot-pwned'))).toBe(false);
    expect(existsSync(path.join(wb.workingArea, 'dotdot-pwned'))).toBe(false);
  });

  it('restores an archive with devices and set-id files, dropping them (not refusing it)', async () => {
    expect(special.ok, show(special)).toBe(true);
    expect(await readFile(path.join(content, 'plain.txt'), 'utf8')).toBe('hello\n');
  });

  it('creates no device nodes or FIFOs', async () => {
    const entries = existsSync(content) ? await walk(content) : [];
    expect(entries.filter((e) => ['char', 'block', 'fifo'].includes(e.kind))).toEqual([]);
  });

  it('creates no setuid or setgid files or directories', async () => {
    const entries = existsSync(content) ? await walk(content) : [];
    // A set-id bit on a file runs it as its owner; on a directory setgid only passes the directory's group on,
    // which is harmless once that group is the workspace's own (checked below with the owners).
    expect(entries.filter((e) => e.kind === 'file' && (e.mode & 0o6000) !== 0).map((e) => e.rel)).toEqual([]);
    const owner = await stat(content);
    const dirs = entries.filter((e) => e.kind === 'dir' && (e.mode & 0o2000) !== 0);
    for (const d of dirs) expect((await stat(path.join(content, d.rel))).gid, d.rel).toBe(owner.gid);
  });

  it("owns every restored entry by the workspace's uid, not the archive's owners or root", async () => {
    const owner = await stat(content);
    expect(owner.uid).not.toBe(0);
    const entries = await walk(content);
    expect(entries.filter((e) => e.uid !== owner.uid).map((e) => `${e.rel}:${e.uid}`)).toEqual([]);
  });

  it('the daemon writes its ready marker nowhere but in content (.workbay was a link)', async () => {
    expect(await victimState(v), show(special)).toBe(pristine);
  });
});

it('a crafted tar backup (full.tar) restores nothing outside content', async () => {
  await escapeArchive(v, 'crafted-backup', 'alice', 'workspaces/crafted-backup/full.tar');
  const result = await outcome(
    wb.daemon.initWorkspace({
      id: 'crafted-backup',
      metadata: { owner: 'alice', metaId: 'crafted-backup' },
      initializer: { spec: { $case: 'backup', value: { checkoutLocation: 'x' } } },
    }),
  );
  const entries = existsSync(contentDir(wb, 'crafted-backup')) ? await walk(contentDir(wb, 'crafted-backup')) : [];
  await wb.daemon.disposeWorkspace({ id: 'crafted-backup', backup: false }).catch(() => undefined);
  expect(await victimState(v), show(result)).toBe(JSON.stringify({ files: [], file: 'original\n' }));
  expect(
    entries.filter((e) => ['char', 'block', 'fifo'].includes(e.kind) || (e.kind !== 'link' && (e.mode & 0o6000) !== 0)),
  ).toEqual([]);
});

it('a crafted tar backup (full.tar) restores nothing outside content', async () => {
  await escapeArchive(v, 'crafted-backup', 'alice', 'workspaces/crafted-backup/full.tar');
  const result = await outcome(
    wb.daemon.initWorkspace({
      id: 'crafted-backup',
      metadata: { owner: 'alice', metaId: 'crafted-backup' },
      initializer: { spec: { $case: 'backup', value: { checkoutLocation: 'x' } } },
    }),
  );
  const entries = existsSync(contentDir(wb, 'crafted-backup')) ? await walk(contentDir(wb, 'crafted-backup')) : [];
  await wb.daemon.disposeWorkspace({ id: 'crafted-backup', backup: false }).catch(() => undefined);
  expect(await victimState(v), show(result)).toBe(pristine);
  expect(
    entries.filter((e) => ['char', 'block', 'fifo'].includes(e.kind) || (e.kind !== 'link' && (e.mode & 0o6000) !== 0)),
  ).toEqual([]);
});

it('a hard link entry to a host file creates no link to it', async () => {
  const result = await outcome(
    wb.daemon.initWorkspace({
      id: 'crafted-hardlink',
      metadata: { owner: 'alice', metaId: 'crafted-hardlink' },
      initializer: snapshotInit(await hardlinkArchive(v, 'crafted-hardlink', 'alice')),
    }),
  );
  const victim = await stat(v.victimFile);
  const h2 = await stat(path.join(contentDir(wb, 'crafted-hardlink'), 'h2')).catch(() => undefined);
  await wb.daemon.disposeWorkspace({ id: 'crafted-hardlink', backup: false }).catch(() => undefined);
  expect(h2?.ino, show(result)).not.toBe(victim.ino);
  expect(victim.nlink).toBe(1);
  expect(await victimState(v)).toBe(pristine);
});
