/**
 * How an object's metadata maps onto S3: the request headers an upload writes (content type, user metadata,
 * the recorded digest, checked to be valid header names and values) and the `ObjectInfo` read back from a stat.
 */
import type { ObjectInfo, UploadOptions } from '@workbay/api';
import { InvalidArgumentError } from '@workbay/api';

/** User-metadata key holding the digest the writer recorded (`x-amz-meta-workbay-digest`). */
export const digestMetadataKey = 'workbay-digest';

/** The prefix of S3 user-metadata headers. */
export const metaPrefix = 'x-amz-meta-';
const standardHeaders = new Set([
  'content-type',
  'cache-control',
  'content-encoding',
  'content-disposition',
  'content-language',
  'x-amz-website-redirect-location',
  'if-none-match',
  'if-match',
  'x-amz-storage-class',
]);
// HTTP header names are tokens, and S3 sends metadata values back as header values.
const metadataKeyPattern = /^[a-z0-9][a-z0-9._-]*$/;
const metadataValuePattern = /^[\x20-\x7e]*$/;

/** The headers of a single PUT or a multipart upload's initiation; throws on metadata S3 could not carry. */
export function writeHeaders(options: UploadOptions): Record<string, string> {
  const headers: Record<string, string> = {
    'Content-Type': options.contentType ?? 'application/octet-stream',
  };
  for (const [rawKey, value] of Object.entries(options.metadata ?? {})) {
    const key = rawKey.toLowerCase();
    if (!metadataKeyPattern.test(key) || key === digestMetadataKey) {
      throw new InvalidArgumentError(`metadata.${rawKey}`, 'metadata keys are letters, digits, ".", "_" and "-"');
    }
    if (!metadataValuePattern.test(value)) {
      throw new InvalidArgumentError(`metadata.${rawKey}`, 'metadata values must be printable ASCII');
    }
    headers[`${metaPrefix}${key}`] = value;
  }
  if (options.digest !== undefined) {
    if (!metadataValuePattern.test(options.digest)) {
      throw new InvalidArgumentError('digest', 'must be printable ASCII, e.g. sha256:<hex>');
    }
    headers[`${metaPrefix}${digestMetadataKey}`] = options.digest;
  }
  return headers;
}

/**
 * An object's `ObjectInfo` from its stat: the content type, the recorded digest, and the user metadata (standard
 * and other `x-amz-` headers left out).
 */
export function toInfo(
  bucket: string,
  name: string,
  stat: { size: number; lastModified: Date; metaData: Record<string, unknown> },
): ObjectInfo {
  const metadata: Record<string, string> = {};
  let digest: string | undefined;
  let contentType: string | undefined;
  for (const [rawKey, value] of Object.entries(stat.metaData ?? {})) {
    const key = rawKey.toLowerCase();
    const text = Array.isArray(value) ? value.join(',') : String(value);
    if (key === 'content-type') contentType = text;
    else if (key === digestMetadataKey) digest = text;
    else if (!standardHeaders.has(key) && !key.startsWith('x-amz-')) metadata[key] = text;
  }
  return { bucket, name, size: stat.size, lastModified: stat.lastModified, digest, contentType, metadata };
}
