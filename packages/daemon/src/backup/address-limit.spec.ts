// A daemon run under an address-space limit (`ulimit -v`, systemd's LimitAS), where V8 cannot map WebAssembly
// memories: the chunker falls back to JavaScript and the fs storage to page-cache writes, and a backup still
// round-trips. Runs the built package in a child process, since the limit applies to a whole process.
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { describeTree, tempDir } from '../test-support/tree.js';

const dist = fileURLToPath(new URL('../../dist/', import.meta.url));

describe('under an address-space limit', () => {
  const dirs: Array<Awaited<ReturnType<typeof tempDir>>> = [];
  afterAll(async () => {
    for (const dir of dirs) await dir.cleanup();
  });

  it('backs up and restores (JavaScript chunker, page-cache writes) instead of failing', async () => {
    const dir = await tempDir();
    dirs.push(dir);
    const tree = join(dir.path, 'tree');
    await mkdir(join(tree, 'a'), { recursive: true });
    for (let i = 0; i < 20; i++) await writeFile(join(tree, 'a', `f${i}`), randomBytes(i * 40_000));
    await writeFile(join(tree, 'big'), randomBytes(12 * 1024 * 1024));
    const script = `
      const { BackupStore } = await import(${JSON.stringify(join(dist, 'backup/backup-store.js'))});
      const { FsRemoteStorage } = await import(${JSON.stringify(join(dist, 'storage/fs-storage.js'))});
      const { mkdir } = await import('node:fs/promises');
      let refused = false;
      try { new WebAssembly.Memory({ initial: 1, maximum: 1 }); } catch { refused = true; }
      const logged = [];
      const logger = { info: (o, m) => logged.push(m), warn: () => {}, error: () => {}, debug: () => {}, child: () => logger };
      const storage = new FsRemoteStorage({ root: ${JSON.stringify(join(dir.path, 'store'))}, logger });
      const store = new BackupStore(storage, { mode: 'per-owner' }, { format: 'chunked' });
      const ref = { owner: 'o', workspaceId: 'w' };
      await store.backup(${JSON.stringify(tree)}, ref);
      await mkdir(${JSON.stringify(join(dir.path, 'restored'))});
      await store.restore(${JSON.stringify(join(dir.path, 'restored'))}, ref);
      console.log(JSON.stringify({ refused, logged }));
      process.exit(0);
    `;
    // A file, not `node -e`: the backup's eval'd worker threads would inherit `--input-type=module`.
    const file = join(dir.path, 'round-trip.mjs');
    await writeFile(file, script);
    const out = execFileSync('bash', ['-c', 'ulimit -v 4000000 && exec node "$1"', 'bash', file], { encoding: 'utf8' });
    const result = JSON.parse(out.trim().split('\n').at(-1) as string) as { refused: boolean; logged: string[] };
    // The limit is real: the child could not map a WebAssembly memory.
    expect(result.refused).toBe(true);
    expect(result.logged.some((m) => /O_DIRECT/.test(m))).toBe(true);
    expect(await describeTree(join(dir.path, 'restored'))).toEqual(await describeTree(tree));
  });
});
