// Names the walk (backups, snapshots) cannot carry are refused loudly, never left out (red team, round 9); the
// git initializer's check of a checkout (archivable.ts) refuses the same, with the same errors.
import { execFileSync } from 'node:child_process';
import { mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isWorkbayError } from '@workbay/api';
import { assertArchivable } from './archivable.js';
import { walkPause, walkTreeSync } from './tree.js';

/** `dir/<bytes>` as a path Buffer (names that are not UTF-8 cannot be written as strings). */
const bytePath = (dir: string, ...parts: Array<string | number[]>): Buffer =>
  Buffer.concat([
    Buffer.from(`${dir}/`),
    ...parts.map((part) => (typeof part === 'string' ? Buffer.from(part) : Buffer.from(part))),
  ]);

function walkError(root: string): unknown {
  try {
    for (const item of walkTreeSync(root)) void item;
  } catch (error) {
    return error;
  }
  return undefined;
}

/** The error of the archive walk and of the checkout check, which must be the same. */
async function errors(root: string): Promise<unknown[]> {
  return [
    walkError(root),
    await assertArchivable(root).then(
      () => undefined,
      (error: unknown) => error,
    ),
  ];
}

describe('names the walk cannot carry', () => {
  let base: string;
  beforeAll(async () => {
    base = await mkdtemp(join(tmpdir(), 'workbay-tree-names-'));
  });
  afterAll(() => {
    // GNU rm walks by descriptors: Node's rm fails on paths over PATH_MAX.
    execFileSync('rm', ['-rf', '--', base]);
  });

  it('walks names that are UTF-8, ASCII or not', async () => {
    const root = join(base, 'fine');
    mkdirSync(join(root, 'café', 'ünïcødé'), { recursive: true });
    writeFileSync(join(root, 'café', 'ünïcødé', '日本.txt'), 'x');
    symlinkSync('café/ünïcødé/日本.txt', join(root, 'link'));
    await assertArchivable(root);
    const entries = [...walkTreeSync(root)].flatMap((item) =>
      item === walkPause ? [] : [[item.entry.path, item.entry.linkTarget]],
    );
    expect(entries).toEqual([
      ['café', undefined],
      ['café/ünïcødé', undefined],
      ['café/ünïcødé/日本.txt', undefined],
      ['link', 'café/ünïcødé/日本.txt'],
    ]);
  });

  it('refuses a file or a directory whose name is not UTF-8 with FAILED_PRECONDITION, instead of leaving it out', async () => {
    for (const [kind, make] of [
      ['file', (root: string) => writeFileSync(bytePath(root, 'caf', [0xe9], '.txt'), 'x')],
      ['directory', (root: string) => mkdirSync(bytePath(root, 'proj', [0xff]))],
    ] as const) {
      const root = join(base, kind);
      mkdirSync(root);
      writeFileSync(join(root, 'normal.txt'), 'x');
      make(root);
      for (const error of await errors(root)) {
        expect(isWorkbayError(error, 'failed-precondition'), String(error)).toBe(true);
        expect((error as Error).message).toMatch(/a name that is not valid UTF-8 .*rename it/);
      }
    }
  });

  it('refuses a link whose target is not UTF-8 (it came back pointing elsewhere)', async () => {
    const root = join(base, 'link-target');
    mkdirSync(root);
    symlinkSync(bytePath('.', 'caf', [0xe9], '.txt'), join(root, 'link-latin1'));
    for (const error of await errors(root)) {
      expect(isWorkbayError(error, 'failed-precondition'), String(error)).toBe(true);
      expect((error as Error).message).toMatch(/a link whose target that is not valid UTF-8 \('link-latin1'\)/);
    }
  });

  it('refuses a path longer than the system allows with FAILED_PRECONDITION (it was UNAVAILABLE and retried)', async () => {
    const root = join(base, 'long');
    mkdirSync(root);
    // 20 levels of 250-byte names (5 KB), made by relative steps as a workspace can.
    const name = 'n'.repeat(250);
    execFileSync('perl', [
      '-e',
      'my ($root, $name) = @ARGV; chdir $root or die; for (1 .. 20) { mkdir $name or die; chdir $name or die } open my $f, ">", "f" or die',
      root,
      name,
    ]);
    for (const error of await errors(root)) {
      expect(isWorkbayError(error, 'failed-precondition'), String(error)).toBe(true);
      expect((error as Error).message).toMatch(/a path longer than 3584 bytes .*it cannot be archived/);
    }
  });

  it('refuses a file whose path is past what a restore on any node can write, even where this node could read it', async () => {
    // Round 11 K1: 14 directories of 250 bytes and a 220-byte file (3,734 bytes), every directory below PATH_MAX
    // here. It was backed up, and every restore failed ENAMETOOLONG under a longer working area.
    const name = 'e'.repeat(250);
    const make = (root: string, file: string): void => {
      mkdirSync(root);
      execFileSync('perl', [
        '-e',
        'my ($root, $name, $file) = @ARGV; chdir $root or die; for (1 .. 14) { mkdir $name or die; chdir $name or die } open my $f, ">", $file or die',
        root,
        name,
        file,
      ]);
    };
    const long = join(base, 'long-file');
    make(long, 'g'.repeat(220));
    for (const error of await errors(long)) {
      expect(isWorkbayError(error, 'failed-precondition'), String(error)).toBe(true);
      expect((error as Error).message).toMatch(
        /a path longer than 3584 bytes \(at 'e{64}\.\.\.' \(3734 characters\)\)/,
      );
    }
    // Exactly at the limit: 14 x 251 bytes of directories and a 70-byte name.
    const fits = join(base, 'fits');
    make(fits, 'g'.repeat(3584 - 14 * 251));
    expect(await errors(fits)).toEqual([undefined, undefined]);
  });

  it('refuses a checkout whose backup manifest would pass its bound, counted high, before any backup', async () => {
    // Round 11 R1 at a smaller scale: 300 empty files with 200-byte names; at most 100 KB of manifest.
    const root = join(base, 'manifest');
    mkdirSync(root);
    for (let i = 0; i < 300; i++) writeFileSync(join(root, `${String(i).padStart(3, '0')}${'m'.repeat(197)}`), '');
    const limits = { maxEntries: 4_000_000, maxDecompressedBytes: 100_000 };
    const error = await assertArchivable(root, undefined, limits).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(isWorkbayError(error, 'failed-precondition'), String(error)).toBe(true);
    expect((error as Error).message).toMatch(/too many entries or paths too long for a backup to list \(\d+ entries/);
    // The same tree within the restore's own bounds passes, and so does one within a small entry bound.
    await assertArchivable(root);
    await expect(assertArchivable(root, undefined, { maxEntries: 299, maxDecompressedBytes: 1e9 })).rejects.toThrow(
      /300 entries/,
    );
  });
});
