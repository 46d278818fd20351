/**
 * Attacks on the SSH key write (invariant 10): every link trick a workspace can play on `.ssh` and
 * `authorized_keys`, including swapping a directory for a link while writes run, must leave the host untouched.
 */
import { spawn } from 'node:child_process';
import { chown, lstat, mkdir, mkdtemp, readFile, readdir, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FailedPreconditionError } from '@workbay/api';
import { writeAuthorizedKeys } from './ssh-keys.js';

const key = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGv6Zm9vYmFyYmF6cXV1eHF1dXhxdXV4cXV1eHF1dXhx test@example';
const isRoot = process.getuid?.() === 0;

describe('writeAuthorizedKeys', () => {
  let dir: string;
  let content: string;
  let victim: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'workbay-ssh-'));
    content = join(dir, 'content');
    victim = join(dir, 'host-root-ssh');
    await mkdir(content);
    await mkdir(victim);
    await writeFile(join(victim, 'authorized_keys'), 'host key\n');
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('writes the keys 0600 in a 0700 .ssh, owned by the content directory owner', async () => {
    if (isRoot) await chown(content, 200123, 200123);
    await writeAuthorizedKeys(content, [`  ${key}  `]);
    const file = join(content, '.ssh', 'authorized_keys');
    expect(await readFile(file, 'utf8')).toBe(`${key}\n`);
    const fileStat = await stat(file);
    const dirStat = await stat(join(content, '.ssh'));
    expect(fileStat.mode & 0o777).toBe(0o600);
    expect(dirStat.mode & 0o777).toBe(0o700);
    if (isRoot) {
      expect([fileStat.uid, fileStat.gid, dirStat.uid, dirStat.gid]).toEqual([200123, 200123, 200123, 200123]);
    }
    // A second write replaces the first; no temp files stay behind.
    await writeAuthorizedKeys(content, [key, key.replace('test@', 'other@')]);
    expect((await readFile(file, 'utf8')).split('\n')).toHaveLength(3);
    expect(await readdir(join(content, '.ssh'))).toEqual(['authorized_keys']);
  });

  it('refuses a .ssh that is a symlink to a host directory', async () => {
    await symlink(victim, join(content, '.ssh'));
    await expect(writeAuthorizedKeys(content, [key])).rejects.toBeInstanceOf(FailedPreconditionError);
    await expect(writeAuthorizedKeys(content, [key])).rejects.toThrow(/\.ssh is a symbolic link/);
    expect(await readFile(join(victim, 'authorized_keys'), 'utf8')).toBe('host key\n');
    expect(await readdir(victim)).toEqual(['authorized_keys']);
  });

  it('replaces an authorized_keys symlink instead of writing through it', async () => {
    await mkdir(join(content, '.ssh'));
    await symlink(join(victim, 'authorized_keys'), join(content, '.ssh', 'authorized_keys'));
    await writeAuthorizedKeys(content, [key]);
    expect(await readFile(join(victim, 'authorized_keys'), 'utf8')).toBe('host key\n');
    const written = await lstat(join(content, '.ssh', 'authorized_keys'));
    expect(written.isFile()).toBe(true);
  });

  it('refuses a .ssh that is a file, and a content directory that is a link', async () => {
    await writeFile(join(content, '.ssh'), 'not a dir');
    await expect(writeAuthorizedKeys(content, [key])).rejects.toThrow(/\.ssh is not a directory/);
    const linked = join(dir, 'linked');
    await symlink(victim, linked);
    await expect(writeAuthorizedKeys(linked, [key])).rejects.toThrow(/content directory is a symbolic link/);
    expect(await readdir(victim)).toEqual(['authorized_keys']);
  });

  it('a .ssh swapped for a link while writes run never lets a write reach the host', async () => {
    // The hostile workspace: a separate process that keeps swapping a real .ssh directory and a link to the host.
    const swapper = `
      const fs = require('node:fs');
      const [content, victim] = process.argv.slice(1);
      const ssh = content + '/.ssh', real = content + '/.ssh-real', link = content + '/.ssh-link';
      fs.mkdirSync(real, { recursive: true });
      try { fs.symlinkSync(victim, link); } catch {}
      process.stdout.write('ready\\n');
      for (let i = 0; i < 2000000; i += 1) {
        try { fs.renameSync(i % 2 ? link : real, ssh); } catch {}
        try { fs.renameSync(ssh, i % 2 ? link : real); } catch {}
      }
    `;
    const child = spawn(process.execPath, ['-e', swapper, content, victim], { stdio: ['ignore', 'pipe', 'ignore'] });
    await new Promise<void>((resolve) => child.stdout.once('data', () => resolve()));
    let written = 0;
    let refusedCount = 0;
    try {
      for (let i = 0; i < 300; i += 1) {
        try {
          await writeAuthorizedKeys(content, [key]);
          written += 1;
        } catch (error) {
          expect(error).toBeInstanceOf(FailedPreconditionError);
          refusedCount += 1;
        }
      }
    } finally {
      child.kill('SIGKILL');
      await new Promise((resolve) => child.once('exit', resolve));
    }
    expect(written + refusedCount).toBe(300);
    expect(await readdir(victim)).toEqual(['authorized_keys']);
    expect(await readFile(join(victim, 'authorized_keys'), 'utf8')).toBe('host key\n');
  });
});
