/**
 * The commit of a chunked backup (step 4 in chunked.ts): every new pack is verified before the manifest is
 * replaced, and only then are packs that the new manifest no longer references deleted. A crash at any point
 * leaves the previous manifest and all of its packs intact (invariant 3).
 */
import { Readable } from 'node:stream';
import { DataCorruptionError } from '../errors.js';
import { mapLimit } from '../util/concurrency.js';
import type { BackupTarget } from './backup-target.js';
import { manifestName } from './backup-target.js';
import type { PackRef, PackWriter } from './pack-writer.js';
import type { BlobTable } from './blob-table.js';
import { packName } from './pack-writer.js';
import type { BackupManifest } from './manifest.js';
import type { ManifestEntry } from './manifest.js';
import { encodeManifestStream, manifestContentType } from './manifest.js';

/** What the manifest holds besides its packs and blobs tables (the commit builds those from the blob refs). */
interface ManifestContents extends Pick<BackupManifest, 'workspaceId' | 'compression' | 'totals'> {
  /** Produced while the manifest is encoded (in walk order), so the tree is never held as objects. */
  readonly entries: Iterable<ManifestEntry>;
}

export interface CommitInput extends ManifestContents {
  readonly target: BackupTarget;
  /** The finished pack writer: its packs are verified, and deleted when the manifest does not reference them. */
  readonly writer: PackWriter;
  readonly blobs: BlobTable;
  /** The packs in storage before the backup (id to size): garbage among them is deleted after the commit. */
  readonly stored: ReadonlyMap<string, number>;
  /** Runs once the manifest is made, before it replaces the stored one: throwing commits nothing. */
  readonly beforeCommit?: () => Promise<void>;
  /** Metadata stored with the manifest, beside its format. */
  readonly metadata?: Readonly<Record<string, string>>;
}

export interface CommitResult {
  /** The committed manifest's object name. */
  readonly manifestName: string;
  readonly manifestBytes: number;
  readonly deletedPacks: number;
}

/** Verifies the new packs, replaces the manifest, then deletes the packs it no longer references. */
export async function commitBackup(input: CommitInput): Promise<CommitResult> {
  const { target, workspaceId, compression, writer, blobs, entries, totals, stored } = input;
  // Verify every new pack before the commit (a few at once: each is a round trip to the storage), while the
  // manifest is made.
  const verified = mapLimit(writer.written, 8, async (pack) => {
    const info = await target.storage.stat(target.bucket, packName(target, pack.id as string));
    if (!info || info.size !== pack.size) {
      throw new DataCorruptionError(
        `pack ${pack.id as string}`,
        `${pack.size ?? 0} bytes`,
        info ? `${info.size} bytes` : 'missing',
      );
    }
  });

  const packIndex = new Map<PackRef, number>();
  const packs: Array<{ id: string; size: number; rawSize: number }> = [];
  for (let index = 0; index < blobs.length; index++) {
    const pack = blobs.packOf(index);
    if (packIndex.has(pack)) continue;
    packIndex.set(pack, packs.length);
    packs.push({ id: pack.id as string, size: pack.size as number, rawSize: pack.rawSize as number });
  }
  // The blob table is written as it is encoded, like the entries: a tuple per blob is garbage at once.
  function* manifestBlobs(): Generator<[string, number, number, number]> {
    for (const blob of blobs) yield [blob.hash, packIndex.get(blob.pack) as number, blob.offset, blob.length];
  }
  // Awaited once the manifest is made; a failure there first must not leave this unhandled.
  verified.catch(() => undefined);
  const encoded = await encodeManifestStream({
    format: 'workbay-backup-manifest',
    version: 1,
    workspaceId,
    createdAt: new Date().toISOString(),
    compression,
    packs,
    blobs: manifestBlobs(),
    entries,
    totals,
  });
  await verified;
  if (input.beforeCommit) {
    try {
      await input.beforeCommit();
    } catch (error) {
      // Nothing was replaced: this backup's new packs are nobody's (each delete that fails is the next commit's).
      await writer.discard(stored);
      throw error;
    }
  }
  const name = manifestName(target);
  await target.storage.upload(target.bucket, name, Readable.from([encoded]), {
    contentType: manifestContentType,
    size: encoded.length,
    metadata: { ...input.metadata, 'workbay-backup-format': 'chunked-v1' },
  });

  // Garbage: stored packs the committed manifest does not reference.
  const live = new Set(packs.map((p) => p.id));
  let deletedPacks = 0;
  const candidates = new Set([...stored.keys(), ...writer.written.map((p) => p.id as string)]);
  for (const id of candidates) {
    if (live.has(id)) continue;
    deletedPacks += await target.storage.delete(target.bucket, { name: packName(target, id) });
  }

  return { manifestName: name, manifestBytes: encoded.length, deletedPacks };
}
