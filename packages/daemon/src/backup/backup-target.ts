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
import { decodeManifest, manifestLimits } from './manifest-decode.js';
import { ManifestTooLargeError } from './manifest-errors.js';

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
  const max = manifestLimits(limits);
  let stream: Readable;
  try {
    stream = await target.storage.download(target.bucket, manifestName(target));
  } catch (error) {
    if (isWorkbayError(error, 'not-found')) return undefined;
    throw error;
  }
  const chunks: Buffer[] = [];
  let stored = 0;
  try {
    for await (const chunk of stream as AsyncIterable<Buffer>) {
      stored += chunk.length;
      // Stop downloading at the limit rather than buffer whatever storage holds.
      if (stored > max.maxCompressedBytes) {
        throw new ManifestTooLargeError(`more than the limit of ${max.maxCompressedBytes} bytes stored`);
      }
      chunks.push(chunk);
    }
  } finally {
    stream.destroy();
  }
  return decodeManifest(Buffer.concat(chunks, stored), max);
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
