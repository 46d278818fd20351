/**
 * The ready marker (`.workbay/ready` in the content): written by the daemon as root into content that an
 * archive or a repository shaped, so it goes through the same rules as every other write into content
 * (invariant 10): a `.workbay` that is a symlink or a file is replaced by a real directory, never followed,
 * and the marker is created O_EXCL|O_NOFOLLOW and renamed into place.
 */
import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { lchown, lstat, mkdir, open, rename, rm, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import type { PluginLogger } from '@workbay/api';
import { readyMarkerPath } from '../backup/backup-store.js';
import { fsyncDirectory } from '../util/atomic-file.js';

const markerDir = readyMarkerPath.slice(0, readyMarkerPath.indexOf('/'));
const markerName = readyMarkerPath.slice(markerDir.length + 1);

export async function writeReadyMarker(
  root: string,
  value: unknown,
  owner: { readonly uid: number; readonly gid: number } | undefined,
  logger: PluginLogger,
): Promise<void> {
  const dir = join(root, markerDir);
  let info;
  try {
    info = await lstat(dir);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
  }
  if (info && !info.isDirectory()) {
    logger.warn(
      { root, type: info.isSymbolicLink() ? 'symlink' : 'file' },
      `replacing a '${markerDir}' that is not a directory`,
    );
    await unlink(dir);
    info = undefined;
  }
  if (!info) {
    await mkdir(dir, { mode: 0o755 });
    if (owner) await lchown(dir, owner.uid, owner.gid);
  }
  const temporary = join(dir, `.${markerName}.${randomBytes(6).toString('hex')}.tmp`);
  const handle = await open(
    temporary,
    constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW,
    0o644,
  );
  try {
    await handle.writeFile(`${JSON.stringify(value, null, 2)}\n`);
    if (owner) await handle.chown(owner.uid, owner.gid);
    await handle.sync();
  } catch (error) {
    await handle.close();
    await rm(temporary, { force: true });
    throw error;
  }
  await handle.close();
  // rename replaces a symlink at the marker's path instead of following it.
  await rename(temporary, join(dir, markerName));
  await fsyncDirectory(dir);
}
