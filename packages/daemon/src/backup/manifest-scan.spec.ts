// The streamed manifest (what a backup writes and what the next backup reads back) against the whole-object one
// (what encodeManifest writes and the restore decodes): the same JSON, the same values, the same refusals.
import { Readable } from 'node:stream';
import { gunzipSync, gzipSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import type { TreeEntry } from '../archive/tree.js';
import { EntryLog } from './entry-log.js';
import type { BackupManifest, ManifestEntry } from './manifest.js';
import {
  decodeManifest,
  encodeManifest,
  encodeManifestStream,
  MalformedManifestError,
  ManifestTooLargeError,
  toManifestEntry,
} from './manifest.js';
import { decodeManifestStream, scanManifest } from './manifest-scan.js';
import { indexPreviousBackup } from './previous-backup.js';

const hash = (i: number): string => i.toString(16).padStart(64, '0');
/** Paths that straddle the inflater's 1 MiB chunks, and JSON's own characters inside strings. */
const odd = ['a "quoted" } ] , name', 'back\\slash', 'ünïcødé ✓', 'new\nline', 'a-b', 'a'];

function manifestOf(count: number): BackupManifest {
  const entries: ManifestEntry[] = [{ path: 'd', type: 'directory', mode: 0o755, uid: 1, gid: 1, size: 0, mtimeMs: 0 }];
  for (let i = 0; i < count; i++) {
    entries.push({
      path: `d/${odd[i % odd.length] as string}-${'x'.repeat(i % 300)}-${i}`,
      type: 'file',
      mode: 0o644,
      uid: 1000,
      gid: 1000,
      size: 3,
      mtimeMs: 1.5 + i,
      blobs: [i % 4],
      quick: `${i}:2:3:3`,
      ...(i % 7 === 0 ? { xattrs: { 'user.a"b': Buffer.from('{}[],').toString('base64') } } : {}),
    });
  }
  entries.push({ path: 'l', type: 'symlink', mode: 0o777, uid: 0, gid: 0, size: 0, mtimeMs: -5, linkTarget: '"]}' });
  return {
    format: 'workbay-backup-manifest',
    version: 1,
    workspaceId: 'ws-1',
    createdAt: '2026-01-01T00:00:00.000Z',
    compression: 'none',
    packs: [{ id: 'ab12', size: 20, rawSize: 20 }],
    blobs: [0, 1, 2, 3].map((i) => [hash(i), 0, 3 * i, 3] as const),
    entries,
    totals: { files: count, contentBytes: 3 * count },
  };
}

async function scanned(data: Buffer): Promise<Record<string, unknown[]>> {
  const seen: Record<string, unknown[]> = { field: [], pack: [], blob: [], entry: [] };
  await scanManifest(Readable.from([data]), {
    field: (key, value) => seen['field']?.push([key, value]),
    pack: (value) => seen['pack']?.push(value),
    blob: (value) => seen['blob']?.push(value),
    entry: (value) => seen['entry']?.push(value),
  });
  return seen;
}

const refusal = (data: Buffer, limits = {}): Promise<unknown> =>
  scanManifest(Readable.from([data]), { field() {}, pack() {}, blob() {}, entry() {} }, limits).then(
    () => undefined,
    (error: unknown) => error,
  );

const refusalOf = (stored: Readable): Promise<unknown> =>
  scanManifest(stored, { field() {}, pack() {}, blob() {}, entry() {} }).then(
    () => undefined,
    (error: unknown) => error,
  );

describe('streamed manifests', () => {
  it('encodeManifestStream writes the JSON encodeManifest writes, and the restore decodes it', async () => {
    const manifest = manifestOf(50);
    const streamed = await encodeManifestStream(manifest);
    expect(gunzipSync(streamed).toString()).toBe(gunzipSync(await encodeManifest(manifest)).toString());
    expect(await decodeManifest(streamed)).toEqual(manifest);
  });

  it('scans every value of a manifest larger than one inflated chunk, as a whole decode reads it', async () => {
    const manifest = manifestOf(8000);
    const seen = await scanned(await encodeManifest(manifest));
    expect(seen['pack']).toEqual(manifest.packs);
    expect(seen['blob']).toEqual(manifest.blobs);
    expect(seen['entry']).toEqual(manifest.entries);
    expect(seen['field']).toEqual([
      ['format', manifest.format],
      ['version', 1],
      ['workspaceId', 'ws-1'],
      ['createdAt', manifest.createdAt],
      ['compression', 'none'],
      ['totals', manifest.totals],
    ]);
  });

  it('decodeManifestStream gives the restore what decodeManifest gives, with turns for the event loop throughout', async () => {
    const manifest = manifestOf(150_000);
    const stored = await encodeManifestStream(manifest);
    const whole = await decodeManifest(stored);
    // The longest the event loop waits for a turn while the manifest is decoded, against the whole decode's time.
    let longest = 0;
    let last = performance.now();
    let running = true;
    const tick = (): void => {
      const now = performance.now();
      longest = Math.max(longest, now - last);
      last = now;
      if (running) setImmediate(tick);
    };
    setImmediate(tick);
    const started = performance.now();
    const streamed = await decodeManifestStream(Readable.from([stored]));
    const took = performance.now() - started;
    running = false;
    // Since the last turn: a wait at the very end (the whole parse) ends with the decode, before any further turn.
    longest = Math.max(longest, performance.now() - last);
    expect(streamed).toEqual(whole);
    // A whole JSON.parse is one wait for nearly all of it (red team round 13, L1: 7-14 s for 3.4 million entries);
    // here the longest is one inflated chunk's values (the manifest is about 30 of them).
    expect(longest, `longest wait ${longest.toFixed(0)} ms of ${took.toFixed(0)} ms`).toBeLessThan(took / 4);
  });

  it('decodeManifestStream refuses an element at once, naming it, and tables out of their order', async () => {
    const bad = manifestOf(10);
    const entries = [...bad.entries];
    entries[3] = { ...entries[3]!, mode: -1 };
    const refused = await decodeManifestStream(Readable.from([await encodeManifestStream({ ...bad, entries })])).catch(
      (error: unknown) => error,
    );
    expect(refused).toBeInstanceOf(MalformedManifestError);
    expect((refused as MalformedManifestError).field).toBe('manifest.entries[3].mode');
    // Blobs before the packs they point into: no writer does that.
    const { packs, blobs, ...rest } = manifestOf(1);
    const reordered = gzipSync(Buffer.from(JSON.stringify({ ...rest, blobs, packs })));
    const outOfOrder = await decodeManifestStream(Readable.from([reordered])).catch((error: unknown) => error);
    expect(outOfOrder).toBeInstanceOf(MalformedManifestError);
  });

  it('refuses what is not one JSON object, duplicate keys, tables that are no arrays, and sizes over the limits', async () => {
    const text = JSON.stringify(manifestOf(3));
    for (const bad of [
      `${text}{}`,
      `${text.slice(0, -1)},"packs":[]}`,
      text.replace('"packs":[', '"packs":{"x":[').replace('],"blobs"', ']},"blobs"'),
      text.slice(0, -5),
      `[${text}]`,
    ]) {
      expect(await refusal(gzipSync(bad))).toBeInstanceOf(MalformedManifestError);
    }
    expect(await refusal(Buffer.from('not gzip'))).toBeInstanceOf(MalformedManifestError);
    expect(await refusal(gzipSync(text), { maxEntries: 2 })).toBeInstanceOf(ManifestTooLargeError);
    expect(await refusal(gzipSync(text), { maxDecompressedBytes: 100 })).toBeInstanceOf(ManifestTooLargeError);
    // 220 million numbers in an unused field fit in 418 KiB of gzip (a red-team run): refused as it inflates.
    const bomb = `{"format":"workbay-backup-manifest","x":[${'0,'.repeat(2_000_000)}0]}`;
    expect(await refusal(gzipSync(bomb), { maxEntries: 1000, maxBlobs: 1000, maxPacks: 10 })).toBeInstanceOf(
      ManifestTooLargeError,
    );
  });

  it('a download that fails fails the scan with its own error (the backup is retried, not done in full)', async () => {
    const broken = new Readable({ read() {} });
    const failure = new Error('connection reset');
    const scanning = refusalOf(broken);
    broken.push(gzipSync(JSON.stringify(manifestOf(3))).subarray(0, 20));
    broken.destroy(failure);
    expect(await scanning).toBe(failure);
  });

  it('the previous backup index finds files in walk order, checks their quick key and packs, refuses bad blobs', () => {
    const manifest = manifestOf(0);
    const file = (path: string, blob: number): ManifestEntry => ({
      path,
      type: 'file',
      mode: 0o644,
      uid: 0,
      gid: 0,
      size: 3,
      mtimeMs: 0,
      blobs: [blob],
      quick: `q-${path}`,
    });
    // Walk order: a directory's entries right after it ("a/x" before "a-b", though '-' < '/').
    const entries = [file('a', 0), file('a/x', 1), file('a-b', 2), file('b', 3)];
    const index = indexPreviousBackup({ ...manifest, entries }, new Map([['ab12', 20]]));
    expect(index.reusable('a', 'q-a')?.blobs.map((ref) => ref.hash)).toEqual([hash(0)]);
    expect(index.reusable('a/x', 'changed')).toBeUndefined();
    expect(index.reusable('a-a', 'q-a-a')).toBeUndefined();
    expect(index.reusable('a-b', 'q-a-b')?.blobs.map((ref) => ref.offset)).toEqual([6]);
    expect(index.reusable('b', 'q-b')?.blobs.map((ref) => ref.hash)).toEqual([hash(3)]);
    // A pack that is gone: nothing in it is reused.
    const gone = indexPreviousBackup({ ...manifest, entries }, new Map());
    expect(gone.reusable('a', 'q-a')).toBeUndefined();
    expect(() => indexPreviousBackup({ ...manifest, entries: [file('a', 9)] }, new Map())).toThrow(
      MalformedManifestError,
    );
  });

  it('the entry log gives back the entries it was given, with what was read and the xattrs found', () => {
    const log = new EntryLog();
    const stats = { ino: 7n, ctimeNs: -3n, mtimeNs: 5n, size: 4n } as never;
    const trees: TreeEntry[] = [
      { path: 'dir', type: 'directory', mode: 0o2755, uid: 1, gid: 2, size: 0, mtimeMs: 1 },
      { path: 'dir/ünï', type: 'file', mode: 0o644, uid: 1, gid: 2, size: 4, mtimeMs: 2 },
      { path: 'dir/ünï2', type: 'file', mode: 0o644, uid: 1, gid: 2, size: 4, mtimeMs: 3 },
      { path: 'dir/gone', type: 'file', mode: 0o644, uid: 1, gid: 2, size: 4, mtimeMs: 3 },
      { path: 'dir/z', type: 'symlink', mode: 0o777, uid: 1, gid: 2, size: 0, mtimeMs: 4, linkTarget: '../x' },
      {
        path: 'dev',
        type: 'character-device',
        mode: 0o600,
        uid: 0,
        gid: 0,
        size: 0,
        mtimeMs: 5,
        devMajor: 1,
        devMinor: 3,
      },
    ];
    log.add(trees[0] as TreeEntry);
    log.add(trees[1] as TreeEntry, { stats, blobs: [4, 2] });
    const read = log.add(trees[2] as TreeEntry, { stats });
    log.add(trees[3] as TreeEntry, { stats });
    log.add(trees[4] as TreeEntry);
    log.add(trees[5] as TreeEntry);
    log.addRead(read, 6, false, [1]);
    const xattrs = { 'user.x': Buffer.from('v') };
    const quick = '7:-3:5:4';
    expect([...log.entries((path) => (path === 'dir' ? xattrs : undefined))]).toEqual([
      toManifestEntry(trees[0] as TreeEntry, xattrs),
      toManifestEntry(trees[1] as TreeEntry, undefined, { size: 4, blobs: [4, 2], quick }),
      toManifestEntry(trees[2] as TreeEntry, undefined, { size: 6, blobs: [1] }),
      toManifestEntry(trees[4] as TreeEntry, undefined),
      toManifestEntry(trees[5] as TreeEntry, undefined),
    ]);
    expect(log.paths(new Set([2, 4]))).toEqual(
      new Map([
        [2, 'dir/ünï2'],
        [4, 'dir/z'],
      ]),
    );
  });
});
