// decodeManifest on real gzip data: a manifest the backup wrote decodes unchanged; anything off its shape, or
// over a size limit, is refused with a named invalid-argument error (never a TypeError, which ends up retryable).
import { gzipSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { isWorkbayError } from '../errors.js';
import type { BackupManifest, ManifestEntry } from './manifest.js';
import { decodeManifest, encodeManifest, MalformedManifestError, ManifestTooLargeError } from './manifest.js';
import { encodeManifestStream } from './manifest.js';
import { UnrestorableBackupError } from './manifest-errors.js';

const hash = 'a'.repeat(64);
const file: ManifestEntry = {
  path: 'f',
  type: 'file',
  mode: 0o644,
  uid: 1000,
  gid: 1000,
  size: 5,
  mtimeMs: 1.5,
  blobs: [0],
};
const valid: BackupManifest = {
  format: 'workbay-backup-manifest',
  version: 1,
  workspaceId: 'ws-1',
  createdAt: '2026-01-01T00:00:00.000Z',
  compression: 'none',
  packs: [{ id: 'ab12', size: 10, rawSize: 10 }],
  blobs: [[hash, 0, 5, 5]],
  entries: [
    { path: 'd', type: 'directory', mode: 0o755, uid: 1000, gid: 1000, size: 0, mtimeMs: 0 },
    { ...file, xattrs: { 'user.note': Buffer.from('hi').toString('base64') }, quick: '1:2:3:5' },
    { path: 'l', type: 'symlink', mode: 0o777, uid: 0, gid: 0, size: 0, mtimeMs: -5, linkTarget: 'd' },
  ],
  totals: { files: 1, contentBytes: 5 },
};

/** `valid` with entry 1 (the file) changed. */
const withFile = (change: Record<string, unknown>): unknown => ({
  ...valid,
  entries: [valid.entries[0], { ...file, ...change }, valid.entries[2]],
});

const refusal = async (manifest: unknown): Promise<MalformedManifestError> => {
  const error = await decodeManifest(gzipSync(JSON.stringify(manifest))).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(MalformedManifestError);
  expect(isWorkbayError(error, 'invalid-argument')).toBe(true);
  return error as MalformedManifestError;
};

describe('decodeManifest', () => {
  it('decodes what encodeManifest wrote, unchanged', async () => {
    expect(await decodeManifest(await encodeManifest(valid))).toEqual(valid);
  });

  const malformed: Array<[string, unknown, string]> = [
    ['a string mode (octal to fchmod, decimal to the policy)', withFile({ mode: '24755' }), 'entries[1].mode'],
    ['a mode with bits above 0o7777', withFile({ mode: 0o10644 }), 'entries[1].mode'],
    ['an object mode', withFile({ mode: {} }), 'entries[1].mode'],
    ['a fractional mode', withFile({ mode: 420.5 }), 'entries[1].mode'],
    ['a negative uid', withFile({ uid: -1 }), 'entries[1].uid'],
    ['a string size', withFile({ size: '5' }), 'entries[1].size'],
    ['a size that is not what the blobs add up to', withFile({ size: 6 }), 'entries[1].size'],
    ['a mtime that is not a time', withFile({ mtimeMs: 1e300 }), 'entries[1].mtimeMs'],
    ['a string mtime', withFile({ mtimeMs: 'x' }), 'entries[1].mtimeMs'],
    ['a numeric path', withFile({ path: 5 }), 'entries[1].path'],
    ['a path with NUL', withFile({ path: 'a\0b' }), 'entries[1].path'],
    ['an empty path', withFile({ path: '' }), 'entries[1].path'],
    ['an unknown type', withFile({ type: 'constructor' }), 'entries[1].type'],
    ['blobs as a string', withFile({ blobs: '0' }), 'entries[1].blobs'],
    ['a missing blob', withFile({ blobs: [1] }), 'entries[1].blobs[0]'],
    ['a fractional blob index', withFile({ blobs: [0.5] }), 'entries[1].blobs[0]'],
    ['a numeric xattr value', withFile({ xattrs: { 'user.a': 5 } }), 'entries[1].xattrs["user.a"]'],
    ['an xattr value that is not base64', withFile({ xattrs: { 'user.a': 'a b' } }), 'entries[1].xattrs["user.a"]'],
    [
      'an xattr value over 64 KiB',
      withFile({ xattrs: { 'user.a': 'A'.repeat(90_000) } }),
      'entries[1].xattrs["user.a"]',
    ],
    ['an xattr name with NUL', withFile({ xattrs: { 'user.\0': '' } }), 'entries[1].xattrs'],
    ['xattrs as an array', withFile({ xattrs: ['x'] }), 'entries[1].xattrs'],
    ['a numeric link target', withFile({ linkTarget: 1 }), 'entries[1].linkTarget'],
    ['a null entry', { ...valid, entries: [null] }, 'entries[0]'],
    ['a null pack', { ...valid, packs: [null] }, 'packs[0]'],
    ['a pack id with a slash', { ...valid, packs: [{ id: '../x', size: 1, rawSize: 10 }] }, 'packs[0].id'],
    ['a blob in a missing pack', { ...valid, blobs: [[hash, 1, 0, 5]] }, 'blobs[0][1]'],
    ['a fractional blob offset', { ...valid, blobs: [[hash, 0, 0.5, 5]] }, 'blobs[0]'],
    ['a negative blob length', { ...valid, blobs: [[hash, 0, 0, -1]] }, 'blobs[0]'],
    ['a blob past its pack', { ...valid, blobs: [[hash, 0, 6, 5]] }, 'blobs[0]'],
    ['a blob hash that is not hex', { ...valid, blobs: [['x'.repeat(64), 0, 0, 5]] }, 'blobs[0][0]'],
    ['a blob that is not a tuple', { ...valid, blobs: [{}] }, 'blobs[0]'],
    ['entries that are not an array', { ...valid, entries: {} }, 'manifest'],
    ['an unknown compression', { ...valid, compression: 'lz4' }, 'compression'],
    ['another format', { ...valid, format: 'x' }, 'format'],
  ];
  for (const [what, manifest, field] of malformed) {
    it(`refuses ${what}, naming the field`, async () => {
      const error = await refusal(manifest);
      expect(error.field).toBe(field === 'manifest' ? 'manifest' : `manifest.${field}`);
    });
  }

  it('names the entry by its path as well', async () => {
    const error = await refusal(withFile({ path: 'bin/tool', mode: '24755' }));
    expect(error.message).toBe(
      'manifest.entries[1].mode: malformed backup manifest: entry "bin/tool": mode must be an integer from 0 to 0o7777 (got "24755")',
    );
  });

  it('refuses data that is not gzip, or not JSON', async () => {
    await refusal(null);
    for (const data of [Buffer.from('{}'), gzipSync('{not json')]) {
      await expect(decodeManifest(data)).rejects.toBeInstanceOf(MalformedManifestError);
    }
  });

  it('refuses a manifest over each size limit with ManifestTooLargeError', async () => {
    const data = await encodeManifest(valid);
    const limits = [
      { maxCompressedBytes: data.length - 1 },
      { maxDecompressedBytes: 100 },
      { maxEntries: 2 },
      { maxBlobs: 0 },
      { maxPacks: 0 },
    ];
    for (const limit of limits) {
      const error = await decodeManifest(data, limit).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(error, JSON.stringify(limit)).toBeInstanceOf(ManifestTooLargeError);
      expect(isWorkbayError(error, 'invalid-argument')).toBe(true);
    }
    expect(await decodeManifest(data, { maxEntries: 3, maxBlobs: 1, maxPacks: 1 })).toEqual(valid);
  });

  it('refuses deep nesting by counting objects and arrays, brackets inside strings excepted', async () => {
    const nested = { ...valid, createdAt: '{['.repeat(1000), extra: '['.repeat(100) + ']'.repeat(100) };
    // Strings full of brackets are not containers: this decodes.
    expect(
      await decodeManifest(gzipSync(JSON.stringify(nested)), { maxEntries: 3, maxBlobs: 1, maxPacks: 1 }),
    ).toMatchObject({ createdAt: '{['.repeat(1000) });
    const deep = JSON.stringify(valid).replace('"ws-1"', `${'['.repeat(100)}${']'.repeat(100)}`);
    await expect(decodeManifest(gzipSync(deep), { maxEntries: 3, maxBlobs: 1, maxPacks: 1 })).rejects.toBeInstanceOf(
      ManifestTooLargeError,
    );
  });

  it('refuses a flood of plain values in a key nobody reads, commas inside strings excepted', async () => {
    // Red-team round 2: numbers cost JSON.parse as much as objects; 220 million fit in 418 KiB of gzip.
    const limits = { maxEntries: 3, maxBlobs: 1, maxPacks: 1 };
    const flood = JSON.stringify(valid).replace('"ws-1"', `"ws-1","unused":[${'0,'.repeat(10_000)}0]`);
    const error = await decodeManifest(gzipSync(flood), limits).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(ManifestTooLargeError);
    expect(String(error)).toMatch(/more than \d+ values/);
    const commas = { ...valid, createdAt: ','.repeat(10_000) };
    expect(await decodeManifest(gzipSync(JSON.stringify(commas)), limits)).toMatchObject({
      createdAt: ','.repeat(10_000),
    });
  });
});

describe('encodeManifestStream refuses a manifest a restore would refuse', () => {
  const parts = (entries: number): Parameters<typeof encodeManifestStream>[0] => ({
    ...valid,
    blobs: valid.blobs,
    entries: Array.from({ length: entries }, (_, i) => ({ ...file, path: `f${i}` })),
  });

  it('writes what decodeManifest reads back under the same limits', async () => {
    const encoded = await encodeManifestStream(parts(10), { maxEntries: 10 });
    expect((await decodeManifest(encoded, { maxEntries: 10 })).entries).toHaveLength(10);
  });

  it.each([
    ['entries', { maxEntries: 10 }, /more than 10 entries/],
    ['decompressed bytes', { maxDecompressedBytes: 1024 }, /more than 1024 bytes/],
    ['packs', { maxPacks: 0 }, /more than 0 packs/],
  ])('over its %s: FAILED_PRECONDITION naming the limit, before anything is stored', async (_what, limits, why) => {
    const error = await encodeManifestStream(parts(11), limits).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(UnrestorableBackupError);
    expect(isWorkbayError(error, 'failed-precondition')).toBe(true);
    expect((error as Error).message).toMatch(why);
    expect((error as Error).message).toContain('the content is kept');
  });
});
