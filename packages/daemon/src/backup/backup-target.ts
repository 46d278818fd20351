/**
 * Where a workspace's chunked backup lives in storage: the committed manifest, read back here, and the packs,
 * listed here (written by pack-writer.ts).
 */
import type { Readable } from 'node:stream';
import type { RemoteStorage } from '@workbay/api';
import { isWorkbayError } from '../errors.js';
import { chunksDirectory } from './pack-writer.js';
import type { BackupManifest } from './manifest.js';
import type { ManifestLimits } from './manifest-decode.js';
import { decodeManifestStream } from './manifest-scan.js';

/** Where a workspace's backup objects live: `<prefix>full.manifest`, `<prefix>chunks/<pack>`. */
export interface BackupTarget {
  readonly storage: RemoteStorage;
  readonly bucket: string;
  /** `[<owner>/]workspaces/<workspaceId>/` */
  readonly prefix: string;
}

export const manifestObjectSuffix = 'full.manifest';

export function manifestName(target: BackupTarget): string {
  return `${target.prefix}${manifestObjectSuffix}`;
}

/**
 * Reads the committed manifest; undefined when there is none. Throws MalformedManifestError or
 * ManifestTooLargeError (both invalid-argument) for a manifest that is not one or is over `limits`.
 */
export async function readManifest(
  target: BackupTarget,
  limits: ManifestLimits = {},
): Promise<BackupManifest | undefined> {
  let stream: Readable;
  try {
    stream = await target.storage.download(target.bucket, manifestName(target));
  } catch (error) {
    if (isWorkbayError(error, 'not-found')) return undefined;
    throw error;
  }
  // Decoded as it downloads, a value at a time: see decodeManifestStream.
  return decodeManifestStream(stream, limits);
}

/** The packs in storage, by id, with their stored sizes. */
export async function listStoredPacks(
  target: BackupTarget,
  signal: AbortSignal | undefined,
): Promise<Map<string, number>> {
  const stored = new Map<string, number>();
  for await (const info of target.storage.list(target.bucket, {
    prefix: `${target.prefix}${chunksDirectory}`,
    ...(signal ? { signal } : {}),
  })) {
    stored.set(info.name.slice(target.prefix.length + chunksDirectory.length), info.size);
  }
  return stored;
}
