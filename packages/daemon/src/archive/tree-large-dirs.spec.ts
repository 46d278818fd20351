// One directory of a great many names (red team round 11 D1: 2.5 million hardlinks held the daemon's event loop
// 12 s at every backup): a large directory is listed in batches with turns for the caller between them, and one past
// `maxDirectoryEntries` is refused by the walk and by the checkout check alike, with FAILED_PRECONDITION.
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { isWorkbayError } from '@workbay/api';
import { tempDir } from '../test-support/tree.js';
import { assertArchivable } from './archivable.js';
import { maxDirectoryEntries, walkPause, walkTreeSync } from './tree.js';

/**
 * `count` hardlinks in `root/big` to files `root/data<k>` (hardlinks take no inode and no data, as the attack made
 * them; ext4 allows 65,000 links to one file).
 */
function hardlinks(root: string, count: number): void {
  mkdirSync(join(root, 'big'), { recursive: true });
  for (let k = 0; k * 60_000 <= count; k++) writeFileSync(join(root, `data${k}`), 'x');
  execFileSync('perl', [
    '-e',
    'my ($root, $n) = @ARGV; chdir $root or die; for (1 .. $n) { link "data" . int($_ / 60000), sprintf("big/a-rather-long-link-name-%07d", $_) or die "$!" }',
    root,
    String(count),
  ]);
}

describe('directories of many entries', () => {
  const dirs: Array<Awaited<ReturnType<typeof tempDir>>> = [];
  afterAll(async () => {
    for (const dir of dirs) await dir.cleanup();
  });
  const scratch = async (): Promise<string> => {
    const dir = await tempDir();
    dirs.push(dir);
    return dir.path;
  };

  it('are listed in batches, the caller given a turn between them, and walked whole', async () => {
    const root = await scratch();
    hardlinks(root, 60_000);
    const items = [...walkTreeSync(root)];
    const pauses = items.filter((item) => item === walkPause).length;
    // 60,000 names in batches of 4,096, and a turn before and after their sort.
    expect(pauses).toBeGreaterThanOrEqual(16);
    expect(items.length - pauses).toBe(60_003); // the links, big/, data0 and data1
    await assertArchivable(root);
  });

  it(`past ${maxDirectoryEntries} entries are refused with FAILED_PRECONDITION, by the walk and the checkout check`, async () => {
    const root = await scratch();
    hardlinks(root, maxDirectoryEntries + 1);
    const walk = (() => {
      try {
        for (const item of walkTreeSync(root)) void item;
      } catch (error) {
        return error;
      }
      return undefined;
    })();
    const check = await assertArchivable(root).then(
      () => undefined,
      (error: unknown) => error,
    );
    for (const error of [walk, check]) {
      expect(isWorkbayError(error, 'failed-precondition'), String(error)).toBe(true);
      expect((error as Error).message).toMatch(
        /a directory with more than 250000 entries \('big'\); it cannot be archived/,
      );
    }
  });
});
