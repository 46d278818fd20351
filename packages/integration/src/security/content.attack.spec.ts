/**
 * Attacks through content (issue 8, items 3, 7, 8 and invariants 6, 10, 11): links in content that the manager or
 * daemon would write through (`.ssh`, `.ssh/authorized_keys`, `.workbay/ready`), crafted snapshot and backup
 * archives (symlink escapes, absolute and `..` paths, device nodes, FIFOs, set-id files), another owner's
 * snapshot or backup named in an initializer, and local git remotes on a daemon that does not allow them.
 */
import { createReadStream, existsSync } from 'node:fs';
import { chmod, chown, lstat, mkdir, readFile, readdir, rm, stat, symlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { wsman } from '@workbay/api';
import { FsRemoteStorage } from '@workbay/daemon';
import { createGitFixture } from '@workbay/testing';
import type { GitFixture } from '@workbay/testing';
import { execFileAsync, outcome, show, tar } from './attack-kit.js';
import {
  bootWorkbay,
  contentDir,
  emptyInit,
  gitInit,
  listTree,
  snapshotInit,
  startRunning,
  stopWorkspace,
  waitForPhase,
} from './harness.js';
import type { Initializer, Workbay } from './harness.js';

let wb: Workbay;
let victim: string;
let victimFile: string;
let repo: GitFixture;
let sshKey: string;

beforeAll(async () => {
  wb = await bootWorkbay();
  victim = path.join(wb.dir, 'victim');
  await mkdir(victim, { recursive: true });
  await chmod(victim, 0o777);
  victimFile = path.join(wb.dir, 'victim-file');
  await writeFile(victimFile, 'original\n');
  await chmod(victimFile, 0o666);
  const root = path.join(wb.dir, 'git');
  await mkdir(root, { recursive: true });
  repo = await createGitFixture({ name: 'local', root });
  await execFileAsync('chmod', ['-R', 'a+rX', root]);
  await execFileAsync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', path.join(wb.dir, 'key')]);
  sshKey = (await readFile(path.join(wb.dir, 'key.pub'), 'utf8')).trim();
}, 180_000);

afterAll(async () => {
  await repo?.cleanup();
  await wb?.cleanup();
});

/** Everything under the victim directory and the victim file's content: an attack that wrote there shows. */
async function victimState(): Promise<string> {
  return JSON.stringify({ files: await listTree(victim), file: await readFile(victimFile, 'utf8') });
}

/** Acts as the workspace would: creates `entries` in its content, owned by the content's owner. */
async function plantLinks(id: string, links: Record<string, string>): Promise<void> {
  const content = contentDir(wb, id);
  const owner = await stat(content);
  for (const [rel, target] of Object.entries(links)) {
    const at = path.join(content, rel);
    await mkdir(path.dirname(at), { recursive: true });
    await rm(at, { recursive: true, force: true });
    await symlink(target, at);
    await execFileAsync('chown', ['-h', `${owner.uid}:${owner.gid}`, at]);
    await chown(path.dirname(at), owner.uid, owner.gid);
  }
}

describe('SSH keys are never written through links in content', () => {
  const cases: readonly [string, () => Record<string, string>][] = [
    ['.ssh is a symlink to a host directory', () => ({ '.ssh': victim })],
    [
      '.ssh is a relative symlink out of content',
      () => ({ '.ssh': path.relative(wb.workingArea, victim).replace(/^/, '../../') }),
    ],
    ['.ssh/authorized_keys is a symlink to a host file', () => ({ '.ssh/authorized_keys': victimFile })],
    [
      '.ssh/authorized_keys is a dangling symlink to a host path',
      () => ({ '.ssh/authorized_keys': path.join(victim, 'new') }),
    ],
  ];
  for (const [i, [name, links]] of cases.entries()) {
    it(`UpdateSSHKey: ${name}`, async () => {
      const id = `ssh-update-${i}`;
      await startRunning(wb, { id });
      const before = await victimState();
      await plantLinks(id, links());
      const result = await outcome(wb.manager.updateSshKey({ id, keys: [sshKey] }));
      expect(await victimState(), show(result)).toBe(before);
      expect(result.ok ? '' : result.codeName).not.toMatch(/UNKNOWN|INTERNAL/);
      await stopWorkspace(wb, id, wsman.StopWorkspacePolicy.IMMEDIATELY);
    });
  }

  it('StartWorkspace with SSH keys into content restored with a .ssh symlink', async () => {
    const name = await uploadArchive('ssh-link', 'alice', async (stage) => {
      await symlink(victim, path.join(stage, '.ssh'));
    });
    const before = await victimState();
    await wb.manager.startWorkspace(requestWith('ssh-start', snapshotInit(name), [sshKey]));
    await waitForPhase(wb, 'ssh-start', [wsman.WorkspacePhase.RUNNING]);
    expect(await victimState()).toBe(before);
    await stopWorkspace(wb, 'ssh-start', wsman.StopWorkspacePolicy.IMMEDIATELY);
  });
});

function requestWith(id: string, initializer: Initializer, keys: string[] = []): wsman.StartWorkspaceRequest {
  return wsman.StartWorkspaceRequest.fromPartial({
    id,
    metadata: { owner: 'alice', metaId: `meta-${id}` },
    spec: { workspaceImage: 'workbay/default', initializer, workspaceLocation: 'x', sshPublicKeys: keys },
  });
}

// ---------------------------------------------------------------------------------------------------------------
// Crafted archives

let archiveSeq = 0;

/**
 * Builds a tar with GNU tar as root from a staging dir that `fill` populates (plus `extra` raw appends), and
 * uploads it into the fs storage where a snapshot of `owner` would be. Returns `<object>@<bucket>`.
 */
async function uploadArchive(
  label: string,
  owner: string,
  fill: (stage: string) => Promise<void>,
  append?: (file: string, stage2: string) => Promise<void>,
  object?: string,
): Promise<string> {
  const stage = path.join(wb.dir, 'stage', `${label}-${archiveSeq++}`);
  await mkdir(stage, { recursive: true });
  await fill(stage);
  const file = `${stage}.tar`;
  await tar(['--create', '--file', file, '--numeric-owner', '-C', stage, '.']);
  if (append) {
    const stage2 = `${stage}-2`;
    await mkdir(stage2, { recursive: true });
    await append(file, stage2);
  }
  const storage = new FsRemoteStorage({ root: wb.storageRoot });
  const bucket = `workbay-user-${owner}`;
  const name = object ?? `workspaces/${label}/snapshot-${1_700_000_000_000_000_000n + BigInt(archiveSeq)}.tar`;
  await storage.ensureBucket(bucket);
  await storage.upload(bucket, name, createReadStream(file));
  return `${name}@${bucket}`;
}

/** An archive whose later entries write through its own links or carry absolute and `..` names. */
async function escapeArchive(label: string, owner: string, object?: string): Promise<string> {
  return uploadArchive(
    label,
    owner,
    async (s) => {
      await symlink(victim, path.join(s, 'link'));
      await symlink('../../../../../../../../../../..' + victim, path.join(s, 'rel-link'));
      await writeFile(path.join(s, 'plain.txt'), 'hello\n');
    },
    async (file, s2) => {
      await mkdir(path.join(s2, 'link'));
      await writeFile(path.join(s2, 'link', 'pwned'), 'x');
      await mkdir(path.join(s2, 'rel-link'));
      await writeFile(path.join(s2, 'rel-link', 'rel-pwned'), 'x');
      await writeFile(path.join(s2, 'abs'), 'x');
      await writeFile(path.join(s2, 'dotdot'), 'x');
      await tar(['--append', '--file', file, '-C', s2, 'link/pwned', 'rel-link/rel-pwned']);
      await tar(['--append', '-P', '--file', file, '-C', s2, '--transform', `s|^abs$|${victim}/abs-pwned|`, 'abs']);
      await tar([
        '--append',
        '-P',
        '--file',
        file,
        '-C',
        s2,
        '--transform',
        's|^dotdot$|../../../dotdot-pwned|',
        'dotdot',
      ]);
      await tar(['--append', '--file', file, '-C', s2, '--transform', 's|^abs$|link/abs-pwned2|', 'abs']);
    },
    object,
  );
}

/** An archive with device nodes, a FIFO, set-id files, root-owned entries and a `.workbay` link out of content. */
async function specialArchive(label: string, owner: string, object?: string): Promise<string> {
  return uploadArchive(
    label,
    owner,
    async (s) => {
      await symlink(victim, path.join(s, '.workbay'));
      await execFileAsync('mknod', [path.join(s, 'char-dev'), 'c', '1', '3']);
      await execFileAsync('mknod', [path.join(s, 'block-dev'), 'b', '7', '0']);
      await execFileAsync('mkfifo', [path.join(s, 'fifo')]);
      await writeFile(path.join(s, 'suid'), '#!/bin/sh\nid\n');
      await chmod(path.join(s, 'suid'), 0o4755);
      await writeFile(path.join(s, 'sgid'), '#!/bin/sh\nid\n');
      await chmod(path.join(s, 'sgid'), 0o2755);
      await mkdir(path.join(s, 'sgid-dir'));
      await chmod(path.join(s, 'sgid-dir'), 0o2777);
      await writeFile(path.join(s, 'plain.txt'), 'hello\n');
    },
    undefined,
    object,
  );
}

interface Walked {
  readonly rel: string;
  readonly mode: number;
  readonly uid: number;
  readonly kind: string;
}

async function walk(root: string): Promise<Walked[]> {
  const out: Walked[] = [];
  const visit = async (dir: string, rel: string): Promise<void> => {
    for (const name of await readdir(dir)) {
      const p = path.join(dir, name);
      const s = await lstat(p);
      const r = rel ? `${rel}/${name}` : name;
      const kind = s.isSymbolicLink()
        ? 'link'
        : s.isCharacterDevice()
          ? 'char'
          : s.isBlockDevice()
            ? 'block'
            : s.isFIFO()
              ? 'fifo'
              : s.isSocket()
                ? 'socket'
                : s.isDirectory()
                  ? 'dir'
                  : 'file';
      out.push({ rel: r, mode: s.mode, uid: s.uid, kind });
      if (kind === 'dir') await visit(p, r);
    }
  };
  await visit(root, '');
  return out;
}

describe('a crafted snapshot restores nothing outside content, no devices, no set-id files', () => {
  const pristine = JSON.stringify({ files: [], file: 'original\n' });
  let content = '';
  let escape = { ok: false } as Awaited<ReturnType<typeof outcome>>;
  let special = { ok: false } as Awaited<ReturnType<typeof outcome>>;
  beforeAll(async () => {
    escape = await outcome(
      wb.daemon.initWorkspace({
        id: 'crafted-escape',
        metadata: { owner: 'alice', metaId: 'crafted' },
        initializer: snapshotInit(await escapeArchive('crafted-escape', 'alice')),
      }),
    );
    special = await outcome(
      wb.daemon.initWorkspace({
        id: 'crafted-special',
        metadata: { owner: 'alice', metaId: 'crafted' },
        initializer: snapshotInit(await specialArchive('crafted-special', 'alice')),
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
    expect(await victimState(), show(escape)).toBe(pristine);
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
    expect(await victimState(), show(special)).toBe(pristine);
  });
});

it('a crafted tar backup (full.tar) restores nothing outside content', async () => {
  await escapeArchive('crafted-backup', 'alice', 'workspaces/crafted-backup/full.tar');
  const result = await outcome(
    wb.daemon.initWorkspace({
      id: 'crafted-backup',
      metadata: { owner: 'alice', metaId: 'crafted-backup' },
      initializer: { spec: { $case: 'backup', value: { checkoutLocation: 'x' } } },
    }),
  );
  const entries = existsSync(contentDir(wb, 'crafted-backup')) ? await walk(contentDir(wb, 'crafted-backup')) : [];
  await wb.daemon.disposeWorkspace({ id: 'crafted-backup', backup: false }).catch(() => undefined);
  expect(await victimState(), show(result)).toBe(JSON.stringify({ files: [], file: 'original\n' }));
  expect(
    entries.filter((e) => ['char', 'block', 'fifo'].includes(e.kind) || (e.kind !== 'link' && (e.mode & 0o6000) !== 0)),
  ).toEqual([]);
});

describe("an owner never reaches another owner's snapshots or backups", () => {
  let bobSnapshot = '';
  const secret = `bob-secret-${process.pid}`;
  beforeAll(async () => {
    await wb.daemon.initWorkspace({
      id: 'bob-src',
      metadata: { owner: 'bob', metaId: 'bob-meta' },
      initializer: emptyInit(),
    });
    await writeFile(path.join(contentDir(wb, 'bob-src'), 'secret.txt'), secret);
    bobSnapshot = (await wb.daemon.takeSnapshot({ id: 'bob-src' })).url;
    await wb.daemon.disposeWorkspace({ id: 'bob-src', backup: true });
  });

  /** Every file of an instance's content, read: bob's secret must be in none. */
  const contentHasSecret = async (id: string): Promise<boolean> => {
    for (const rel of await listTree(contentDir(wb, id))) {
      const text = await readFile(path.join(contentDir(wb, id), rel), 'utf8').catch(() => '');
      if (text.includes(secret)) return true;
    }
    return false;
  };

  const names = (): [string, string][] => {
    const [object, bucket] = [
      bobSnapshot.slice(0, bobSnapshot.lastIndexOf('@')),
      bobSnapshot.slice(bobSnapshot.lastIndexOf('@') + 1),
    ];
    return [
      ["bob's snapshot by its name", bobSnapshot],
      ["bob's backup (full.tar) by name", `workspaces/bob-meta/full.tar@${bucket}`],
      ["bob's snapshot through a bucket with ..", `${object}@workbay-user-alice/../${bucket}`],
      ["bob's snapshot through an object with ..", `../${bucket}/${object}@workbay-user-alice`],
      ["bob's snapshot with an upper-case bucket", `${object}@${bucket.toUpperCase()}`],
    ];
  };
  for (const index of [0, 1, 2, 3, 4]) {
    it(`daemon InitWorkspace refuses variant ${index}`, async () => {
      const [label, name] = names()[index]!;
      const id = `alice-steal-${index}`;
      const result = await outcome(
        wb.daemon.initWorkspace({
          id,
          metadata: { owner: 'alice', metaId: 'alice-meta' },
          initializer: snapshotInit(name),
        }),
      );
      const leaked = existsSync(contentDir(wb, id)) && (await contentHasSecret(id));
      await wb.daemon.disposeWorkspace({ id, backup: false }).catch(() => undefined);
      expect(leaked, `${label}: ${show(result)}`).toBe(false);
      expect(result.ok, `${label} was accepted`).toBe(false);
      expect(result.codeName, show(result)).toMatch(/INVALID_ARGUMENT|PERMISSION_DENIED|NOT_FOUND/);
    });
  }

  it("StartWorkspace naming bob's snapshot never runs with bob's content", async () => {
    const started = await outcome(wb.manager.startWorkspace(requestWith('alice-steal-mgr', snapshotInit(bobSnapshot))));
    let leaked = false;
    if (started.ok) {
      const status = await waitForPhase(wb, 'alice-steal-mgr', [wsman.WorkspacePhase.RUNNING]);
      leaked = status.phase === wsman.WorkspacePhase.RUNNING && (await contentHasSecret('alice-steal-mgr'));
      if (status.phase !== wsman.WorkspacePhase.STOPPED) await stopWorkspace(wb, 'alice-steal-mgr');
    }
    expect(leaked, show(started)).toBe(false);
  });

  it("a backup initializer with bob's meta id restores nothing of bob's", async () => {
    const result = await outcome(
      wb.daemon.initWorkspace({
        id: 'alice-bob-meta',
        metadata: { owner: 'alice', metaId: 'bob-meta' },
        initializer: { spec: { $case: 'backup', value: { checkoutLocation: 'x' } } },
      }),
    );
    const leaked = existsSync(contentDir(wb, 'alice-bob-meta')) && (await contentHasSecret('alice-bob-meta'));
    await wb.daemon.disposeWorkspace({ id: 'alice-bob-meta', backup: false }).catch(() => undefined);
    expect(leaked, show(result)).toBe(false);
  });
});

describe('local git remotes are refused unless the operator allows them', () => {
  const remotes = (): [string, string][] => [
    ['a local path', repo.path],
    ['file://', repo.url],
    ['/etc', '/etc'],
    ['a relative path', '../../../../etc'],
    ['file:///etc/', 'file:///etc/'],
  ];
  for (const index of [0, 1, 2, 3, 4]) {
    it(`refuses remote ${index} with INVALID_ARGUMENT and leaves no content`, async () => {
      const [label, remote] = remotes()[index]!;
      const id = `local-remote-${index}`;
      const result = await outcome(
        wb.daemon.initWorkspace({ id, metadata: { owner: 'alice', metaId: id }, initializer: gitInit(remote) }),
      );
      const files = await listTree(contentDir(wb, id));
      await wb.daemon.disposeWorkspace({ id, backup: false }).catch(() => undefined);
      expect(files, label).toEqual([]);
      expect(result.codeName, `${label}: ${show(result)}`).toBe('INVALID_ARGUMENT');
      expect(result.field ?? result.message).toMatch(/remote/i);
    });
  }
});
