/**
 * Checks a working copy in workspace content before git touches it. Git follows `.git` files (`gitdir: <path>`),
 * symlinks and `commondir` files to repositories anywhere on the node, and would then read that repository's
 * config and write its refs and index. We only run git on a working copy whose `.git` is a real directory inside
 * the content, reached without symlinks, and that borrows nothing from elsewhere (no commondir, no alternates, no
 * symlink anywhere inside `.git`). Git as a workspace's user sees no workspace's content but its own (git-spawn.ts,
 * SpawnPlan.hide), but it does see the rest of the node its uid can read.
 */
import type { Dirent } from 'node:fs';
import { lstat, readdir } from 'node:fs/promises';
import { isAbsolute, join, relative, sep } from 'node:path';
import { UnsafeRepositoryError } from './config-guard.js';

export interface WorkingCopy {
  readonly workTree: string;
  readonly gitDir: string;
}

async function lstatOrUndefined(path: string): Promise<Awaited<ReturnType<typeof lstat>> | undefined> {
  try {
    return await lstat(path);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return undefined;
    throw error;
  }
}

/**
 * Undefined when `dir` has no `.git` at all (not a working copy); throws UnsafeRepositoryError when it has one
 * we will not run git on. `contentRoot`, when given, must contain `dir`, and no component between them may be a
 * symlink (a workspace could replace its checkout directory with a link to a host repository).
 */
export async function inspectWorkingCopy(dir: string, contentRoot?: string): Promise<WorkingCopy | undefined> {
  const components: string[] = [];
  if (contentRoot !== undefined) {
    const rel = relative(contentRoot, dir);
    if (rel === '..' || rel.startsWith(`..${sep}`) || isAbsolute(rel))
      throw new UnsafeRepositoryError(dir, 'it is outside the workspace content');
    components.push(contentRoot);
    let path = contentRoot;
    for (const part of rel.split(sep).filter((p) => p.length > 0)) {
      path = join(path, part);
      components.push(path);
    }
  } else {
    components.push(dir);
  }
  for (const path of components) {
    const info = await lstatOrUndefined(path);
    if (!info) return undefined;
    if (!info.isDirectory()) throw new UnsafeRepositoryError(dir, `${path} is not a directory (a symlink?)`);
  }
  const gitDir = join(dir, '.git');
  const info = await lstatOrUndefined(gitDir);
  if (!info) return undefined;
  if (info.isSymbolicLink()) throw new UnsafeRepositoryError(dir, '.git is a symlink');
  if (info.isFile()) throw new UnsafeRepositoryError(dir, '.git is a file (gitdir: link to another repository)');
  if (!info.isDirectory()) throw new UnsafeRepositoryError(dir, '.git is not a directory');
  // commondir moves objects, refs and config elsewhere; a symlinked config is read from wherever it points.
  if (await lstatOrUndefined(join(gitDir, 'commondir')))
    throw new UnsafeRepositoryError(dir, '.git/commondir points at another repository');
  // Alternates borrow another repository's objects: a workspace's status showed another owner's commits and file
  // names through them, and a prebuild found another owner's commit "present" and checked it out (red team round 7).
  for (const name of ['alternates', 'http-alternates']) {
    if (await lstatOrUndefined(join(gitDir, 'objects', 'info', name)))
      throw new UnsafeRepositoryError(dir, `.git/objects/info/${name} borrows another repository's objects`);
  }
  await refuseSymlinks(gitDir, dir);
  for (const name of ['config', 'config.worktree']) {
    const file = await lstatOrUndefined(join(gitDir, name));
    if (file && !file.isFile()) throw new UnsafeRepositoryError(dir, `.git/${name} is not a regular file`);
    // Before git reads it: a sparse config of 3 GiB (180 KiB of disk) took `git config --list` to 3 GiB and 60 s.
    if (file && file.size > maxGitConfigBytes) {
      throw new UnsafeRepositoryError(dir, `.git/${name} is larger than ${maxGitConfigBytes} bytes`);
    }
  }
  return { workTree: dir, gitDir };
}

/** Entries looked at under `.git`; a repository with more (loose objects) is refused: `git gc` packs them. */
export const maxGitDirEntries = 1_000_000;

