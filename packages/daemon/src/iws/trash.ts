import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { chmod, lstat, mkdir, open, opendir, readdir, rename, rmdir, unlink } from 'node:fs/promises';
import { join } from 'node:path';

/** Opens a directory, never through a link: a link at the name fails with ELOOP, anything else with ENOTDIR. */
const DIRECTORY_NOFOLLOW = constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW;

const codeOf = (error: unknown): string | undefined => (error as NodeJS.ErrnoException | undefined)?.code;

/**
 * A root-only directory where the daemon puts what it takes away from a workspace, and removes it without ever
 * following a path the workspace controls.
 *
 * Why: a socket directory is the workspace's (its owner, and mounted inside it at `/.workbay`) while the workspace
 * runs. A recursive removal by path there (`fs.rm(recursive)`: lstat, readdir, recurse by name) is a race the
 * workspace wins: it swaps a directory for a link between two steps (renameat2 RENAME_EXCHANGE) and root deletes
 * what the link points to. So nothing inside a workspace's directory is ever removed by path but a single name with
 * `unlink` (which never follows a link); anything else is `rename`d (which never follows a link either) into this
 * directory, beside the workspace's, in the root-only `.iws`.
 *
 * Emptying works on names of this directory and on directories held open, never on a path through the workspace's
 * entries: a name here is unlinked, or rmdir'ed, or, when it is a directory with entries, opened with O_NOFOLLOW and
 * its entries renamed up here through `/proc/self/fd/<fd>/<entry>` (the kernel resolves the open directory itself,
 * then the one final name without following it). The tree flattens into this directory one level at a time, with
 * one descriptor open at a time, however deep it is. A workspace that still holds a directory of the tree open
 * (its cwd) can only add entries to it, and only entries it could delete itself; the work per call is bounded,
 * and what is left waits for the next call. A moved-out directory's `..` is this 0700 directory, so nobody gets
 * from it anywhere else.
 */
export class Trash {
  constructor(readonly dir: string) {}

  /** Makes the directory (0700, the daemon's); its parent must be the daemon's alone. */
  async ensure(): Promise<void> {
    await mkdir(this.dir, { mode: 0o700 }).catch((error: unknown) => {
      if (codeOf(error) !== 'EEXIST') throw error;
    });
    const info = await lstat(this.dir);
    if (!info.isDirectory() || info.uid !== (process.getuid?.() ?? info.uid)) {
      throw new Error(`${this.dir} is not a directory of the daemon's`);
    }
    await chmod(this.dir, 0o700);
  }

  /**
   * Moves whatever is at `path` (a file, a link, a whole tree: never followed) into the trash. `path`'s parent
   * must be a directory the workspace cannot swap (one in `.iws`). Resolves to false when nothing was there.
   */
  async moveIn(path: string): Promise<boolean> {
    try {
      await rename(path, this.freshName());
      return true;
    } catch (error) {
      if (codeOf(error) === 'ENOENT') return false;
      throw error;
    }
  }

  /**
   * Removes the name `path` in a directory a workspace may own: a non-directory is unlinked, a directory (or
   * anything unlink refuses) is moved into the trash. Never follows a link, never recurses by path.
   */
  async removeName(path: string): Promise<void> {
    try {
      await unlink(path);
    } catch (error) {
      const code = codeOf(error);
      if (code === 'ENOENT') return;
      if (code !== 'EISDIR' && code !== 'EPERM') throw error;
      await this.moveIn(path);
    }
  }

  /**
   * Removes what is in the trash, at most `budget` entries; resolves to true when the trash is empty. Errors of
   * single entries are left for the next call (a workspace may still hold a directory of the tree open).
   */
  async empty(budget = 100_000): Promise<boolean> {
    let work = 0;
    for (;;) {
      const names = await readdir(this.dir);
      if (names.length === 0) return true;
      let progress = false;
      for (const name of names) {
        if (work >= budget) return false;
        work++;
        if (await this.removeEntry(name, budget - work)) progress = true;
      }
      if (!progress) return false;
    }
  }

  /** One name of the trash: removed, or (a directory with entries) its entries moved up here. */
  private async removeEntry(name: string, budget: number): Promise<boolean> {
    const path = join(this.dir, name);
    try {
      await unlink(path);
      return true;
    } catch (error) {
      const code = codeOf(error);
      if (code === 'ENOENT') return true;
      if (code !== 'EISDIR' && code !== 'EPERM') return false;
    }
    try {
      await rmdir(path);
      return true;
    } catch (error) {
      const code = codeOf(error);
      if (code === 'ENOENT') return true;
      if (code !== 'ENOTEMPTY' && code !== 'EEXIST') return false;
    }
    let handle;
    try {
      handle = await open(path, DIRECTORY_NOFOLLOW);
    } catch {
      return false;
    }
    let moved = 0;
    try {
      const via = `/proc/self/fd/${handle.fd}`;
      const entries = await opendir(via);
      try {
        for await (const entry of entries) {
          if (moved >= Math.max(1, budget)) break;
          await rename(join(via, entry.name), this.freshName()).catch((error: unknown) => {
            if (codeOf(error) !== 'ENOENT') throw error;
          });
          moved++;
        }
      } finally {
        // for await closes it when the loop ends normally; a break or a throw may leave it open.
        await entries.close().catch(() => undefined);
      }
    } catch {
      // Left for the next call.
    } finally {
      await handle.close();
    }
    return moved > 0;
  }

  private freshName(): string {
    return join(this.dir, `${Date.now().toString(36)}-${randomBytes(8).toString('hex')}`);
  }
}
