/**
 * Object naming and on-disk layout of the filesystem storage backend.
 *
 * On-disk layout of one object `a/b/c` in bucket `bkt`:
 * - `<root>/bkt/a/b/c%o`: the sidecar, JSON with the name, size, digest, content type, user metadata and the id
 *   of the data file it points to. Replacing this file (rename) is the commit point of an upload.
 * - `<root>/bkt/a/b/c%z<uploadId>`: the bytes. Every upload writes a new data file, so a reader holding the
 *   previous sidecar still finds the previous bytes until the new upload has committed.
 * Path segments are percent-encoded (`encodeURIComponent`, upper-case hex), which never produces `%o`, `%z`,
 * `%t`, `%E` or `%H`, so object files never collide with directories of longer names (`a` and `a/b` can both
 * exist, as in S3). Segments whose encoding is too long for a file name are stored under their SHA-256.
 */
import { createHash, randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { InvalidArgumentError } from '../errors.js';

const bucketPattern = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/;
const maxNameBytes = 1024;
const maxEncodedSegment = 200;
export const metaSuffix = '%o';
export const dataMarker = '%z';
export const tempMarker = '%t';

export function assertBucket(bucket: string): void {
  if (!bucketPattern.test(bucket)) {
    throw new InvalidArgumentError('bucket', `'${bucket}' is not a valid bucket name (3-63 of a-z, 0-9, '.', '-')`);
  }
}

export function assertName(name: string): void {
  if (name.length === 0) throw new InvalidArgumentError('name', 'object name must not be empty');
  if (Buffer.byteLength(name) > maxNameBytes) {
    throw new InvalidArgumentError('name', `object name is longer than ${maxNameBytes} bytes`);
  }
  if (name.includes('\0')) throw new InvalidArgumentError('name', 'object name must not contain NUL bytes');
}

export function encodeSegment(segment: string): string {
  if (segment === '') return '%E';
  if (segment === '.') return '%2E';
  if (segment === '..') return '%2E%2E';
  const encoded = encodeURIComponent(segment);
  if (encoded.length > maxEncodedSegment) return `%H${createHash('sha256').update(segment).digest('hex')}`;
  return encoded;
}

/** Decodes a directory segment; undefined for hashed segments (their names live in the sidecars). */
export function decodeSegment(segment: string): string | undefined {
  if (segment === '%E') return '';
  if (segment.startsWith('%H')) return undefined;
  try {
    return decodeURIComponent(segment);
  } catch {
    // Deliberate: not one of our encodings (a foreign file in the bucket directory); listings skip it.
    return undefined;
  }
}

/**
 * The directory holding an object's files under `root` and the encoded last segment its file names start with.
 * Validates the bucket and the name.
 */
export function objectPaths(root: string, bucket: string, name: string): { dir: string; base: string } {
  assertBucket(bucket);
  assertName(name);
  const segments = name.split('/').map(encodeSegment);
  const base = segments.pop() as string;
  return { dir: join(root, bucket, ...segments), base };
}

export function compareNames(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a), Buffer.from(b));
}

/** A data (`%z`) or temp (`%t`) file's object segment and upload id; undefined for sidecars and other names. */
export function parseLeftover(entry: string): { base: string; marker: string; id: string } | undefined {
  for (const marker of [dataMarker, tempMarker]) {
    const at = entry.lastIndexOf(marker);
    if (at <= 0) continue;
    const id = entry.slice(at + marker.length);
    // Upload ids are base-36 time and hex: anything else is part of an encoded name, not a leftover.
    if (/^[0-9a-z]+$/.test(id)) return { base: entry.slice(0, at), marker, id };
  }
  return undefined;
}

export function newUploadId(): string {
  return `${Date.now().toString(36)}${randomBytes(8).toString('hex')}`;
}
