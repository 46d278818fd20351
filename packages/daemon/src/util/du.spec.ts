// The usage walk (snapshot admission, the watch quota) on real directories: hardlinks are entries of their own, a
// directory a running workspace exchanges for a link to the host is never walked, and a bound on entries holds.
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { linkSync, mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { isWorkbayError } from '@workbay/api';
import { tempDir } from '../test-support/tree.js';
import { treeUsage } from './du.js';

describe('treeUsage', () => {
  const dirs: Array<Awaited<ReturnType<typeof tempDir>>> = [];
  const flippers: ChildProcess[] = [];
  afterAll(async () => {
    for (const flipper of flippers) flipper.kill('SIGKILL');
    for (const dir of dirs) await dir.cleanup();
  });
  const scratch = async (): Promise<string> => {
    const dir = await tempDir();
    dirs.push(dir);
    return dir.path;
  };

  it('counts every name as an entry, a hardlink too, and its bytes once', async () => {
    const root = await scratch();
    writeFileSync(join(root, 'data'), Buffer.alloc(10_000, 1));
    for (let i = 0; i < 50; i++) linkSync(join(root, 'data'), join(root, `link${i}`));
    const usage = await treeUsage(root, { apparent: true });
    expect(usage).toEqual({ bytes: 10_000, entries: 51 });
  });

  it('refuses a directory with more names than allowed, at that count', async () => {
    const root = await scratch();
    mkdirSync(join(root, 'many'));
    for (let i = 0; i < 30; i++) writeFileSync(join(root, 'many', `f${i}`), '');
    const error = await treeUsage(root, { maxEntriesPerDirectory: 20 }).catch((e: unknown) => e);
    expect(isWorkbayError(error, 'failed-precondition')).toBe(true);
    expect((error as Error).message).toMatch(/'many' has too many entries/);
    expect((await treeUsage(root, { maxEntriesPerDirectory: 30 })).entries).toBe(31);
  });

  it('never walks a host directory a running workspace exchanges with one of its own', async () => {
    // The workspace flips `d` (its directory) and `l` (a link to the host's directory) with renameat2(EXCHANGE).
    const root = await scratch();
    const host = await scratch();
    writeFileSync(join(host, 'secret-sized'), Buffer.alloc(1_000_000, 7));
    const content = join(root, 'content');
    mkdirSync(join(content, 'd'), { recursive: true });
    writeFileSync(join(content, 'd', 'mine'), 'x');
    symlinkSync(host, join(content, 'l'));
    const flipper = spawn(
      'perl',
      [
        '-e',
        // renameat2(AT_FDCWD, a, AT_FDCWD, b, RENAME_EXCHANGE) on x86_64 (316) and arm64 (276).
        'my $nr = $ARGV[2]; while (1) { syscall($nr, -100, $ARGV[0], -100, $ARGV[1], 2) }',
        join(content, 'd'),
        join(content, 'l'),
        process.arch === 'arm64' ? '276' : '316',
      ],
      { stdio: 'ignore' },
    );
    flippers.push(flipper);
    let most = 0;
    for (let i = 0; i < 300; i++) most = Math.max(most, (await treeUsage(content, { apparent: true })).bytes);
    flipper.kill('SIGKILL');
    // Its own directory (seen under either name as it flips), a byte and a link: never the host file's million.
    expect(most).toBeLessThan(100_000);
  });
});
