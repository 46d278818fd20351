/**
 * The files of one stored object as the filesystem storage backend reads and creates them: the sidecar record
 * and its translation to `ObjectInfo`, and file creation that survives a concurrent prune of its directory.
 * Naming and layout: `fs-layout.ts`.
 */
import type { FileHandle } from 'node:fs/promises';
import { mkdir, open, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { ObjectInfo } from '@workbay/api';
import { metaSuffix } from './fs-layout.js';

export interface Sidecar {
  readonly v: 1;
  readonly name: string;
  readonly size: number;
  readonly lastModified: string;
  /** Absent when the caller verifies the content itself (`UploadOptions.verifiedByCaller`). */
  readonly digest?: string;
  readonly contentType?: string;
  readonly metadata: Record<string, string>;
  /** Upload id of the data file (`<segment>%z<data>`). */
  readonly data: string;
}

export function isNotFound(error: unknown): boolean {
  const code = (error as NodeJS.ErrnoException | undefined)?.code;
  return code === 'ENOENT' || code === 'ENOTDIR';
}

/** The sidecar of the object whose files in `dir` start with `base`; undefined if it has none. */
export async function readSidecar(dir: string, base: string): Promise<Sidecar | undefined> {
  try {
    return JSON.parse(await readFile(join(dir, `${base}${metaSuffix}`), 'utf8')) as Sidecar;
  } catch (error) {
    if (isNotFound(error)) return undefined;
    throw error;
  }
}

/** Creates a new file; a concurrent delete may prune the (empty) directory between mkdir and open. */
export async function createInDirectory(dir: string, path: string): Promise<FileHandle> {
  for (let attempt = 0; ; attempt++) {
    // Only the daemon reads storage: no other user of the node (a workspace's uid) may read another owner's objects.
    await mkdir(dir, { recursive: true, mode: 0o700 });
    try {
      return await open(path, 'wx+', 0o600);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT' || attempt >= 3) throw error;
    }
  }
}

export function toInfo(bucket: string, sidecar: Sidecar): ObjectInfo {
  return {
    bucket,
    name: sidecar.name,
    size: sidecar.size,
    lastModified: new Date(sidecar.lastModified),
    ...(sidecar.digest !== undefined ? { digest: sidecar.digest } : {}),
    ...(sidecar.contentType !== undefined ? { contentType: sidecar.contentType } : {}),
    metadata: { ...sidecar.metadata },
  };
}
