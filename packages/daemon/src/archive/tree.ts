import type { BigIntStats } from 'node:fs';
import {
  closeSync,
  constants,
  fstatSync,
  lstatSync,
  opendirSync,
  openSync,
  readdirSync,
  readlinkSync,
  realpathSync,
} from 'node:fs';
import { FailedPreconditionError } from '../errors.js';
import { quote } from '../util/bounds.js';
import { openedAt, pinnedDirectory } from '../util/pinned-path.js';
import { LoopYielder } from '../util/small-files.js';
import type { Xattrs } from './xattr.js';

/** Every kind of entry a tree holds; a backup's entry log numbers them in this order, so it only grows at the end. */
export const entryTypes = [
  'file',
  'directory',
  'symlink',
  'hardlink',
  'fifo',
  'character-device',
  'block-device',
] as const;
export type EntryType = (typeof entryTypes)[number];

/** One entry of a directory tree, as archived: the shared model of tar archives and chunked backups. */
export interface TreeEntry {
  /** Relative to the tree root, `/`-separated, no leading `./`, no trailing slash. */
  readonly path: string;
  readonly type: EntryType;
  /** Permission bits including setuid/setgid/sticky (mode & 0o7777). */
  readonly mode: number;
  readonly uid: number;
  readonly gid: number;
  /** Bytes of content (files only). */
  readonly size: number;
  readonly mtimeMs: number;
  /** Symlink target, or for hardlinks the path (relative to the root) of the first link. */
  readonly linkTarget?: string;
  readonly devMajor?: number;
  readonly devMinor?: number;
  readonly xattrs?: Xattrs;
}

export interface WalkedEntry {
  readonly entry: TreeEntry;
  readonly absolute: string;
  readonly stats: BigIntStats;
}

export interface WalkOptions {
  /** Return true to leave a path (and, for directories, everything below it) out. */
  readonly exclude?: (path: string, isDirectory: boolean) => boolean;
  /** xattrs by relative path, from {@link readTreeXattrs}. */
  readonly xattrs?: ReadonlyMap<string, Xattrs>;
  /** Called for entries that vanished or cannot be archived (sockets). */
  readonly onSkip?: (path: string, reason: string) => void;
}

function deviceNumbers(rdev: bigint): { devMajor: number; devMinor: number } {
  const major = ((rdev >> 8n) & 0xfffn) | ((rdev >> 32n) & ~0xfffn);
  const minor = (rdev & 0xffn) | ((rdev >> 12n) & ~0xffn);
  return { devMajor: Number(major), devMinor: Number(minor) };
}

const surrogate = /[\uD800-\uDFFF]/;

/**
 * Sorts names in UTF-8 byte order. Without surrogate pairs, UTF-16 code unit order (the default sort) is code
 * point order, which UTF-8 byte order equals, so the common case needs no encoding per comparison.
 */
export function sortByBytes(names: string[]): void {
  if (!names.some((name) => surrogate.test(name))) {
    names.sort();
    return;
  }
  const keyed = names.map((name) => ({ name, bytes: Buffer.from(name) }));
  keyed.sort((a, b) => Buffer.compare(a.bytes, b.bytes));
  for (const [i, item] of keyed.entries()) names[i] = item.name;
}

/**
 * How deep a walked tree may nest directories. The walk holds each ancestor open (see below) and recurses: a workspace
 * nesting 60,000 directories made every backup fail on the stack, three attempts and 50 s at each stop (red team,
 * round 5). Deeper content fails its backup or snapshot at once, saying so; nothing is changed.
 */
export const maxTreeDepth = 1024;

/**
 * The longest path, in bytes, an archive holds under the content root. A restore writes each entry at
 * `<workingArea>/<instance id>/<path>` (plus a temporary suffix), so a path that only fit under the node where it was
 * archived made every restore fail ENAMETOOLONG: a file 4,076 bytes deep in a repository passed every check, was
 * backed up at the stop, and the workspace could never start again (red team round 11 K1). 4,095 (PATH_MAX less its
 * NUL) leaves room for a working area of `maxWorkingAreaBytes`, a 128-byte instance id and a suffix.
 */
