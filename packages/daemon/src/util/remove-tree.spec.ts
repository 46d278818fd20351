// Removing content nested past PATH_MAX (red team, round 9), which Node's rm cannot.
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { removeTree } from './remove-tree.js';

describe('removeTree', () => {
  const made: string[] = [];
  afterAll(() => {
    for (const dir of made) execFileSync('rm', ['-rf', '--', dir]);
  });

  it('removes a tree whose paths are longer than PATH_MAX, where Node’s rm fails', async () => {
    const base = await mkdtemp(join(tmpdir(), 'workbay-remove-tree-'));
    made.push(base);
    const root = join(base, 'content');
    execFileSync('perl', [
      '-e',
      'my ($root, $name) = @ARGV; mkdir $root or die; chdir $root or die; for (1 .. 20) { mkdir $name or die; chdir $name or die } open my $f, ">", "f" or die',
      root,
      'n'.repeat(250),
    ]);
    await expect(rm(root, { recursive: true, force: true })).rejects.toMatchObject({ code: 'ENAMETOOLONG' });
    await removeTree(root);
    expect(existsSync(root)).toBe(false);
    await removeTree(root); // already gone: nothing to do
  });
});