/**
 * Refuses a symlink anywhere below `.git`. Git never makes one there itself, and it follows them: object directories
 * (`objects/ab`) and `refs` linked to a repository elsewhere on the node that the workspace's uid can read put that
 * repository's commits and file names in the workspace's status, and a prebuild checked its files out into the
 * workspace (red team round 8, with `objects/info/alternates` already refused). One `readdir` per directory: the
 * entry types come with it.
 */
async function refuseSymlinks(gitDir: string, location: string): Promise<void> {
  let entries = 0;
  const pending = [gitDir];
  for (let dir = pending.pop(); dir !== undefined; dir = pending.pop()) {
    let list: Dirent[];
    try {
      list = await readdir(dir, { withFileTypes: true });
    } catch (error) {
      // Gone meanwhile (git's own temporary directories): nothing there to follow.
      const code = (error as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR') continue;
      throw error;
    }
    for (const entry of list) {
      if (++entries > maxGitDirEntries) {
        throw new UnsafeRepositoryError(location, `.git has more than ${maxGitDirEntries} entries (run git gc)`);
      }
      const path = join(dir, entry.name);
      if (entry.isSymbolicLink()) {
        throw new UnsafeRepositoryError(location, `${relative(location, path)} is a symlink (git would follow it)`);
      }
      if (entry.isDirectory()) pending.push(path);
    }
  }
}

/** The largest repository config the daemon lets git read (and the most of `git config --list` it reads). */
export const maxGitConfigBytes = 1024 * 1024;

const maxModuleDepth = 8;
const maxModules = 64;
/** Directories looked at under `.git/modules`: content must not make the walk arbitrarily long. */
const maxModuleEntries = 10_000;

/**
 * The gitdirs (with a config file) of submodules (`.git/modules/<name>`, nested ones included), whose config child git processes
 * read. Refuses symlinks on the way and more than a bounded number of them.
 */
export async function moduleGitDirs(gitDir: string, location: string): Promise<string[]> {
  const found: string[] = [];
  let entries = 0;
  const walk = async (dir: string, depth: number): Promise<void> => {
    if (depth > maxModuleDepth) throw new UnsafeRepositoryError(location, 'submodules are nested too deeply');
    let names: string[];
    try {
      names = await readdir(dir);
    } catch (error) {
      // No (or not a) directory: no submodule gitdirs there. Anything else fails the check rather than skip a part.
      const code = (error as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR') return;
      throw error;
    }
    for (const name of names) {
      if (++entries > maxModuleEntries) throw new UnsafeRepositoryError(location, '.git/modules is too large');
      const path = join(dir, name);
      const info = await lstatOrUndefined(path);
      if (!info) continue;
      if (info.isSymbolicLink()) throw new UnsafeRepositoryError(location, `${path} is a symlink`);
      if (!info.isDirectory()) continue;
      if (await lstatOrUndefined(join(path, 'HEAD'))) {
        if (found.length >= maxModules) throw new UnsafeRepositoryError(location, 'it has too many submodules');
        const config = await lstatOrUndefined(join(path, 'config'));
        if (config && !config.isFile())
          throw new UnsafeRepositoryError(location, `${join(path, 'config')} is not a regular file`);
        if (config && config.size > maxGitConfigBytes)
          throw new UnsafeRepositoryError(
            location,
            `${join(path, 'config')} is larger than ${maxGitConfigBytes} bytes`,
          );
        if (await lstatOrUndefined(join(path, 'commondir')))
          throw new UnsafeRepositoryError(location, `${path} points at another repository (commondir)`);
        for (const name of ['alternates', 'http-alternates']) {
          if (await lstatOrUndefined(join(path, 'objects', 'info', name)))
            throw new UnsafeRepositoryError(location, `${path} borrows another repository's objects (${name})`);
        }
        // Without a config file there is nothing to neutralise.
        if (config) found.push(path);
        await walk(join(path, 'modules'), depth + 1);
      } else {
        // Submodule names may contain slashes: `.git/modules/a/b` for submodule `a/b`.
        await walk(path, depth + 1);
      }
    }
  };
  await walk(join(gitDir, 'modules'), 0);
  return found;
}
