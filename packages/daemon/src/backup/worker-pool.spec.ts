import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { tempDir } from '../test-support/tree.js';

const dist = fileURLToPath(new URL('../../dist/', import.meta.url));

describe('backup worker threads', () => {
  const dirs: Array<Awaited<ReturnType<typeof tempDir>>> = [];
  afterAll(async () => {
    for (const dir of dirs) await dir.cleanup();
  });

  it('start in a host process run with --input-type=module (their source is a CommonJS script)', async () => {
    const dir = await tempDir();
    dirs.push(dir);
    const data = randomBytes(3 * 1024 * 1024);
    const file = join(dir.path, 'data');
    await writeFile(file, data);
    // The built package in a child process: the flag applies to a whole process, and workers inherit it.
    const script = `
      const { digestFile } = await import(${JSON.stringify(join(dist, 'backup/worker-pool.js'))});
      const { open } = await import('node:fs/promises');
      const handle = await open(${JSON.stringify(file)});
      console.log(await digestFile(handle.fd));
      await handle.close();
      process.exit(0);
    `;
    const out = execFileSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8' });
    expect(out.trim()).toBe(createHash('sha256').update(data).digest('hex'));
  });
});
