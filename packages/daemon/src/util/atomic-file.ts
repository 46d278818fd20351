import { randomBytes } from 'node:crypto';
import { mkdir, open, readFile, rename, rm } from 'node:fs/promises';
import { dirname, basename, join } from 'node:path';

/** fsyncs a directory so that a rename inside it survives a power cut. */
export async function fsyncDirectory(dir: string): Promise<void> {
  const handle = await open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** A file written and synced under a temporary name beside its target, not yet in place. */
export interface StagedFile {
  /** Renames it over the target and syncs the directory: in place, durably, once this resolves. */
  commit(): Promise<void>;
  /** Removes the temporary file: the write is not wanted after all. */
  discard(): Promise<void>;
}

/**
 * The first half of {@link writeFileAtomic}: `data` in a temporary file in the target's directory, fsynced. Its fsync
 * can run beside other work whose durability must come first (the content's ready marker before the session's
 * `ready`); {@link StagedFile.commit} then costs only the rename and the directory's fsync.
 */
export async function stageFile(path: string, data: string | Uint8Array, mode = 0o644): Promise<StagedFile> {
  const dir = dirname(path);
  await mkdir(dir, { recursive: true });
  const tmp = join(dir, `.${basename(path)}.${randomBytes(6).toString('hex')}.tmp`);
  const handle = await open(tmp, 'wx', mode);
  try {
    await handle.writeFile(data);
    await handle.sync();
  } catch (error) {
    await handle.close();
    await rm(tmp, { force: true });
    throw error;
  }
  await handle.close();
  return {
    commit: async () => {
      try {
        await rename(tmp, path);
      } catch (error) {
        await rm(tmp, { force: true });
        throw error;
      }
      await fsyncDirectory(dir);
    },
    discard: () => rm(tmp, { force: true }),
  };
}

/**
 * Writes `data` to `path` atomically: a temporary file in the same directory, fsync, rename over the target,
 * fsync the directory. Readers see the old content or the new one, never a mix.
 */
export async function writeFileAtomic(path: string, data: string | Uint8Array, mode = 0o644): Promise<void> {
  await (await stageFile(path, data, mode)).commit();
}

/** The JSON text {@link writeJsonAtomic} and {@link stageJson} write. */
const jsonText = (value: unknown): string => `${JSON.stringify(value, null, 2)}\n`;

export async function writeJsonAtomic(path: string, value: unknown, mode = 0o644): Promise<void> {
  await writeFileAtomic(path, jsonText(value), mode);
}

export function stageJson(path: string, value: unknown, mode = 0o644): Promise<StagedFile> {
  return stageFile(path, jsonText(value), mode);
}

/** Reads back what {@link writeJsonAtomic} wrote: the parsed JSON at `path`, or undefined when there is no file. */
export async function readJsonFile<T>(path: string): Promise<T | undefined> {
  try {
    return JSON.parse(await readFile(path, 'utf8')) as T;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw error;
  }
}
