/**
 * Attacks on restore with crafted archives (invariants 6 and 10): each must have no effect outside the target,
 * create no device node, FIFO or set-id file (unless the operator allows them), and leave everything owned by
 * the workspace's host identity. Plain tar archives are crafted byte by byte; the chunked format is attacked with
 * a real backup of a hostile tree restored through the real backup store and fs storage.
 */
import { execFileSync, spawn } from 'node:child_process';
import { chmod, chown, lstat, mkdir, readdir, readFile, stat, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { silentLogger } from '@workbay/api';
import { BackupStore } from '../backup/backup-store.js';
import { isWorkbayError } from '../errors.js';
import { FsRemoteStorage } from '../storage/fs-storage.js';
import { tarOf as tarOfEntries } from '../test-support/tar-entries.js';
import type { TarEntry } from '../test-support/tar-entries.js';
import { collect, tempDir } from '../test-support/tree.js';
import { extractTree } from './extract.js';
import { packTree } from './tar.js';
import { encodeEntryHeader, endOfArchive, padding } from './tar-header.js';
import { xattrSupport } from './xattr.js';

const isRoot = process.getuid?.() === 0;
const owner = { uid: 201_234, gid: 201_234 };

type Entry = TarEntry;

const tarOf = (entries: TarEntry[]): Promise<Buffer> => tarOfEntries(entries, { mode: 0o644 });

async function errorOf(promise: Promise<unknown>): Promise<unknown> {
  return promise.then(
    () => undefined,
    (error: unknown) => error,
  );
}

async function walk(
  root: string,
): Promise<Array<{ path: string; mode: number; uid: number; gid: number; kind: string }>> {
  const out: Array<{ path: string; mode: number; uid: number; gid: number; kind: string }> = [];
  const visit = async (dir: string, prefix: string): Promise<void> => {
    for (const name of (await readdir(dir)).sort()) {
      const info = await lstat(join(dir, name));
      const path = prefix ? `${prefix}/${name}` : name;
      const kind = info.isDirectory() ? 'dir' : info.isFile() ? 'file' : info.isSymbolicLink() ? 'symlink' : 'special';
      out.push({ path, mode: info.mode & 0o7777, uid: info.uid, gid: info.gid, kind });
      if (info.isDirectory()) await visit(join(dir, name), path);
    }
  };
  await visit(root, '');
  return out;
}

describe('restore attacks (crafted archives)', () => {
  let work: Awaited<ReturnType<typeof tempDir>>;
  let target: string;
  let outside: string;

  beforeEach(async () => {
    work = await tempDir();
    target = join(work.path, 'content');
    outside = join(work.path, 'outside');
    await mkdir(target);
    await mkdir(outside);
    await writeFile(join(outside, 'victim'), 'original\n');
  });
  afterEach(async () => {
    await work.cleanup();
  });

  const extract = async (entries: Entry[], options: Parameters<typeof extractTree>[2] = {}) =>
    extractTree(Readable.from([await tarOf(entries)]), target, { xattrs: false, ...options });

  const outsideUntouched = async (): Promise<void> => {
    expect(await readdir(outside)).toEqual(['victim']);
    expect(await readFile(join(outside, 'victim'), 'utf8')).toBe('original\n');
  };

  it('a symlink, then a file written through it: refused, nothing outside changes', async () => {
    const error = await errorOf(
      extract([
        { header: { name: 'escape', type: 'symlink', linkname: outside } },
        { header: { name: 'escape/victim', type: 'file' }, body: 'pwned\n' },
      ]),
    );
    expect(isWorkbayError(error, 'invalid-argument')).toBe(true);
    await outsideUntouched();
  });

  it('a hardlink to a host file (absolute, or up with ..): refused, the host file gets no new link', async () => {
    const before = (await stat('/etc/passwd')).nlink;
    for (const linkname of ['/etc/passwd', '../../../../../../etc/passwd', `${outside}/victim`]) {
      const error = await errorOf(extract([{ header: { name: 'passwd', type: 'link', linkname } }]));
      expect(isWorkbayError(error, 'invalid-argument'), linkname).toBe(true);
    }
    expect((await stat('/etc/passwd')).nlink).toBe(before);
    expect((await stat(join(outside, 'victim'))).nlink).toBe(1);
    await outsideUntouched();
  });

  it('absolute names and names with ..: refused before anything is written for them', async () => {
    for (const name of [`${outside}/victim`, '../outside/victim', 'a/../../outside/victim', './../outside/x']) {
      const error = await errorOf(extract([{ header: { name, type: 'file' }, body: 'pwned\n' }]));
      expect(isWorkbayError(error, 'invalid-argument'), name).toBe(true);
    }
    await outsideUntouched();
  });

  it('a directory replaced by a symlink mid-archive: refused; later entries cannot use it', async () => {
    const error = await errorOf(
      extract([
        { header: { name: 'dir', type: 'directory', mode: 0o755 } },
        { header: { name: 'dir/ok', type: 'file' }, body: 'ok' },
        { header: { name: 'dir', type: 'symlink', linkname: outside } },
        { header: { name: 'dir/victim', type: 'file' }, body: 'pwned\n' },
      ]),
    );
    expect(isWorkbayError(error, 'invalid-argument')).toBe(true);
    expect((await lstat(join(target, 'dir'))).isDirectory()).toBe(true);
    await outsideUntouched();
    // The other order: a symlink first, then a directory of that name, then a file below it.
    const second = await errorOf(
      extract([
        { header: { name: 'sneaky', type: 'symlink', linkname: outside } },
        { header: { name: 'sneaky', type: 'directory', mode: 0o755 } },
        { header: { name: 'sneaky/victim', type: 'file' }, body: 'pwned\n' },
      ]),
    );
    expect(isWorkbayError(second, 'invalid-argument')).toBe(true);
    await outsideUntouched();
  });

  it('device nodes and FIFOs are not created, set-id bits are cleared, and everything is counted', async () => {
    const stats = await extract([
      { header: { name: 'null', type: 'character-device', devmajor: 1, devminor: 3, mode: 0o666 } },
      { header: { name: 'sda', type: 'block-device', devmajor: 8, devminor: 0, mode: 0o660 } },
      { header: { name: 'pipe', type: 'fifo', mode: 0o644 } },
      { header: { name: 'pipe-again', type: 'link', linkname: 'pipe' } },
      { header: { name: 'suid', type: 'file', mode: 0o4755, uid: 0, gid: 0 }, body: '#!/bin/sh\n' },
      { header: { name: 'sgid', type: 'file', mode: 0o2755, uid: 0, gid: 0 }, body: '#!/bin/sh\n' },
      { header: { name: 'sticky-file', type: 'file', mode: 0o1644 }, body: 'x' },
      { header: { name: 'shared', type: 'directory', mode: 0o3777 } },
      { header: { name: 'shared/big', type: 'file', mode: 0o6755, size: 300 * 1024 }, body: 'y'.repeat(300 * 1024) },
    ]);
    const tree = await walk(target);
    expect(tree.map((e) => e.path)).toEqual(['sgid', 'shared', 'shared/big', 'sticky-file', 'suid']);
    expect(tree.find((e) => e.path === 'suid')?.mode).toBe(0o755);
    expect(tree.find((e) => e.path === 'sgid')?.mode).toBe(0o755);
    expect(tree.find((e) => e.path === 'sticky-file')?.mode).toBe(0o644);
    expect(tree.find((e) => e.path === 'shared/big')?.mode).toBe(0o755);
    // Directories keep setgid and sticky (they grant nothing).
    expect(tree.find((e) => e.path === 'shared')?.mode).toBe(0o3777);
    expect(stats.dropped).toEqual({ specialFiles: 3, setIdBits: 4, capabilities: 0, xattrs: 0 });
  });

  it.runIf(isRoot)("xattr names cannot reach setfattr as another file's block or an escaped capability", async () => {
    if (!(await xattrSupport()).available) return;
    // Found by a red-team run: a name with newlines started a block of its own in setfattr's restore input (an
    // ACL on a host file, a capability on a host binary), and `security\056capability` passed the literal filter.
    const victim = join(outside, 'victim');
    const cap = Buffer.alloc(20);
    cap.writeUInt32LE(0x02000001, 0);
    cap.writeUInt32LE(1 << 7, 4); // CAP_SETUID, effective
    const body = Buffer.from('hello\n');
    const entry = {
      path: 'innocent.txt',
      type: 'file' as const,
      mode: 0o644,
      uid: 0,
      gid: 0,
      size: body.length,
      mtimeMs: Date.now(),
      xattrs: {
        [`user.a\n\n# file: ${victim}\nuser.pwned`]: Buffer.from('owned'),
        'security\\056capability': cap,
        'trusted.overlay.opaque': Buffer.from('y'),
        'user.kept': Buffer.from('yes'),
      },
    };
    const archive = Buffer.concat([encodeEntryHeader(entry, body.length), body, padding(body.length), endOfArchive]);
    const stats = await extractTree(Readable.from([archive]), target, { owner });
    const attrs = (path: string): string =>
      execFileSync('getfattr', ['-d', '-m', '-', '--absolute-names', path], { encoding: 'utf8' });
    expect(attrs(victim)).toBe('');
    const restored = attrs(join(target, 'innocent.txt'));
    expect(restored).toContain('user.kept="yes"');
    expect(restored).not.toMatch(/capability|pwned|trusted/);
    expect(stats.dropped.xattrs).toBe(3);
    await outsideUntouched();
  });

  it('with restore.allowSpecialFiles the operator gets FIFOs and set-id bits back', async () => {
    const stats = await extract(
      [
        { header: { name: 'pipe', type: 'fifo', mode: 0o644 } },
        { header: { name: 'suid', type: 'file', mode: 0o4755 }, body: 'x' },
      ],
      { allowSpecialFiles: true },
    );
    expect((await lstat(join(target, 'pipe'))).isFIFO()).toBe(true);
    expect((await lstat(join(target, 'suid'))).mode & 0o7777).toBe(
      isRoot ? 0o4755 : 0o755 & (await lstat(join(target, 'suid'))).mode,
    );
    expect(stats.dropped.specialFiles).toBe(0);
  });

  it.runIf(isRoot)('everything is written as the workspace owner, not as the owners the archive names', async () => {
    await extract(
      [
        { header: { name: 'root-dir', type: 'directory', mode: 0o755, uid: 0, gid: 0 } },
        { header: { name: 'root-dir/file', type: 'file', uid: 0, gid: 0 }, body: 'x' },
        { header: { name: 'implicit/parent/file', type: 'file', uid: 0, gid: 0 }, body: 'x' },
        { header: { name: 'big', type: 'file', uid: 0, gid: 0, size: 300 * 1024 }, body: 'z'.repeat(300 * 1024) },
        { header: { name: 'link', type: 'symlink', linkname: '/etc/shadow', uid: 0, gid: 0 } },
      ],
      { owner },
    );
    const tree = await walk(target);
    expect(tree.length).toBe(7);
    for (const entry of tree)
      expect({ path: entry.path, uid: entry.uid, gid: entry.gid }).toEqual({ path: entry.path, ...owner });
    // The symlink was never followed: the host file keeps its owner.
    expect((await stat('/etc/shadow')).uid).toBe(0);
  });

  it.runIf(isRoot)(
    'chunked and tar backups of a hostile tree restore without devices, FIFOs or set-id bits',
    async () => {
      const hostile = join(work.path, 'hostile');
      await mkdir(join(hostile, 'bin'), { recursive: true });
      await writeFile(join(hostile, 'bin/rootshell'), '#!/bin/sh\nid\n');
      await chown(join(hostile, 'bin/rootshell'), 0, 0);
      await chmod(join(hostile, 'bin/rootshell'), 0o4755);
      await writeFile(join(hostile, 'bin/group'), 'x');
      await chmod(join(hostile, 'bin/group'), 0o2711);
      execFileSync('mknod', [join(hostile, 'mem'), 'c', '1', '1']);
      execFileSync('mknod', [join(hostile, 'disk'), 'b', '7', '0']);
      execFileSync('mkfifo', [join(hostile, 'fifo')]);
      await symlink('/etc/passwd', join(hostile, 'passwd-link'));
      const storage = new FsRemoteStorage({ root: join(work.path, 'storage') });
      for (const format of ['chunked', 'tar'] as const) {
        const store = new BackupStore(storage, { mode: 'per-owner' }, { format, xattrs: false, logger: silentLogger });
        const ref = { owner: 'mallory', workspaceId: `hostile-${format}` };
        await store.backup(hostile, ref);
        const restored = join(work.path, `restored-${format}`);
        await mkdir(restored);
        await store.restore(restored, ref, { owner });
        const tree = await walk(restored);
        expect(
          tree.map((e) => `${e.path}:${e.kind}`),
          format,
        ).toEqual(['bin:dir', 'bin/group:file', 'bin/rootshell:file', 'passwd-link:symlink']);
        expect(tree.find((e) => e.path === 'bin/rootshell')?.mode).toBe(0o755);
        expect(tree.find((e) => e.path === 'bin/group')?.mode).toBe(0o711);
        for (const entry of tree) expect(entry.uid, `${format} ${entry.path}`).toBe(owner.uid);
        expect((await stat('/etc/passwd')).uid).toBe(0);
      }
    },
  );

  it('packing while the workspace swaps a directory for a symlink to a host directory never archives host files', async () => {
    const content = join(work.path, 'swapping');
    const host = join(work.path, 'host-secrets');
    await mkdir(join(content, 'd'), { recursive: true });
    await mkdir(host);
    for (let i = 0; i < 200; i++) {
      await writeFile(join(content, 'd', `f${i}`), 'workspace\n');
      await writeFile(join(host, `f${i}`), 'HOST SECRET\n');
    }
    // The workspace's side: swap d for a symlink to the host directory and back, as fast as it can.
    // A process group of its own: the shell and the `mv` it may be running are stopped together.
    const swapper = spawn(
      'sh',
      ['-c', 'while :; do mv d d.tmp; ln -s "$1" d; rm d; mv d.tmp d; done', 'swapper', host],
      { cwd: content, stdio: 'ignore', detached: true },
    );
    try {
      for (let round = 0; round < 40; round++) {
        const archive = await collect(packTree(content, { xattrs: false }).stream as AsyncIterable<Buffer>);
        expect(archive.includes('HOST SECRET'), `round ${round}`).toBe(false);
      }
      // The chunked format (the default for backups) reads files on worker threads: the same holds there.
      const storage = new FsRemoteStorage({ root: join(work.path, 'race-storage') });
      const store = new BackupStore(
        storage,
        { mode: 'per-owner' },
        { format: 'chunked', xattrs: false, logger: silentLogger },
      );
      for (let round = 0; round < 15; round++) {
        const ref = { owner: 'mallory', workspaceId: `race-${round}` };
        await store.backup(content, ref);
        const restored = join(work.path, `race-restored-${round}`);
        await mkdir(restored);
        await store.restore(restored, ref);
        const leaked = execFileSync('sh', ['-c', 'grep -rl "HOST SECRET" "$1" || true', 'sh', restored], {
          encoding: 'utf8',
        });
        expect(leaked, `round ${round}`).toBe('');
      }
    } finally {
      // Wait for the swapper's whole group to be gone: a last `mv` racing the cleanup's rm fails it with ENOTEMPTY,
      // and killing the shell alone leaves the `mv` it runs (a CI run).
      const pgid = swapper.pid!;
      const gone = new Promise((resolve) => swapper.once('exit', resolve));
      process.kill(-pgid, 'SIGKILL');
      if (swapper.exitCode === null && swapper.signalCode === null) await gone;
      // Bounded: a killed child is a zombie until its new parent reaps it, and a signal to a zombie succeeds.
      for (const until = Date.now() + 5000; Date.now() < until;) {
        try {
          process.kill(-pgid, 0);
        } catch {
          break; // ESRCH: no process of the group is left
        }
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
    }
  });

  it('packs a tree reached through a symlinked ancestor completely (the operator may link the working area)', async () => {
    const real = join(work.path, 'real-area');
    await mkdir(join(real, 'ws/sub'), { recursive: true });
    await writeFile(join(real, 'ws/sub/file'), 'content');
    await symlink(real, join(work.path, 'linked-area'));
    const archive = await collect(
      packTree(join(work.path, 'linked-area', 'ws'), { xattrs: false }).stream as AsyncIterable<Buffer>,
    );
    await extract([]); // an empty target to compare with
    await extractTree(Readable.from([archive]), target, { xattrs: false });
    expect(await readFile(join(target, 'sub/file'), 'utf8')).toBe('content');
  });
});
