/**
 * What the previous backup offers the next one: files the quick check lets it reuse without reading them, and
 * blobs it can reference by content, as long as their pack still exists.
 */
import type { BlobRef, PackRef } from './pack-writer.js';
import type { BackupManifest, ManifestEntry } from './manifest.js';

export interface PreviousBackup {
  readonly previousBlobs: BackupManifest['blobs'];
  /** The previous manifest's packs, one object each (new blob refs to them are told apart by identity). */
  readonly previousRefs: PackRef[];
  /** Blobs of the previous backup whose pack still exists, by hash. */
  readonly known: Map<string, BlobRef>;
  /** The previous blobs of the file at `path` when its quick key is unchanged and they are all known. */
  readonly reusable: (path: string, quick: string) => readonly number[] | undefined;
}

/** `stored`: the packs in storage (id to size); only those are reused. */
export function indexPreviousBackup(
  previous: BackupManifest | undefined,
  stored: ReadonlyMap<string, number>,
): PreviousBackup {
  // Previous state: files that can be reused as they are, and blobs that can be referenced by content.
  const previousByPath = new Map<string, ManifestEntry>();
  const previousPacks = previous?.packs ?? [];
  const previousBlobs = previous?.blobs ?? [];
  for (const entry of previous?.entries ?? []) if (entry.type === 'file') previousByPath.set(entry.path, entry);
  const packUsable = previousPacks.map((pack) => stored.get(pack.id) === pack.size);
  const previousRefs: PackRef[] = previousPacks.map((pack) => ({
    id: pack.id,
    size: pack.size,
    rawSize: pack.rawSize,
  }));
  const known = new Map<string, BlobRef>();
  for (const [hash, pack, offset, length] of previousBlobs) {
    if (packUsable[pack]) known.set(hash, { hash, pack: previousRefs[pack] as PackRef, offset, length });
  }

  const reusable = (path: string, quick: string): readonly number[] | undefined => {
    const before = previousByPath.get(path);
    return before?.quick !== undefined &&
      before.quick === quick &&
      (before.blobs ?? []).every((b) => known.has((previousBlobs[b] as readonly [string, number, number, number])[0]))
      ? (before.blobs ?? [])
      : undefined;
  };
  return { previousBlobs, previousRefs, known, reusable };
}
