/**
 * Whether content can be archived at all: a tree nested past `maxTreeDepth`, a path past `maxArchivedPathBytes`
 * (restorable on any node, round 11 K1), or a name (or a link's target) that is not UTF-8 fails every backup and
 * snapshot of the workspace, and with them its stop (red team round 9, K2 and U1). Content a repository brings is
 * checked once it is checked out, so that such a workspace fails to start, saying why, instead of running work that
 * can never be saved.
 *
 * The rules are the archive walk's (`tree.ts`), with its errors; the check reads only directory listings (their
 * entry types, no stat per entry) and the targets of links: walked like a backup, a checkout of 3,000 files took
 * 50–100 ms, a third of what the git initializer adds to `git clone`. It runs on content nothing runs in yet (the
 * checkout), so it reads by path.
 */
import type { Dirent } from 'node:fs';
import { opendirSync, readdirSync, readlinkSync, statSync } from 'node:fs';
import { defaultManifestLimits } from '../backup/manifest-decode.js';
import type { ManifestLimits } from '../backup/manifest-decode.js';
import { FailedPreconditionError } from '../errors.js';
import { LoopYielder } from '../util/small-files.js';
import {
  DirectoryTooLargeError,
  PathTooLongError,
  TreeTooDeepError,
  UnarchivableNameError,
  batchedListingBytes,
  isTooLongToArchive,
  maxDirectoryEntries,
  maxTreeDepth,
  utf8Name,
} from './tree.js';

/**
 * Walks `root`, throwing the archive walk's FAILED_PRECONDITION for the first entry no archive can hold. The event
 * loop gets a turn every few milliseconds: a repository chooses its file count.
 */
export async function assertArchivable(
  root: string,
  signal?: AbortSignal,
  /** The manifest bounds a backup must meet (the restore's, by default). */
  manifestLimits: Pick<Required<ManifestLimits>, 'maxEntries' | 'maxDecompressedBytes'> = defaultManifestLimits,
): Promise<void> {
  const yielder = new LoopYielder(4);
  const manifest = new ManifestEstimate(manifestLimits);
  const pending: Array<{ dir: string; prefix: string; depth: number }> = [{ dir: root, prefix: '', depth: 0 }];
  for (let next = pending.pop(); next; next = pending.pop()) {
    const { dir, prefix, depth } = next;
    if (depth > maxTreeDepth) throw new TreeTooDeepError(prefix);
    let entries: Dirent<Buffer>[];
    try {
      entries =
        statSync(dir).size > batchedListingBytes
          ? await listLarge(dir, prefix, yielder)
          : readdirSync(dir, { withFileTypes: true, encoding: 'buffer' });
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code === 'ENAMETOOLONG') throw new PathTooLongError(prefix);
      // Deliberate: nothing runs in the checkout, so a directory gone is one git removed; nothing to check there.
      if (code === 'ENOENT' || code === 'ENOTDIR') continue;
      throw error;
    }
    if (entries.length > maxDirectoryEntries) throw new DirectoryTooLargeError(prefix);
    for (const entry of entries) {
      const name = utf8Name(entry.name);
      if (name === undefined) {
        const shown = JSON.stringify(entry.name.toString('latin1'));
        throw new UnarchivableNameError(prefix === '' ? shown : `${prefix}/${shown}`, 'a name');
      }
      const path = prefix === '' ? name : `${prefix}/${name}`;
      if (isTooLongToArchive(path)) throw new PathTooLongError(path);
      let target: string | undefined;
      if (entry.isDirectory()) pending.push({ dir: `${dir}/${name}`, prefix: path, depth: depth + 1 });
      else if (entry.isSymbolicLink()) {
        target = utf8Name(readlinkSync(`${dir}/${name}`, { encoding: 'buffer' }));
        if (target === undefined) throw new UnarchivableNameError(path, 'a link whose target');
      }
      manifest.add(path, target);
    }
    signal?.throwIfAborted();
    await yielder.maybeYield();
  }
}

/** A large directory's entries in batches, the event loop given turns between them (see `listInBatches` in tree.ts). */
async function listLarge(dir: string, prefix: string, yielder: LoopYielder): Promise<Dirent<Buffer>[]> {
  const handle = opendirSync(dir, { encoding: 'buffer', bufferSize: 1024 } as unknown as Parameters<
    typeof opendirSync
  >[1]);
  const entries: Dirent<Buffer>[] = [];
  try {
    for (let entry = handle.readSync(); entry !== null; entry = handle.readSync()) {
      entries.push(entry as unknown as Dirent<Buffer>);
      if (entries.length > maxDirectoryEntries) throw new DirectoryTooLargeError(prefix);
      if (entries.length % 4096 === 0) await yielder.maybeYield();
    }
  } finally {
    handle.closeSync();
  }
  return entries;
}

/**
 * About how large the manifest of a backup of the walked tree will be, against the bounds a restore holds it to
 * (`backup/manifest-decode.ts`): its entries are JSON with each entry's whole path. A repository of 944 KB (258,000
 * empty files, paths of 1.8 KB) checked out fine and made a manifest over 480 MiB: every backup of the workspace
 * failed, its stops kept the content, and three such workspaces locked their owner out (red team round 11 R1).
 * Counted high (an entry's fields and a blob record of its own beside its path), so that what passes fits.
 */
class ManifestEstimate {
  private entries = 0;
  private bytes = 0;

  constructor(private readonly max: Pick<Required<ManifestLimits>, 'maxEntries' | 'maxDecompressedBytes'>) {}

  add(path: string, linkTarget: string | undefined): void {
    this.entries += 1;
    this.bytes += manifestBytesPerEntry + jsonBytes(path) + (linkTarget === undefined ? 0 : jsonBytes(linkTarget));
    const max = this.max;
    if (this.entries > max.maxEntries || this.bytes > max.maxDecompressedBytes) {
      throw new FailedPreconditionError(
        `the content has too many entries or paths too long for a backup to list (${this.entries} entries, about ${this.bytes} bytes of manifest, at most ${max.maxEntries} and ${max.maxDecompressedBytes}); it cannot be archived`,
      );
    }
  }
}

/** An entry's fields in the manifest (type, mode, owner, size, time, blob indices) and a blob record, at most. */
const manifestBytesPerEntry = 320;

/** What `JSON.stringify` makes of a string, in UTF-8 bytes: quotes, and escapes where it needs them. */
function jsonBytes(text: string): number {
  // eslint-disable-next-line no-control-regex
  return /["\\\u0000-\u001f]/.test(text) ? Buffer.byteLength(JSON.stringify(text)) : Buffer.byteLength(text) + 2;
}