export const maxArchivedPathBytes = 3584;

/** The longest working area a daemon accepts (see {@link maxArchivedPathBytes}). */
export const maxWorkingAreaBytes = 256;

/**
 * The most entries one directory may hold in an archive. The walk lists and sorts a directory's names before its
 * first entry: 2.5 million hardlinks in one directory (334 MB of a workspace's quota, 83 inodes) held the daemon's
 * event loop 10.8–12.1 s at every backup, every owner's calls waiting, then failed anyway (red team round 11 D1).
 */
export const maxDirectoryEntries = 250_000;

/** Past this size a directory is listed in batches, the caller given turns between them (see {@link walkPause}). */
export const batchedListingBytes = 1024 * 1024;

/** Names listed between two of the caller's turns in a large directory. */
const listingBatch = 4096;

/** Yielded by {@link walkTreeSync} between batches of a large directory's listing: the caller gives the event loop a turn. */
export const walkPause: unique symbol = Symbol('walk pause');

/** A directory with more entries than archives take ({@link maxDirectoryEntries}): refused, not retried. */
export class DirectoryTooLargeError extends FailedPreconditionError {
  constructor(path: string) {
    super(
      `the content has a directory with more than ${maxDirectoryEntries} entries (${path === '' ? 'the root' : quote(path)}); it cannot be archived: split it`,
    );
  }
}

/**
 * Lists a directory's names (as bytes) in batches, yielding {@link walkPause} between them; refuses one past
 * {@link maxDirectoryEntries} as soon as it gets there, without holding the rest.
 */
export function* listInBatches(dir: string, prefix: string): Generator<typeof walkPause, Buffer[]> {
  // @types/node names only text encodings here; Node takes 'buffer' and gives each name as its bytes (UTF-8 or not).
  const handle = opendirSync(dir, { encoding: 'buffer', bufferSize: 1024 } as unknown as Parameters<
    typeof opendirSync
  >[1]);
  const names: Buffer[] = [];
  try {
    for (let entry = handle.readSync(); entry !== null; entry = handle.readSync()) {
      names.push(entry.name as unknown as Buffer);
      if (names.length > maxDirectoryEntries) throw new DirectoryTooLargeError(prefix);
      if (names.length % listingBatch === 0) yield walkPause;
    }
  } finally {
    handle.closeSync();
  }
  return names;
}

/** Whether `path` (relative to the content root) is longer than an archive holds. */
export function isTooLongToArchive(path: string): boolean {
  // A UTF-16 unit is at most three UTF-8 bytes: almost every path is decided without counting.
  return path.length * 3 > maxArchivedPathBytes && Buffer.byteLength(path) > maxArchivedPathBytes;
}

/** Content nested deeper than {@link maxTreeDepth}: not archived, not retried. */
export class TreeTooDeepError extends FailedPreconditionError {
  constructor(path: string) {
    super(`the content nests directories more than ${maxTreeDepth} deep (at ${quote(path)}); it is not archived`);
  }
}

/**
 * A name (or a link's target) that is not valid UTF-8: archives and manifests carry names as UTF-8 text, and Node hands
 * such a name over with its bad bytes replaced, which then names nothing. Red team round 9: `caf\xe9.txt` and a whole
 * directory `proj\xff/` were left out of backups as "vanished", the backup reporting success, and a link to
 * `caf\xe9.txt` came back pointing at `caf\uFFFD.txt`. Refused, not retried: the owner renames it.
 */
export class UnarchivableNameError extends FailedPreconditionError {
  constructor(path: string, what: string) {
    super(`the content has ${what} that is not valid UTF-8 (${quote(path)}); it cannot be archived: rename it`);
  }
}

/**
 * A path longer than an archive holds ({@link maxArchivedPathBytes}), or than the system allows (PATH_MAX) under the
 * walked root: not archived, not retried.
 */
