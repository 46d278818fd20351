/**
 * Helpers of the content attacks: a victim directory and file outside content (an attack that writes there
 * shows), links planted as the workspace would plant them, and crafted archives built with GNU tar as root and
 * uploaded where a snapshot or backup of an owner would be.
 */
import { createReadStream } from 'node:fs';
import { chmod, chown, lstat, mkdir, readFile, readdir, rm, stat, symlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { wsman } from '@workbay/api';
import { FsRemoteStorage } from '@workbay/daemon';
import { execFileAsync, tar } from './attack-kit.js';
import { contentDir, listTree } from './harness.js';
import type { Initializer, Workbay } from './harness.js';

export interface Victims {
  readonly wb: Workbay;
  /** A world-writable directory outside content. */
  readonly victim: string;
  /** A world-writable file outside content holding `original\n`. */
  readonly victimFile: string;
}

/** The state of the victims before any attack. */
export const pristine = JSON.stringify({ files: [], file: 'original\n' });

export async function createVictims(wb: Workbay): Promise<Victims> {
  const victim = path.join(wb.dir, 'victim');
  await mkdir(victim, { recursive: true });
  await chmod(victim, 0o777);
  const victimFile = path.join(wb.dir, 'victim-file');
  await writeFile(victimFile, 'original\n');
  await chmod(victimFile, 0o666);
  return { wb, victim, victimFile };
}

/** Everything under the victim directory and the victim file's content: an attack that wrote there shows. */
export async function victimState(v: Victims): Promise<string> {
  return JSON.stringify({ files: await listTree(v.victim), file: await readFile(v.victimFile, 'utf8') });
}

/** Acts as the workspace would: creates `entries` in its content, owned by the content's owner. */
export async function plantLinks(wb: Workbay, id: string, links: Record<string, string>): Promise<void> {
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

export function requestWith(id: string, initializer: Initializer, keys: string[] = []): wsman.StartWorkspaceRequest {
  return wsman.StartWorkspaceRequest.fromPartial({
    id,
    metadata: { owner: 'alice', metaId: `meta-${id}` },
    spec: { workspaceImage: 'workbay/default', initializer, workspaceLocation: 'x', sshPublicKeys: keys },
  });
}

let archiveSeq = 0;

/**
 * Builds a tar with GNU tar as root from a staging dir that `fill` populates (plus `extra` raw appends), and
 * uploads it into the fs storage where a snapshot of `owner` would be. Returns `<object>@<bucket>`.
 */
export async function uploadArchive(
  wb: Workbay,
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
export async function escapeArchive(v: Victims, label: string, owner: string, object?: string): Promise<string> {
  const victim = v.victim;
  return uploadArchive(
    v.wb,
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
export async function specialArchive(v: Victims, label: string, owner: string, object?: string): Promise<string> {
  const victim = v.victim;
  return uploadArchive(
    v.wb,
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

export interface Walked {
  readonly rel: string;
  readonly mode: number;
  readonly uid: number;
  readonly kind: string;
}

export async function walk(root: string): Promise<Walked[]> {
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

/** An archive whose second entry is a hard link to a host file (absolute link name). */
export async function hardlinkArchive(v: Victims, label: string, owner: string): Promise<string> {
  return uploadArchive(
    v.wb,
    label,
    owner,
    async () => undefined,
    async (file, s2) => {
      await writeFile(path.join(s2, 'h1'), 'x');
      await execFileAsync('ln', [path.join(s2, 'h1'), path.join(s2, 'h2')]);
      // Only hard link targets are renamed (flags h, not r/s): h2 becomes a link to the victim file.
      await tar(['--append', '-P', '--file', file, '-C', s2, '--transform', `s|^h1$|${v.victimFile}|hRS`, 'h1', 'h2']);
    },
  );
}
