/**
 * The bytes of a git checkout (the git initializer's metric), without walking the work tree: the sizes git
 * recorded in its index for the files it checked out, plus everything under `.git`. A walk of a 3,000-file
 * checkout costs tens of milliseconds on the path of every start; reading the index costs about one.
 *
 * The index says it exactly only for a plain checkout, so anything else is walked instead (treeBytes): submodules
 * (their files are in their own indexes), sparse or skipped entries, conflicts, an index version this reader does
 * not know (v4 compresses paths), an index whose checksum does not match (SHA-1 or SHA-256), or one larger than
 * {@link maxIndexBytes}. The one inexactness left: git keeps sizes modulo 2^32 (a file of 4 GiB or more counts
 * short), and directories count nothing (a walk counts their own sizes).
 *
 * @module
 */
import { createHash } from 'node:crypto';
import { constants } from 'node:fs';
import { lstat, open } from 'node:fs/promises';
import { join } from 'node:path';
import { treeBytes } from '../util/du.js';

/** A larger index is not read into memory; the tree is walked instead. */
export const maxIndexBytes = 64 * 1024 * 1024;

const S_IFMT = 0o170000;
const S_IFDIR = 0o040000;
/** Extended flag of an index entry: the file is not in the work tree. */
const skipWorktree = 0x4000;

/** Apparent bytes of the checkout at `location` (a working copy git has just written). */
export async function checkoutBytes(location: string): Promise<number> {
  const files = (await hasSubmodules(location)) ? undefined : await indexedBytes(join(location, '.git', 'index'));
  if (files === undefined) return treeBytes(location, { apparent: true });
  return files + (await treeBytes(join(location, '.git'), { apparent: true }));
}

async function hasSubmodules(location: string): Promise<boolean> {
  try {
    await lstat(join(location, '.gitmodules'));
    return true;
  } catch (error) {
    // Only absence means none; anything else (EACCES, ...) is not taken for it.
    const code = (error as NodeJS.ErrnoException).code;
    return !(code === 'ENOENT' || code === 'ENOTDIR');
  }
}

/** The index file, or undefined when it is missing, not a regular file, or too large to read whole. */
async function readIndex(path: string): Promise<Buffer | undefined> {
  let handle;
  try {
    handle = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch {
    // Deliberate: no readable index (an empty repository has none) leaves the walk to count.
    return undefined;
  }
  try {
    const info = await handle.stat();
    if (!info.isFile() || info.size > maxIndexBytes) return undefined;
    return await handle.readFile();
  } finally {
    await handle.close();
  }
}

/** The length of the object ids the index uses: its trailing checksum is SHA-1 or SHA-256 of what precedes it. */
function hashLength(index: Buffer): 20 | 32 | undefined {
  for (const [algorithm, length] of [
    ['sha1', 20],
    ['sha256', 32],
  ] as const) {
    if (index.length < 12 + length) continue;
    const body = index.subarray(0, index.length - length);
    if (
      createHash(algorithm)
        .update(body)
        .digest()
        .equals(index.subarray(index.length - length))
    )
      return length;
  }
  return undefined;
}

/**
 * Sum of the sizes of the index's entries that are in the work tree, or undefined whenever the index does not
 * describe a plain checkout exactly (see the module comment).
 */
export async function indexedBytes(path: string): Promise<number | undefined> {
  const index = await readIndex(path);
  if (!index || index.length < 12 || index.toString('latin1', 0, 4) !== 'DIRC') return undefined;
  const version = index.readUInt32BE(4);
  if (version !== 2 && version !== 3) return undefined;
  const idLength = hashLength(index);
  if (idLength === undefined) return undefined;
  const end = index.length - idLength;
  // ctime, mtime (8 each), dev, ino, mode, uid, gid, size (4 each), object id, flags (2).
  const flagsAt = 40 + idLength;
  let offset = 12;
  let total = 0;
  for (let remaining = index.readUInt32BE(8); remaining > 0; remaining--) {
    if (offset + flagsAt + 2 > end) return undefined;
    const mode = index.readUInt32BE(offset + 24);
    const size = index.readUInt32BE(offset + 36);
    const flags = index.readUInt16BE(offset + flagsAt);
    let nameAt = offset + flagsAt + 2;
    if (flags & 0x4000) {
      // Extended flags (version 3): a skipped or intent-to-add entry is not a file git wrote.
      if (version < 3 || nameAt + 2 > end) return undefined;
      if (index.readUInt16BE(nameAt) & skipWorktree) return undefined;
      nameAt += 2;
    }
    // Stage other than 0: a conflict, not a checkout. A directory entry: a sparse index.
    if ((flags >> 12) & 3 || (mode & S_IFMT) === S_IFDIR) return undefined;
    let nameLength = flags & 0xfff;
    if (nameLength === 0xfff) {
      const nul = index.indexOf(0, nameAt);
      if (nul < 0 || nul >= end) return undefined;
      nameLength = nul - nameAt;
    }
    // The entry is padded with 1 to 8 NULs to a multiple of 8 bytes.
    const next = offset + ((nameAt - offset + nameLength + 8) & ~7);
    if (next > end || index[nameAt + nameLength] !== 0) return undefined;
    total += size;
    offset = next;
  }
  return total;
}