export class PathTooLongError extends FailedPreconditionError {
  constructor(path: string) {
    super(
      `the content has a path longer than ${maxArchivedPathBytes} bytes (at ${quote(path)}); it cannot be archived: shorten it`,
    );
  }
}

/** `raw` as text when it is valid UTF-8 (it comes back as the same bytes), else undefined. */
export function utf8Name(raw: Buffer): string | undefined {
  const text = raw.toString('utf8');
  return Buffer.byteLength(text) === raw.length && Buffer.from(text, 'utf8').equals(raw) ? text : undefined;
}

function isGone(error: unknown): boolean {
  const code = (error as NodeJS.ErrnoException | undefined)?.code;
  return code === 'ENOENT' || code === 'ENOTDIR';
}

/**
 * Walks `root` depth-first in name order (byte order, so archives of the same tree are identical), a directory
 * before its children. Second and later links of a multiply-linked file come out as `hardlink` entries.
 * Entries that disappear while walking (a running workspace) are skipped.
 */
export async function* walkTree(root: string, options: WalkOptions = {}): AsyncGenerator<WalkedEntry> {
  // Synchronous metadata calls (microseconds each on a warm cache) with a turn for the event loop every few
  // milliseconds: an order of magnitude faster than one thread-pool round trip per entry.
  const yielder = new LoopYielder();
  for (const item of walkTreeSync(root, options)) {
    await yielder.maybeYield();
    if (item !== walkPause) yield item;
  }
}

/**
 * {@link walkTree} as a synchronous generator, for a caller that gives the event loop its turns itself (nested
 * synchronous generators cost a fraction of nested asynchronous ones per entry), at the latest at each
 * {@link walkPause}.
 */
