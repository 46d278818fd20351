/**
 * Writes a workspace's authorised SSH keys to `<contentDir>/.ssh/authorized_keys` (directory 0700, file 0600,
 * replaced atomically), where the workspace's sshd or its user finds them.
 *
 * The content is the workspace's to change at any moment (invariant 10): `.ssh` may be a symlink to the host's
 * `/root/.ssh`, `authorized_keys` a symlink to any file, and either may be swapped for a link between a check and
 * a write. So no path below the content directory is ever resolved by name. Node has no `openat()`, but
 * `/proc/self/fd/<fd>/<name>` is its equivalent: the kernel resolves `/proc/self/fd/<fd>` to the very directory
 * the descriptor holds (no re-lookup of its path), and `<name>` is one component looked up inside it. Every
 * component is opened with `O_NOFOLLOW | O_DIRECTORY` (a link or a non-directory is refused), the temp file is
 * created with `O_CREAT | O_EXCL | O_NOFOLLOW`, and `rename()` replaces a link named `authorized_keys` instead of
 * writing through it.
 *
 * Everything written is owned by the content directory's owner (the workspace's host identity, see the isolation
 * contract), changed through the open descriptors (`fchown`), never by path.
 *
 * @module
 */
import { constants } from 'node:fs';
import type { Stats } from 'node:fs';
import { lstat, mkdir, open, rename, unlink } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { FailedPreconditionError } from '@workbay/api';

const dirFlags = constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW;

/** `/proc/self/fd/<fd>/<name>`: `name` looked up inside the directory `dir` holds, and nowhere else. */
function at(dir: FileHandle, name: string): string {
  return `/proc/self/fd/${dir.fd}/${name}`;
}

function refused(what: string, error: unknown): FailedPreconditionError {
  const code = (error as NodeJS.ErrnoException).code;
  const why =
    code === 'ELOOP' || code === 'EMLINK'
      ? 'is a symbolic link'
      : code === 'ENOTDIR'
        ? 'is not a directory'
        : `cannot be opened (${code ?? (error as Error).message})`;
  return new FailedPreconditionError(`refusing to write the SSH keys: ${what} ${why}`, { cause: error });
}

async function openDirectory(path: string, what: string): Promise<FileHandle> {
  try {
    return await open(path, dirFlags);
  } catch (error) {
    // With O_DIRECTORY, Linux reports a link as ENOTDIR: say which it is.
    if ((error as NodeJS.ErrnoException).code === 'ENOTDIR') {
      const isLink = await lstat(path).then(
        (s) => s.isSymbolicLink(),
        () => false,
      );
      if (isLink) throw refused(what, Object.assign(new Error('link'), { code: 'ELOOP' }));
    }
    throw refused(what, error);
  }
}

function sameFile(a: Stats, b: Stats): boolean {
  return a.dev === b.dev && a.ino === b.ino;
}

/** Whether ownership changes are ours to make (root), or everything is already the process's own. */
const canChown = (): boolean => typeof process.getuid === 'function' && process.getuid() === 0;

export async function writeAuthorizedKeys(contentDir: string, keys: readonly string[]): Promise<string> {
  // The content directory itself sits in the daemon's working area, which a workspace cannot write; still, it must
  // be a real directory and the one we opened.
  let before: Stats;
  try {
    before = await lstat(contentDir);
  } catch (error) {
    throw refused('the content directory', error);
  }
  if (before.isSymbolicLink()) throw refused('the content directory', Object.assign(new Error(), { code: 'ELOOP' }));
  const root = await openDirectory(contentDir, 'the content directory');
  let ssh: FileHandle | undefined;
  try {
    const rootStat = await root.stat();
    if (!sameFile(before, rootStat)) {
      throw new FailedPreconditionError(
        'refusing to write the SSH keys: the content directory changed while opening it',
      );
    }
    const { uid, gid } = rootStat;
    const chown = canChown();

    try {
      await mkdir(at(root, '.ssh'), { mode: 0o700 });
    } catch (error) {
      // EEXIST also for a symlink or a file named .ssh: the open below refuses those.
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw refused('.ssh', error);
    }
    ssh = await openDirectory(at(root, '.ssh'), '.ssh');
    if (chown) await ssh.chown(uid, gid);
    // mkdir's mode is filtered by the umask and does not apply to an existing directory.
    await ssh.chmod(0o700);

    const target = 'authorized_keys';
    const tmp = `${target}.tmp-${process.pid}-${randomBytes(6).toString('hex')}`;
    const content = keys.map((k) => k.trim()).join('\n');
    let file: FileHandle;
    try {
      file = await open(
        at(ssh, tmp),
        constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW,
        0o600,
      );
    } catch (error) {
      throw refused(`.ssh/${target}`, error);
    }
    try {
      if (chown) await file.chown(uid, gid);
      await file.chmod(0o600);
      await file.writeFile(content ? `${content}\n` : '');
      await file.sync();
    } catch (error) {
      await file.close();
      await unlink(at(ssh, tmp)).catch(() => undefined); // deliberate: best-effort cleanup; the write error is thrown
      throw error;
    }
    await file.close();
    try {
      // Replaces whatever is named authorized_keys (a link included) without following it.
      await rename(at(ssh, tmp), at(ssh, target));
    } catch (error) {
      await unlink(at(ssh, tmp)).catch(() => undefined); // deliberate: best-effort cleanup; the rename error is thrown
      throw refused(`.ssh/${target}`, error);
    }
    return `${contentDir}/.ssh/${target}`;
  } finally {
    await ssh?.close();
    await root.close();
  }
}