export function* walkTreeSync(root: string, options: WalkOptions = {}): Generator<WalkedEntry | typeof walkPause> {
  const seenInodes = new Map<string, string>();
  /** `size`: the directory's size in bytes as listed, which grows with its entries. */
  function* visit(
    dir: string,
    prefix: string,
    depth: number,
    size?: number,
  ): Generator<WalkedEntry | typeof walkPause> {
    if (depth > maxTreeDepth) throw new TreeTooDeepError(prefix);
    // The directory stays open while its entries are walked: they are listed and looked at through it, never
    // through a path a workspace could have redirected meanwhile (see util/pinned-path.ts).
    let fd: number;
    try {
      fd = openSync(dir, constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW);
    } catch (error) {
      const code = (error as NodeJS.ErrnoException | undefined)?.code;
      if (isGone(error) || code === 'ELOOP') {
        options.onSkip?.(prefix, 'vanished or replaced while archived');
        return;
      }
      // The walk opens and checks each directory by its whole path; a workspace can nest deeper than that allows
      // (relative mkdirat). It failed as UNAVAILABLE and was retried three times (red team round 9).
      if (code === 'ENAMETOOLONG') throw new PathTooLongError(prefix);
      throw error;
    }
    try {
      if (!openedAt(fd, dir)) {
        options.onSkip?.(prefix, 'moved while archived');
        return;
      }
      yield* visitOpen(dir, pinnedDirectory(fd, dir), prefix, depth, size ?? fstatSync(fd).size);
    } finally {
      closeSync(fd);
    }
  }
  function* visitOpen(
    dir: string,
    pinned: string,
    prefix: string,
    depth: number,
    size: number,
  ): Generator<WalkedEntry | typeof walkPause> {
    let rawNames: Buffer[];
    try {
      // Most directories are listed in one call; a large one in batches, with turns for the caller between them.
      rawNames =
        size > batchedListingBytes ? yield* listInBatches(pinned, prefix) : readdirSync(pinned, { encoding: 'buffer' });
    } catch (error) {
      if (isGone(error)) return;
      throw error;
    }
    // A filesystem whose directory sizes say nothing of their entries still gets the bound.
    if (rawNames.length > maxDirectoryEntries) throw new DirectoryTooLargeError(prefix);
    const names = rawNames.map((raw) => {
      const name = utf8Name(raw);
      if (name === undefined) {
        throw new UnarchivableNameError(
          `${prefix === '' ? '' : `${prefix}/`}${JSON.stringify(raw.toString('latin1'))}`,
          'a name',
        );
      }
      return name;
    });
    // A large listing gets the caller a turn before and after its sort (250,000 names: about 0.2 s).
    if (names.length > listingBatch) yield walkPause;
    sortByBytes(names);
    if (names.length > listingBatch) yield walkPause;
    for (const name of names) {
      const path = prefix === '' ? name : `${prefix}/${name}`;
      if (isTooLongToArchive(path)) throw new PathTooLongError(path);
      // `dir` is already normal and a listed name holds no slash: path.join's normalization would only cost (a
      // tenth of a backup's main-thread allocation went there).
      const absolute = dir.endsWith('/') ? `${dir}${name}` : `${dir}/${name}`;
      let stats: BigIntStats;
      try {
        stats = lstatSync(`${pinned}/${name}`, { bigint: true });
      } catch (error) {
        if (isGone(error)) {
          options.onSkip?.(path, 'vanished');
          continue;
        }
        throw error;
      }
      const isDirectory = stats.isDirectory();
      if (options.exclude?.(path, isDirectory)) continue;
      const base = {
        path,
        mode: Number(stats.mode & 0o7777n),
        uid: Number(stats.uid),
        gid: Number(stats.gid),
        mtimeMs: Number(stats.mtimeNs / 1_000_000n),
        ...(options.xattrs?.has(path) ? { xattrs: options.xattrs.get(path) as Xattrs } : {}),
      };
      if (isDirectory) {
        yield { entry: { ...base, type: 'directory', size: 0 }, absolute, stats };
        yield* visit(absolute, path, depth + 1, Number(stats.size));
      } else if (stats.isFile()) {
        if (stats.nlink > 1n) {
          const key = `${stats.dev}:${stats.ino}`;
          const first = seenInodes.get(key);
          if (first !== undefined) {
            yield { entry: { ...base, type: 'hardlink', size: 0, linkTarget: first }, absolute, stats };
            continue;
          }
          seenInodes.set(key, path);
        }
        yield { entry: { ...base, type: 'file', size: Number(stats.size) }, absolute, stats };
      } else if (stats.isSymbolicLink()) {
        let target: string;
        try {
          const raw = readlinkSync(`${pinned}/${name}`, { encoding: 'buffer' });
          const text = utf8Name(raw);
          if (text === undefined) throw new UnarchivableNameError(path, 'a link whose target');
          target = text;
        } catch (error) {
          if (isGone(error)) continue;
          // EINVAL: no longer a link (the running workspace swapped it since the lstat). Skipped like a vanished
          // entry, never followed; the next backup sees what it became. It failed the whole backup before.
          if ((error as NodeJS.ErrnoException).code === 'EINVAL') {
            options.onSkip?.(path, 'changed while it was read');
            continue;
          }
          throw error;
        }
        yield { entry: { ...base, type: 'symlink', size: 0, linkTarget: target }, absolute, stats };
      } else if (stats.isFIFO()) {
        yield { entry: { ...base, type: 'fifo', size: 0 }, absolute, stats };
      } else if (stats.isCharacterDevice() || stats.isBlockDevice()) {
        const type = stats.isCharacterDevice() ? 'character-device' : 'block-device';
        yield { entry: { ...base, type, size: 0, ...deviceNumbers(stats.rdev) }, absolute, stats };
      } else {
        options.onSkip?.(path, 'sockets cannot be archived');
      }
    }
  }
  // Canonical, so that an opened descriptor's own path can be compared with the walk's (a symlinked ancestor of
  // the working area is the operator's, and fine).
  yield* visit(realpathSync(root), '', 0);
}
